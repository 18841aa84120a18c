/**
 * Issue 6 acceptance against the real thing: libvirtd + QEMU (TCG) with the tiny lab guest
 * and qemu-guest-agent, reached only through a real sshd on 127.0.0.1 (ssh2). One guest is
 * booted for the whole file; the tests run in order because each builds on the VM's history.
 */
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir, readFile, writeFile, rm, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { requireTools } from '../../../support/tools.js';
import { drctl, json } from '../../../support/cli.js';
import { hostConfig, hostYaml, startVmLab, stopVmLab, type VmLab } from '../../../support/vm-lab.js';
import { guestHandle, removeVm, virsh, waitForAgent, type Guest } from '../../../support/libvirt-lab.js';
import { openHostTransport } from '../../../../engine/ssh/index.js';
import { LibvirtHost } from '../../../../engine/hosts/libvirt/libvirt-host.js';
import { backupVm } from '../../../../engine/backup/vm-backup.js';
import { Repository } from '../../../../engine/repo/index.js';
import { openLocalTarget } from '../../../../targets/index.js';
import { systemClock } from '../../../../engine/runtime/clock.js';

const TOOLS = ['virsh', 'libvirtd', 'qemu-system-x86_64', 'qemu-ga', 'busybox', 'cpio', 'sshd', 'qemu-img', 'qemu-nbd'];
const MiB = 1024 * 1024;

type Lab = VmLab & { guest: Guest; store: string; extraVms: string[] };
let lab: Lab | undefined;
let setupError: unknown;

test.before(async () => {
  if (!TOOLS.every((c) => execFileSync('sh', ['-c', `command -v ${c} || true`], { encoding: 'utf8' }).trim())) return;
  try {
    const l = await startVmLab('drctl-libvirt-', 'drctl-lv');
    // The "second node" is the same machine under another host file (pinned via known_hosts).
    await writeFile(join(l.config, 'hosts', 'hv2.yaml'), hostYaml(l.sshd, `knownHosts: ${l.sshd.knownHosts}`));
    const store = join(l.dir, 'store');
    await mkdir(store);
    await chmod(store, 0o755);
    lab = { ...l, store, extraVms: [] };
    console.log(`guest ${l.guest.name} booted in ${l.guest.bootMs} ms`);
  } catch (e) {
    setupError = e;
  }
});

test.after.always(async () => {
  if (!lab) return;
  for (const vm of lab.extraVms) removeVm(vm);
  await stopVmLab(lab);
});

function ready(t: import('ava').ExecutionContext): Lab | undefined {
  if (!requireTools(t, ...TOOLS)) return undefined;
  if (setupError) throw setupError;
  return lab;
}

const cli = (l: Lab, ...args: string[]) => drctl([...args, '--config', l.config, '--repo', l.repo]);

async function host(l: Lab): Promise<LibvirtHost> {
  return new LibvirtHost(await openHostTransport(hostConfig(l.sshd)), 'qemu:///system');
}

async function openRepo(l: Lab): Promise<Repository> {
  return Repository.open(await openLocalTarget(l.repo), { clock: systemClock });
}

/**
 * The disk as a full read gives it: a backup under another name (no parent, so every data
 * extent is read), restored. The guest is idle between the two backups compared. (Reading the
 * live qcow2 with qemu-img -U is not an option: QEMU caches qcow2 metadata.)
 */
async function fullReadDisk(l: Lab, name: string, out: string): Promise<Buffer> {
  const b = await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', name, '--json');
  if (b.code !== 0) throw new Error(b.stderr);
  const p = json<{ id: string; changeTracking: { mode: string } }>(b);
  if (p.changeTracking.mode !== 'full-read') throw new Error(`${name}: expected a full read`);
  return restoredDisk(l, p.id, out);
}

async function restoredDisk(l: Lab, point: string, out: string): Promise<Buffer> {
  const r = await cli(l, 'restore', point, '--to', out, '-q');
  if (r.code !== 0) throw new Error(r.stderr);
  return readFile(out);
}

