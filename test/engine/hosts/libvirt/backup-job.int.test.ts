/**
 * A VM backup against the real libvirtd + QEMU (TCG) lab guest over a real sshd, for what
 * happens around the backup job: a drctl that dies while the guest is frozen or mid-read, an
 * orphaned job of a drctl that died, a job drctl did not start, an unknown or paused VM, and a
 * retried job's statistics. One guest for the whole file; tests run in order.
 */
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { writeFile, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { requireTools } from '../../../support/tools.js';
import { drctl, json } from '../../../support/cli.js';
import { hostConfig, startVmLab, stopVmLab, type VmLab } from '../../../support/vm-lab.js';
import { virsh, type Guest } from '../../../support/libvirt-lab.js';
import { openHostTransport } from '../../../../engine/ssh/index.js';
import { LibvirtHost } from '../../../../engine/hosts/libvirt/libvirt-host.js';
import { backupVm } from '../../../../engine/backup/vm-backup.js';
import { Repository } from '../../../../engine/repo/index.js';
import { openLocalTarget } from '../../../../targets/index.js';
import { systemClock } from '../../../../engine/runtime/clock.js';

const TOOLS = ['virsh', 'libvirtd', 'qemu-system-x86_64', 'qemu-ga', 'busybox', 'cpio', 'sshd', 'qemu-img'];
const DIST = fileURLToPath(new URL('../../../../', import.meta.url));
const WORK = '/var/lib/libvirt/qemu';

type Lab = VmLab & { guest: Guest };
let lab: Lab | undefined;
let setupError: unknown;

test.before(async () => {
  if (!TOOLS.every((c) => execFileSync('sh', ['-c', `command -v ${c} || true`], { encoding: 'utf8' }).trim())) return;
  try {
    lab = await startVmLab('drctl-bjob-', 'drctl-bj');
  } catch (e) {
    setupError = e;
  }
});

test.after.always(async () => {
  if (lab) await stopVmLab(lab);
});

function ready(t: import('ava').ExecutionContext): Lab | undefined {
  if (!requireTools(t, ...TOOLS)) return undefined;
  if (setupError) throw setupError;
  return lab;
}

const cli = (l: Lab, ...args: string[]) => drctl([...args, '--config', l.config, '--repo', l.repo]);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const freezeStatus = (l: Lab): unknown => l.guest.agent({ execute: 'guest-fsfreeze-status' });

async function host(l: Lab): Promise<LibvirtHost> {
  return new LibvirtHost(await openHostTransport(hostConfig(l.sshd)), 'qemu:///system');
}

/** Poll `cond` (a state the host reaches on its own, not a timing) for up to `ms`. */
async function eventually(cond: () => boolean | Promise<boolean>, ms = 30_000): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await cond()) return true;
    await sleep(250);
  }
  return cond();
}

const backupJobRunning = (vm: string): boolean => /Operation:\s+Backup/.test(virsh('domjobinfo', vm));
/**
 * drctl's job files on the host (temp folders, NBD sockets, scratch files) that were not there
 * before the test and belong to no running job: other test files run their own jobs meanwhile,
 * and a running job has its lease process (`drctl-lease:TAG` in its command line).
 */
async function jobFiles(): Promise<string[]> {
  return [
    ...(await readdir('/tmp')).filter((f) => f.startsWith('drctl-job.')),
    ...(await readdir(WORK)).filter((f) => /^drctl-.*\.(sock|scratch)$/.test(f)),
  ];
}
async function liveTags(): Promise<Set<string>> {
  const tags = new Set<string>();
  for (const pid of (await readdir('/proc')).filter((f) => /^\d+$/.test(f))) {
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    for (const m of cmd.matchAll(/drctl-lease:([a-z0-9]+)/g)) tags.add(m[1] as string);
  }
  return tags;
}
let before = new Set<string>();
test.beforeEach(async () => {
  before = new Set(await jobFiles());
});
async function leftovers(): Promise<string[]> {
  const live = await liveTags();
  const tagOf = (f: string): string => /^drctl-(?:job\.)?([a-z0-9]+)/.exec(f)?.[1] ?? f;
  return (await jobFiles()).filter((f) => !before.has(f) && !live.has(tagOf(f)));
}
const checkpoints = (vm: string): string[] => virsh('checkpoint-list', vm, '--name').split('\n').map((s) => s.trim()).filter(Boolean);

