/**
 * VMs with raw disks (no checkpoint possible: libvirt keeps dirty bitmaps only in qcow2)
 * against the real libvirtd + QEMU (TCG) over a real sshd: an all-raw VM is backed up without
 * a checkpoint, a raw disk next to a qcow2 one is read in full while the qcow2 one stays
 * incremental, and the points restore to the data written in the guest. One VM at a time.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { chmod, copyFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { requireTools } from '../../../support/tools.js';
import { drctl, json } from '../../../support/cli.js';
import { startVmLab, stopVmLab, type VmLab } from '../../../support/vm-lab.js';
import { domainXml, guestHandle, labCache, removeVm, virsh, waitForAgent, type Guest } from '../../../support/libvirt-lab.js';

const TOOLS = ['virsh', 'libvirtd', 'qemu-system-x86_64', 'qemu-ga', 'busybox', 'cpio', 'sshd', 'qemu-img'];
const MiB = 1024 * 1024;

type Lab = VmLab;
let lab: Lab | undefined;
let setupError: unknown;

test.before(async () => {
  if (!TOOLS.every((c) => execFileSync('sh', ['-c', `command -v ${c} || true`], { encoding: 'utf8' }).trim())) return;
  try {
    lab = await startVmLab('drctl-raw-');
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
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * The lab guest booted from a raw copy of its data disk as vda (mounted at /data), plus, with
 * `qcow2Vdb`, a qcow2 disk vdb. Removed (with its checkpoint metadata) when the test ends.
 */
async function bootRawGuest(t: import('ava').ExecutionContext, l: Lab, qcow2Vdb: boolean): Promise<Guest> {
  const cache = labCache();
  const dir = join(l.dir, `vm-${randomBytes(3).toString('hex')}`);
  await mkdir(dir);
  await chmod(dir, 0o755);
  for (const f of ['vmlinuz', 'initrd.gz']) await copyFile(join(cache, f), join(dir, f));
  const raw = join(dir, 'vda.raw');
  execFileSync('qemu-img', ['convert', '-O', 'raw', join(cache, 'data.qcow2'), raw]);
  if (qcow2Vdb) execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'vdb.qcow2'), String(64 * MiB)]);
  for (const f of ['vmlinuz', 'initrd.gz', 'vda.raw', ...(qcow2Vdb ? ['vdb.qcow2'] : [])]) await chmod(join(dir, f), 0o666);
  const name = `drctl-raw-${randomBytes(3).toString('hex')}`;
  let xml = domainXml(name, dir, raw).replace("type='qcow2'", "type='raw'");
  if (qcow2Vdb) {
    xml = xml.replace('<channel', `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${join(dir, 'vdb.qcow2')}'/><target dev='vdb' bus='virtio'/></disk>\n    <channel`);
  }
  await writeFile(join(dir, 'domain.xml'), xml);
  t.teardown(() => removeVm(name));
  virsh('define', join(dir, 'domain.xml'));
  virsh('start', name);
  await waitForAgent(name, 180_000); // boots take longer while other suites load the 2 cores
  return guestHandle(name, dir, raw, 0);
}

interface VmPoint {
  id: string;
  parent?: string;
  changeTracking: { mode: string; reason?: string };
  vm: { checkpoint?: string; quiesced: boolean };
  stats: { readBytes: number };
}

async function backup(t: import('ava').ExecutionContext, l: Lab, vm: string, name: string): Promise<VmPoint> {
  const b = await cli(l, 'backup', '--vm', vm, '--host', 'hv1', '--name', name, '--json');
  t.is(b.code, 0, b.stderr);
  return json<VmPoint>(b);
}

/**
 * Every 1 KiB block of `file` is somewhere in `image` at a 1 KiB boundary (the lab disk is a
 * small ext4, made with 1 KiB blocks; a file need not be contiguous).
 */
function holdsBlocks(image: Buffer, file: Buffer): boolean {
  const have = new Set<string>();
  for (let o = 0; o + 1024 <= image.length; o += 1024) have.add(sha(image.subarray(o, o + 1024)));
  for (let o = 0; o < file.length; o += 1024) if (!have.has(sha(file.subarray(o, o + 1024)))) return false;
  return true;
}

test.serial('a VM with only raw disks is backed up without a checkpoint, read in full with the reason, and restores its data', async (t) => {
  const l = ready(t);
  if (!l) return;
  const g = await bootRawGuest(t, l, false);
  await g.exec('dd if=/dev/urandom of=/data/raw.bin bs=64k count=16 2>/dev/null && sync');
  const want = await g.exec('cat /data/raw.bin');
  const p = await backup(t, l, g.name, 'raw1');
  t.is(p.changeTracking.mode, 'full-read');
  t.regex(p.changeTracking.reason ?? '', /disk vda is raw: no checkpoint \(incrementals need qcow2\), read in full/);
  t.true(p.vm.quiesced);
  t.is(p.vm.checkpoint, undefined);
  t.deepEqual(virsh('checkpoint-list', g.name, '--name').trim(), '');
  // and again: nothing on the VM stands in the way of the next run
  const again = await backup(t, l, g.name, 'raw1');
  t.regex(again.changeTracking.reason ?? '', /disk vda is raw/);
  const out = join(l.dir, 'raw1.img');
  const r = await cli(l, 'restore', again.id, '--to', out, '-q');
  t.is(r.code, 0, r.stderr);
  t.true(holdsBlocks(await readFile(out), want), 'the file written in the guest is in the restored disk');
  await rm(out);
});

test.serial('a raw disk next to a qcow2 disk: the raw one is read in full every time, the qcow2 one stays incremental', async (t) => {
  const l = ready(t);
  if (!l) return;
  const g = await bootRawGuest(t, l, true);
  const first = await backup(t, l, g.name, 'mixed');
  t.truthy(first.vm.checkpoint);
  // 4 MiB of new data on vdb (written to the device; the guest does not mount it).
  await g.exec('dd if=/dev/urandom of=/dev/vdb bs=1M count=4 seek=8 conv=fsync 2>/dev/null');
  const written = (await g.exec('dd if=/dev/vdb bs=1M count=4 skip=8 2>/dev/null | sha256sum')).toString().slice(0, 64);
  const second = await backup(t, l, g.name, 'mixed');
  t.is(second.parent, first.id, 'vdb was taken from its dirty bitmap');
  t.regex(second.changeTracking.reason ?? '', /vda: disk vda is raw/);
  t.notRegex(second.changeTracking.reason ?? '', /vdb/);
  const out = join(l.dir, 'mixed');
  await mkdir(out);
  const r = await cli(l, 'restore', second.id, '--to', `${out}/`, '-q');
  t.is(r.code, 0, r.stderr);
  const vdb = (await readdir(out)).find((f) => f.startsWith('vdb'));
  t.truthy(vdb);
  t.is(sha((await readFile(join(out, vdb as string))).subarray(8 * MiB, 12 * MiB)), written, 'vdb restores the data written since the first point');
  await rm(out, { recursive: true });
});