/**
 * 4 KiB blocks where a and b differ. Each freeze makes the guest's ext4 driver rewrite the
 * superblock with a new write time (s_wtime) and lifetime-writes counter (s_kbytes_written),
 * so two backups taken seconds apart differ exactly there; those two fields are masked.
 */
function diffBlocks(a: Buffer, b: Buffer): number[] {
  for (const buf of [a, b]) {
    buf.fill(0, 1024 + 0x30, 1024 + 0x34);
    buf.fill(0, 1024 + 0x178, 1024 + 0x180);
  }
  const out: number[] = [];
  for (let o = 0; o < Math.max(a.length, b.length); o += 4096) {
    if (!a.subarray(o, o + 4096).equals(b.subarray(o, o + 4096))) out.push(o / 4096);
  }
  return out;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test.serial('hosts test and vms list the guest with its disk and a responsive agent', async (t) => {
  const l = ready(t);
  if (!l) return;
  const ht = await cli(l, 'hosts', 'test', 'hv1', '--json');
  t.is(ht.code, 0, ht.stderr);
  const rep = json<{ libvirt: string; incrementalBackup: boolean; vms: { name: string; agent: string }[] }>(ht);
  t.true(rep.incrementalBackup);
  t.is(rep.vms.find((v) => v.name === l.guest.name)?.agent, 'responsive');
  const vms = json<{ vms: { name: string; state: string; osFamily: string; disks: { dev: string; sizeBytes: number }[] }[] }>(await cli(l, 'vms', '--host', 'hv2', '--json'));
  const g = vms.vms.find((v) => v.name === l.guest.name);
  t.is(g?.state, 'running');
  t.is(g?.osFamily, 'linux');
  t.deepEqual(g?.disks.map((d) => [d.dev, d.sizeBytes]), [['vda', 128 * MiB]]);
});

test.serial('a wrong pinned host key is refused with the fingerprint to pin', async (t) => {
  const l = ready(t);
  if (!l) return;
  const bad = join(l.config, 'hosts', 'bad.yaml');
  await writeFile(bad, `driver: libvirt\nssh:\n  host: 127.0.0.1\n  port: ${l.sshd.port}\n  user: root\n  keyFile: ${l.sshd.keyFile}\n  hostKey: "SHA256:${'A'.repeat(43)}"\n`);
  try {
    const r = await cli(l, 'hosts', 'test', 'bad');
    t.is(r.code, 1);
    t.regex(r.stderr, /host key does not match/);
    t.true(r.stderr.includes(l.sshd.hostKey), r.stderr);
  } finally {
    await rm(bad);
  }
});

test.serial('(a) a file written in the guest comes back byte-identical in a new VM restored on a second node', async (t) => {
  const l = ready(t);
  if (!l) return;
  await l.guest.exec('dd if=/dev/urandom of=/data/precious.bin bs=64k count=16 2>/dev/null && sync');
  const want = await l.guest.exec('cat /data/precious.bin');
  t.is(want.length, 1 * MiB);
  const b = await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', 'lab', '--quiesce', 'required', '--json');
  t.is(b.code, 0, b.stderr);
  const p = json<{ id: string; vm: { quiesced: boolean; xml: string }; changeTracking: { mode: string }; stats: { wireBytes: number; durationMs: number } }>(b);
  t.true(p.vm.quiesced);
  t.regex(p.vm.xml, /<domain/);
  t.is(p.changeTracking.mode, 'full-read');
  t.log(`full backup: ${p.stats.wireBytes} bytes over SSH in ${p.stats.durationMs} ms`);
  const copy = `${l.guest.name}-copy`;
  l.extraVms.push(copy);
  const t0 = Date.now();
  // --storage names a libvirt storage pool here (a dir pool over l.store); a folder works too.
  const pool = `${copy}-pool`;
  virsh('pool-create-as', pool, 'dir', '--target', l.store);
  t.teardown(() => void spawnSync('virsh', ['-c', 'qemu:///system', 'pool-destroy', pool], { stdio: 'ignore' }));
  const r = await cli(l, 'restore', p.id, '--host', 'hv2', '--as', copy, '--storage', pool, '--start', '--json');
  t.is(r.code, 0, r.stderr);
  const rr = json<{ bytesWritten: number; durationMs: number }>(r);
  t.log(`restore as new VM: ${rr.bytesWritten} bytes written in ${rr.durationMs} ms`);
  await waitForAgent(copy);
  t.log(`restored VM answered after ${Date.now() - t0} ms`);
  const g2 = guestHandle(copy, l.store, join(l.store, `${copy}-vda.qcow2`), 0);
  const got = await g2.exec('cat /data/precious.bin');
  t.is(sha(got), sha(want));
  t.not(virsh('domuuid', copy).trim(), virsh('domuuid', l.guest.name).trim());
  const mac = (vm: string): string => /mac address='([^']+)'/.exec(virsh('dumpxml', vm))?.[1] ?? '';
  t.not(mac(copy), mac(l.guest.name));
  // A name clash is a usage error (exit 2) and changes nothing.
  const clash = await cli(l, 'restore', p.id, '--host', 'hv2', '--as', copy, '--storage', l.store);
  t.is(clash.code, 2, clash.stderr);
  t.regex(clash.stderr, /already has a VM named/);
  removeVm(copy);
});