/**
 * Runs drctl's VM backup in a child process that kills itself with SIGKILL at `when` (kill -9
 * of drctl at a known step: nothing of drctl runs after it, no finally, no thaw).
 */
async function backupKilledAt(l: Lab, when: 'frozen' | 'reading', name: string): Promise<void> {
  const script = join(l.dir, `kill-${when}.mjs`);
  await writeFile(script, `
const { openHostTransport } = await import(${JSON.stringify(join(DIST, 'engine/ssh/index.js'))});
const { LibvirtHost } = await import(${JSON.stringify(join(DIST, 'engine/hosts/libvirt/libvirt-host.js'))});
const { backupVm } = await import(${JSON.stringify(join(DIST, 'engine/backup/vm-backup.js'))});
const { Repository } = await import(${JSON.stringify(join(DIST, 'engine/repo/index.js'))});
const { openLocalTarget } = await import(${JSON.stringify(join(DIST, 'targets/index.js'))});
const { systemClock } = await import(${JSON.stringify(join(DIST, 'engine/runtime/clock.js'))});
const host = new LibvirtHost(await openHostTransport(${JSON.stringify(hostConfig(l.sshd))}), 'qemu:///system');
const repo = await Repository.open(await openLocalTarget(${JSON.stringify(l.repo)}), { clock: systemClock });
const die = () => process.kill(process.pid, 'SIGKILL');
await backupVm(repo, host, { name: ${JSON.stringify(name)}, vm: ${JSON.stringify(l.guest.name)}, hostName: 'hv1', clock: systemClock, hostname: 'test',
  ${when === 'frozen' ? 'quiesce: "required", onFrozen: async () => die()' : 'onProgress: (p) => { if (p.doneBytes > 0) die(); }'} });
console.log('not killed');
`);
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const signal = await new Promise<NodeJS.Signals | null>((r) => child.on('close', (_c, s) => r(s)));
  if (signal !== 'SIGKILL') throw new Error(`the backup was not killed at ${when}: ${out}`);
}

test.serial('drctl killed (kill -9) while the guest is frozen: the guest is thawed, no job or temp files stay, the next backup succeeds', async (t) => {
  const l = ready(t);
  if (!l) return;
  t.teardown(() => void execFileSync('sh', ['-c', `virsh -c qemu:///system domfsthaw ${l.guest.name} >/dev/null 2>&1; virsh -c qemu:///system domjobabort ${l.guest.name} >/dev/null 2>&1; true`]));
  await backupKilledAt(l, 'frozen', 'killed-frozen');
  t.true(await eventually(() => freezeStatus(l) === 'thawed'), 'the guest was left frozen');
  t.true(await eventually(() => !backupJobRunning(l.guest.name)), 'a backup job was left running');
  t.true(await eventually(async () => (await leftovers()).length === 0), (await leftovers()).join(' '));
  await l.guest.exec('echo writable > /data/after-kill && sync');
  const b = await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', 'lab', '--quiesce', 'required', '--json');
  t.is(b.code, 0, b.stderr);
  t.true(json<{ vm: { quiesced: boolean } }>(b).vm.quiesced);
  t.is(freezeStatus(l), 'thawed');
});