let incrementalPoint = '';
test.serial('(b) 8 MiB written in the guest: the incremental moves a few × 8 MiB over SSH and restores like a full read', async (t) => {
  const l = ready(t);
  if (!l) return;
  await l.guest.exec('dd if=/dev/urandom of=/data/eight.bin bs=1M count=8 2>/dev/null && sync');
  const b = await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', 'lab', '--json');
  t.is(b.code, 0, b.stderr);
  const p = json<{ id: string; changeTracking: { mode: string; reason?: string }; stats: { wireBytes: number; readBytes: number; durationMs: number; logicalBytes: number } }>(b);
  t.is(p.changeTracking.mode, 'changed-extents', p.changeTracking.reason);
  t.log(`incremental: ${p.stats.readBytes} bytes read, ${p.stats.wireBytes} bytes over SSH, ${p.stats.durationMs} ms (disk ${p.stats.logicalBytes})`);
  t.true(p.stats.wireBytes <= 3 * 8 * MiB, `${p.stats.wireBytes} bytes over SSH`);
  t.true(p.stats.wireBytes >= 8 * MiB);
  incrementalPoint = p.id;
  const live = await fullReadDisk(l, 'lab-full-b', join(l.dir, 'full-b.raw'));
  const restored = await restoredDisk(l, p.id, join(l.dir, 'inc.raw'));
  t.is(restored.length, live.length);
  t.deepEqual(diffBlocks(restored, live), [], 'the incremental point restores to the disk content a full read gives');
  await rm(join(l.dir, 'inc.raw'));
});