test.serial('drctl killed mid-read: its job ends, and the next backup succeeds and leaves only the checkpoints points use', async (t) => {
  const l = ready(t);
  if (!l) return;
  t.teardown(() => void execFileSync('sh', ['-c', `virsh -c qemu:///system domjobabort ${l.guest.name} >/dev/null 2>&1; true`]));
  const base = await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', 'lab-k', '--json');
  t.is(base.code, 0, base.stderr);
  await backupKilledAt(l, 'reading', 'lab-k');
  t.true(await eventually(() => !backupJobRunning(l.guest.name)), 'the killed run\'s backup job is still running');
  const b = await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', 'lab-k', '--json');
  t.is(b.code, 0, b.stderr);
  const p = json<{ vm: { checkpoint: string }; changeTracking: { mode: string; reason?: string } }>(b);
  // The chain survives the killed run: the point before it is still the base.
  t.is(p.changeTracking.mode, 'changed-extents', p.changeTracking.reason);
  const used = json<{ points: { vm?: { checkpoint?: string } }[] } | { vm?: { checkpoint?: string } }[]>(await cli(l, 'points', '--json'));
  const list = Array.isArray(used) ? used : used.points;
  const recorded = new Set(list.map((x) => x.vm?.checkpoint).filter(Boolean));
  t.deepEqual(checkpoints(l.guest.name).filter((c) => !recorded.has(c)), [], 'checkpoints no point uses');
  t.true(checkpoints(l.guest.name).includes(p.vm.checkpoint));
  t.deepEqual(await leftovers(), []);
});

test.serial('an orphaned backup job of a drctl that died is ended and cleaned up, its checkpoint removed, and the backup goes on', async (t) => {
  const l = ready(t);
  if (!l) return;
  const vm = l.guest.name;
  const tag = `orphan${randomBytes(3).toString('hex')}`;
  t.teardown(() => void execFileSync('sh', ['-c', `virsh -c qemu:///system domjobabort ${vm} >/dev/null 2>&1; virsh -c qemu:///system checkpoint-delete ${vm} drctl-${tag} >/dev/null 2>&1; true`]));
  // What a drctl killed with its host session (or an older drctl) leaves: a running pull-mode
  // job with drctl's socket and scratch names, and its checkpoint.
  await writeFile(join(l.dir, 'orphan-backup.xml'), `<domainbackup mode='pull'><server transport='unix' socket='${WORK}/drctl-${tag}.sock'/><disks><disk name='vda' backup='yes' type='file' exportname='vda' exportbitmap='backup-vda'><scratch file='${WORK}/drctl-${tag}-vda.scratch'/></disk></disks></domainbackup>`);
  await writeFile(join(l.dir, 'orphan-cp.xml'), `<domaincheckpoint><name>drctl-${tag}</name><disks><disk name='vda' checkpoint='bitmap'/></disks></domaincheckpoint>`);
  virsh('backup-begin', vm, join(l.dir, 'orphan-backup.xml'), join(l.dir, 'orphan-cp.xml'));
  t.true(backupJobRunning(vm));
  const b = await cli(l, 'backup', '--vm', vm, '--host', 'hv1', '--name', 'lab', '--json');
  t.is(b.code, 0, b.stderr);
  t.true(b.stderr.includes(`ended the backup job drctl-${tag} of a drctl run that is gone`), b.stderr);
  t.true(b.stderr.includes(`deleted checkpoint drctl-${tag}`), b.stderr);
  t.false(checkpoints(vm).includes(`drctl-${tag}`));
  t.false(backupJobRunning(vm));
  t.deepEqual(await leftovers(), []);
  t.is(freezeStatus(l), 'thawed');
});

test.serial('a job drctl did not start fails the backup at once with the domjobabort hint, without freezing the guest', async (t) => {
  const l = ready(t);
  if (!l) return;
  const vm = l.guest.name;
  t.teardown(() => void execFileSync('sh', ['-c', `virsh -c qemu:///system domjobabort ${vm} >/dev/null 2>&1; virsh -c qemu:///system domfsthaw ${vm} >/dev/null 2>&1; true`]));
  const other = `othertool-${randomBytes(3).toString('hex')}`;
  await writeFile(join(l.dir, 'foreign.xml'), `<domainbackup mode='pull'><server transport='unix' socket='${WORK}/${other}.sock'/><disks><disk name='vda' backup='yes' type='file' exportname='vda'><scratch file='${WORK}/${other}-vda.scratch'/></disk></disks></domainbackup>`);
  virsh('backup-begin', vm, join(l.dir, 'foreign.xml'));
  let frozenSeen = false;
  let watching = true;
  const watch = (async () => {
    while (watching) {
      if (freezeStatus(l) === 'frozen') frozenSeen = true;
      await sleep(100);
    }
  })();
  const b = await cli(l, 'backup', '--vm', vm, '--host', 'hv1', '--name', 'lab', '--quiesce', 'required');
  watching = false;
  await watch;
  t.is(b.code, 1, b.stderr);
  t.regex(b.stderr, /has a Backup job running that drctl did not start/);
  t.regex(b.stderr, new RegExp(`virsh domjobabort ${vm}`));
  t.false(frozenSeen, 'the guest was frozen while another job ran');
  t.true(backupJobRunning(vm), 'a job drctl did not start is left alone');
});

test.serial('an unknown VM is a usage error (exit 2) naming the VMs on the host', async (t) => {
  const l = ready(t);
  if (!l) return;
  const r = await cli(l, 'backup', '--vm', 'nosuchvm', '--host', 'hv1');
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /has no VM named nosuchvm/);
  t.true(r.stderr.includes(l.guest.name), r.stderr);
});

test.serial('a paused VM is backed up crash-consistent with a warning; quiesce required says to resume it', async (t) => {
  const l = ready(t);
  if (!l) return;
  const vm = l.guest.name;
  virsh('suspend', vm);
  t.teardown(() => void execFileSync('sh', ['-c', `virsh -c qemu:///system resume ${vm} >/dev/null 2>&1; true`]));
  const req = await cli(l, 'backup', '--vm', vm, '--host', 'hv1', '--name', 'lab-paused', '--quiesce', 'required');
  t.is(req.code, 1, req.stderr);
  t.regex(req.stderr, /cannot quiesce VM \S+ - the VM is paused/);
  t.regex(req.stderr, new RegExp(`virsh resume ${vm}`));
  const pref = await cli(l, 'backup', '--vm', vm, '--host', 'hv1', '--name', 'lab-paused', '--json');
  t.is(pref.code, 0, pref.stderr);
  const p = json<{ vm: { quiesced: boolean }; warnings?: string[] }>(pref);
  t.false(p.vm.quiesced);
  t.true((p.warnings ?? []).some((w) => /not quiesced \(the VM is paused\)/.test(w)), JSON.stringify(p.warnings));
  t.is(virsh('domstate', vm).trim(), 'paused', 'drctl leaves the VM as it found it');
});

test.serial('a job retried after a dropped connection reports the new data of all its attempts', async (t) => {
  const l = ready(t);
  if (!l) return;
  await l.guest.exec('dd if=/dev/urandom of=/data/retry.bin bs=1M count=24 2>/dev/null && sync');
  const fresh = async (name: string): Promise<Repository> => {
    const dir = join(l.dir, name);
    execFileSync(process.execPath, [join(DIST, 'cli/main.js'), 'init', '--repo', dir, '-q']);
    return Repository.open(await openLocalTarget(dir), { clock: systemClock });
  };
  const h = await host(l);
  try {
    const plain = await backupVm(await fresh('repo-plain'), h, { name: 'n', vm: l.guest.name, hostName: 'hv1', clock: systemClock, hostname: 'test' });
    let dropped = 0;
    const logs: string[] = [];
    const retried = await backupVm(await fresh('repo-retry'), h, {
      name: 'n', vm: l.guest.name, hostName: 'hv1', clock: systemClock, hostname: 'test', log: (s) => logs.push(s),
      onProgress: (p) => {
        // Half of the data in: the first attempt has stored a good part of it.
        if (dropped === 0 && p.totalBytes > 0 && p.doneBytes > plain.stats.newBytes / 2) dropped = l.sshd.dropConnections();
      },
    });
    t.true(dropped > 0);
    t.true(logs.some((s) => /retrying/.test(s)), logs.join('\n'));
    t.log(`new bytes: plain ${plain.stats.newBytes}, retried ${retried.stats.newBytes}`);
    // Both repositories were empty: the whole job stored (about) the same new data.
    t.true(retried.stats.newBytes >= plain.stats.newBytes * 0.9, `${retried.stats.newBytes} < ${plain.stats.newBytes}`);
  } finally {
    await h.transport.close();
  }
});