test.serial('(c) a checkpoint deleted behind drctl\'s back makes the next run a full read with the reason, and it restores correctly', async (t) => {
  const l = ready(t);
  if (!l) return;
  for (const c of virsh('checkpoint-list', l.guest.name, '--name').split('\n').filter(Boolean)) virsh('checkpoint-delete', l.guest.name, c.trim());
  const b = await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', 'lab', '--json');
  t.is(b.code, 0, b.stderr);
  const p = json<{ id: string; changeTracking: { mode: string; reason: string }; stats: { wireBytes: number } }>(b);
  t.is(p.changeTracking.mode, 'full-read');
  t.regex(p.changeTracking.reason, /checkpoint drctl-\S+ of the previous point is missing/);
  const live = await fullReadDisk(l, 'lab-full-c', join(l.dir, 'full-c.raw'));
  const restored = await restoredDisk(l, p.id, join(l.dir, 'c.raw'));
  t.deepEqual(diffBlocks(restored, live), []);
  // and the chain continues from the new checkpoint
  const again = json<{ changeTracking: { mode: string } }>(await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', 'lab', '--json'));
  t.is(again.changeTracking.mode, 'changed-extents');
});

test.serial('(d) a file-level source on the Linux guest yields a VM-level point marked fallback, in points --json and status --json', async (t) => {
  const l = ready(t);
  if (!l) return;
  await mkdir(join(l.config, 'targets'), { recursive: true });
  await mkdir(join(l.config, 'policies'), { recursive: true });
  await writeFile(join(l.config, 'targets', 'vol1.yaml'), `type: local\npath: ${l.repo}\n`);
  await writeFile(join(l.config, 'policies', 'guestfiles.yaml'),
    `name: guestfiles\ntarget: vol1\nsources:\n  - vm: ${l.guest.name}\n    host: hv1\n    name: lab-files\n    files: ["/data"]\nretention:\n  generations: 5\n`);
  const state = join(l.dir, 'state');
  const run = await drctl(['backup', '--policy', 'guestfiles', '--config', l.config, '--state', state]);
  t.is(run.code, 0, run.stdout + run.stderr);
  const points = json<{ name: string; kind: string; fallback?: { reason: string } }[] | { points: { name: string; kind: string; fallback?: { reason: string } }[] }>(await cli(l, 'points', '--json'));
  const list = Array.isArray(points) ? points : points.points;
  const fp = list.find((p) => p.name === 'lab-files');
  t.is(fp?.kind, 'vm');
  t.regex(fp?.fallback?.reason ?? '', /Linux guest/);
  const st = await drctl(['status', '--json', '--config', l.config, '--state', state]);
  const status = json<{ policies: { name: string; sources: { name: string; lastPoint?: { fallback?: string } }[] }[] }>(st);
  const src = status.policies.find((p) => p.name === 'guestfiles')?.sources.find((s) => s.name === 'lab-files');
  t.regex(src?.lastPoint?.fallback ?? '', /Linux guest/);
  await rm(join(l.config, 'policies', 'guestfiles.yaml'));
});

test.serial('(f) quiesce is real: frozen during the point-in-time step, thawed after success and after an injected failure', async (t) => {
  const l = ready(t);
  if (!l) return;
  const h = await host(l);
  const repo = await openRepo(l);
  const status = (): unknown => l.guest.agent({ execute: 'guest-fsfreeze-status' });
  const seen: unknown[] = [];
  try {
    const p = await backupVm(repo, h, {
      name: 'lab-q', vm: l.guest.name, hostName: 'hv1', quiesce: 'required', clock: systemClock, hostname: 'test',
      onFrozen: async () => void seen.push(status()),
    });
    t.true(p.vm?.quiesced);
    t.deepEqual(seen, ['frozen']);
    t.is(status(), 'thawed');
    await t.throwsAsync(backupVm(repo, h, {
      name: 'lab-q', vm: l.guest.name, hostName: 'hv1', quiesce: 'required', clock: systemClock, hostname: 'test',
      onFrozen: async () => {
        seen.push(status());
        throw new Error('injected failure while frozen');
      },
    }), { message: /injected failure/ });
    t.deepEqual(seen, ['frozen', 'frozen']);
    t.is(status(), 'thawed');
    await l.guest.exec('echo still-writable > /data/after-failure && sync');
    // The failed run left no job and no checkpoint of its own behind.
    t.notRegex(virsh('domjobinfo', l.guest.name), /Backup/);
  } finally {
    await h.transport.close();
  }
});

test.serial('(g) the SSH connection dropped mid-backup: the job reconnects and finishes; check passes', async (t) => {
  const l = ready(t);
  if (!l) return;
  await l.guest.exec('dd if=/dev/urandom of=/data/g.bin bs=1M count=16 2>/dev/null && sync');
  const h = await host(l);
  const repo = await openRepo(l);
  let dropped = 0;
  const logs: string[] = [];
  const t0 = Date.now();
  try {
    const p = await backupVm(repo, h, {
      name: 'lab-g', vm: l.guest.name, hostName: 'hv1', clock: systemClock, hostname: 'test', log: (s) => logs.push(s),
      onProgress: () => {
        if (dropped === 0) dropped = l.sshd.dropConnections();
      },
    });
    t.true(dropped > 0, 'an sshd child was killed');
    t.true(logs.some((s) => /retrying/.test(s)), logs.join('\n'));
    t.truthy(p.id);
    t.log(`dropped ${dropped} sshd process(es); finished after ${Date.now() - t0} ms: ${logs.join(' | ')}`);
  } finally {
    await h.transport.close();
  }
  t.true(Date.now() - t0 < 120_000);
  const check = await cli(l, 'check');
  t.is(check.code, 0, check.stdout + check.stderr);
});

test.serial('(e) restore to the original VM with --force brings a corrupted file back, writes less than the disk, leaves a safety point', async (t) => {
  const l = ready(t);
  if (!l) return;
  await l.guest.exec('dd if=/dev/urandom of=/data/config.bin bs=64k count=4 2>/dev/null && sync');
  const good = await l.guest.exec('cat /data/config.bin');
  const b = await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', 'lab', '--json');
  t.is(b.code, 0, b.stderr);
  const point = json<{ id: string }>(b).id;
  await l.guest.exec('dd if=/dev/zero of=/data/config.bin bs=64k count=2 conv=notrunc 2>/dev/null && sync');
  t.not(sha(await l.guest.exec('cat /data/config.bin')), sha(good));
  const refused = await cli(l, 'restore', point, '--host', 'hv1');
  t.is(refused.code, 2, refused.stderr);
  t.regex(refused.stderr, /is running/);
  const r = await cli(l, 'restore', point, '--host', 'hv1', '--force', '--shutdown-timeout', '3', '--json');
  t.is(r.code, 0, r.stderr);
  const rr = json<{ bytesWritten: number; bytesCompared: number; logicalBytes: number; safetyPoint: string; durationMs: number }>(r);
  t.log(`restore to original: ${rr.bytesWritten} bytes written, ${rr.bytesCompared} compared, disk ${rr.logicalBytes}, ${rr.durationMs} ms`);
  t.true(rr.bytesWritten > 0);
  t.true(rr.bytesWritten < rr.logicalBytes / 8, `${rr.bytesWritten} bytes written`);
  await waitForAgent(l.guest.name);
  t.is(sha(await l.guest.exec('cat /data/config.bin')), sha(good));
  const points = json<{ id: string; safetyFor?: string }[] | { points: { id: string; safetyFor?: string }[] }>(await cli(l, 'points', '--json'));
  const list = Array.isArray(points) ? points : points.points;
  t.true(list.some((p) => p.safetyFor === point && p.id === rr.safetyPoint));
  // The next backup does not trust bitmaps that missed the restore's writes.
  const next = json<{ changeTracking: { mode: string; reason?: string } }>(await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', 'lab', '--json'));
  t.is(next.changeTracking.mode, 'full-read');
});

test.serial('no guest agent: quiesce required fails, preferred gives a crash-consistent point with a warning', async (t) => {
  const l = ready(t);
  if (!l) return;
  // Unplug the agent channel from the running VM (live only; the next boot has it again).
  const live = virsh('dumpxml', l.guest.name);
  const chan = /<channel type='unix'>[\s\S]*?<\/channel>/.exec(live)?.[0];
  t.truthy(chan);
  await writeFile(join(l.dir, 'chan.xml'), chan as string);
  virsh('detach-device', l.guest.name, join(l.dir, 'chan.xml'), '--live');
  const req = await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', 'lab-noagent', '--quiesce', 'required');
  t.is(req.code, 1, req.stderr);
  t.regex(req.stderr, /cannot quiesce VM \S+ - the VM has no guest-agent channel/);
  const pref = await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', 'lab-noagent', '--json');
  t.is(pref.code, 0, pref.stderr);
  const p = json<{ vm: { quiesced: boolean }; warnings?: string[] }>(pref);
  t.false(p.vm.quiesced);
  t.true((p.warnings ?? []).some((w) => /not quiesced \(the VM has no guest-agent channel\): crash-consistent point/.test(w)), JSON.stringify(p.warnings));
});
