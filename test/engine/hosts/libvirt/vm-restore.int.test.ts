/**
 * Restores onto a libvirt host whose VM changed since the point, against the real thing
 * (libvirtd + QEMU in TCG, the lab guest, sshd on 127.0.0.1): a disk resized since the point
 * is refused before the VM is touched, and resized on request; a restored UEFI VM gets its
 * own NVRAM file from libvirt. One guest for the whole file; the tests run in order.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { access, chmod, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { requireTools } from '../../../support/tools.js';
import { sharedTempDir } from '../../../support/tmp.js';
import { drctl, json } from '../../../support/cli.js';
import { hostConfig, startVmLab, stopVmLab, type VmLab } from '../../../support/vm-lab.js';
import { ensureLibvirtd, removeVm, virsh, waitForAgent, type Guest } from '../../../support/libvirt-lab.js';
import { openHostTransport } from '../../../../engine/ssh/index.js';
import { LibvirtHost } from '../../../../engine/hosts/libvirt/libvirt-host.js';
import { rewriteForNewVm } from '../../../../engine/hosts/libvirt/domain-xml.js';
import { restoreToOriginalVm } from '../../../../engine/restore/vm-restore.js';
import { Repository } from '../../../../engine/repo/index.js';
import { openLocalTarget } from '../../../../targets/index.js';
import { systemClock } from '../../../../engine/runtime/clock.js';

const TOOLS = ['virsh', 'libvirtd', 'qemu-system-x86_64', 'qemu-ga', 'busybox', 'cpio', 'sshd', 'qemu-img', 'qemu-nbd'];
const MiB = 1024 * 1024;

type Lab = VmLab & { guest: Guest; store: string };
let lab: Lab | undefined;
let setupError: unknown;

test.before(async () => {
  if (!TOOLS.every((c) => execFileSync('sh', ['-c', `command -v ${c} || true`], { encoding: 'utf8' }).trim())) return;
  try {
    const l = await startVmLab('drctl-vmrestore-', 'drctl-rs');
    const store = join(l.dir, 'store');
    await mkdir(store);
    await chmod(store, 0o755);
    lab = { ...l, store };
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
const diskBytes = (vm: string): number => Number(/Capacity:\s+(\d+)/.exec(virsh('domblkinfo', vm, 'vda'))?.[1]);

async function backup(l: Lab): Promise<string> {
  const b = await cli(l, 'backup', '--vm', l.guest.name, '--host', 'hv1', '--name', 'rs', '--json');
  if (b.code !== 0) throw new Error(b.stderr);
  return json<{ id: string }>(b).id;
}

/** The engine's restore onto the original VM with resizeDisks (the CLI flag is wired in cli/commands/restore.ts). */
async function restoreResizing(l: Lab, pointId: string): Promise<void> {
  const h = new LibvirtHost(await openHostTransport(hostConfig(l.sshd)), 'qemu:///system');
  try {
    const repo = await Repository.open(await openLocalTarget(l.repo), { clock: systemClock });
    const point = await repo.resolvePoint(pointId);
    await restoreToOriginalVm(repo, point, h, { force: true, shutdownTimeoutS: 3, resizeDisks: true });
  } finally {
    await h.transport.close();
  }
}

let small = '';
let big = '';
test.serial('a disk grown since the point: restore is refused (exit 2, both sizes) with the VM still running and its checkpoints kept', async (t) => {
  const l = ready(t);
  if (!l) return;
  await l.guest.exec('dd if=/dev/urandom of=/data/keep.bin bs=64k count=8 2>/dev/null && sync');
  small = await backup(l);
  virsh('blockresize', l.guest.name, 'vda', '192M');
  t.is(diskBytes(l.guest.name), 192 * MiB);
  const checkpoints = virsh('checkpoint-list', l.guest.name, '--name').trim();
  t.not(checkpoints, '');
  const r = await cli(l, 'restore', small, '--host', 'hv1', '--force', '--shutdown-timeout', '3', '--no-safety-point');
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /disk vda is 192 MiB \(201326592 bytes\) on the VM but 128 MiB \(134217728 bytes\) in the point - nothing was changed/);
  t.regex(r.stderr, /--resize-disks/);
  t.is(virsh('domstate', l.guest.name).trim(), 'running');
  t.is(virsh('checkpoint-list', l.guest.name, '--name').trim(), checkpoints);
  big = await backup(l);
});

test.serial('resizeDisks shrinks it back to the point\'s size while the VM is off; the VM runs again with the point\'s data', async (t) => {
  const l = ready(t);
  if (!l || !small) return;
  const want = sha(await l.guest.exec('cat /data/keep.bin'));
  await l.guest.exec('dd if=/dev/zero of=/data/keep.bin bs=64k count=8 conv=notrunc 2>/dev/null && sync');
  await restoreResizing(l, small);
  t.is(diskBytes(l.guest.name), 128 * MiB);
  t.is(virsh('domstate', l.guest.name).trim(), 'running');
  await waitForAgent(l.guest.name);
  t.is(sha(await l.guest.exec('cat /data/keep.bin')), want);
});

test.serial('a disk smaller than the point\'s: refused before anything happens, no NBD error after a half restore', async (t) => {
  const l = ready(t);
  if (!l || !big) return;
  const r = await cli(l, 'restore', big, '--host', 'hv1', '--force', '--shutdown-timeout', '3', '--no-safety-point');
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /disk vda is 128 MiB \(134217728 bytes\) on the VM but 192 MiB \(201326592 bytes\) in the point/);
  t.notRegex(r.stderr, /NBD|unexpected error/);
  t.is(virsh('domstate', l.guest.name).trim(), 'running');
});

test.serial('--as with a path for a name is refused (exit 2) and writes nothing', async (t) => {
  const l = ready(t);
  if (!l || !small) return;
  const sub = join(l.store, 'sub');
  await mkdir(sub);
  const r = await cli(l, 'restore', small, '--host', 'hv1', '--as', '../evil', '--storage', sub);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /invalid VM name "\.\.\/evil" for --as/);
  t.deepEqual(await readdir(l.store), ['sub']);
  t.deepEqual(await readdir(sub), []);
});

test.serial('libvirt gives a UEFI VM restored as new its own NVRAM: `undefine --nvram` of the copy leaves the original\'s file', async (t) => {
  if (!requireTools(t, 'virsh', 'libvirtd')) return;
  await ensureLibvirtd();
  const dir = await sharedTempDir('drctl-nvram-');
  await chmod(dir, 0o755);
  const orig = `drctl-nv-${randomBytes(3).toString('hex')}`;
  const copy = `${orig}-copy`;
  t.teardown(async () => {
    removeVm(copy);
    removeVm(orig);
    await rm(dir, { recursive: true, force: true });
  });
  const vars = join(dir, `${orig}_VARS.fd`);
  await writeFile(vars, Buffer.alloc(64 * 1024));
  await writeFile(join(dir, 'CODE.fd'), Buffer.alloc(64 * 1024));
  // Defined only, never started: no firmware needed (the lab has no OVMF).
  await writeFile(join(dir, 'orig.xml'), `<domain type='qemu'>
  <name>${orig}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type><loader readonly='yes' type='pflash'>${dir}/CODE.fd</loader><nvram template='${dir}/CODE.fd'>${vars}</nvram></os>
  <features><acpi/></features>
</domain>`);
  virsh('define', join(dir, 'orig.xml'));
  await writeFile(join(dir, 'copy.xml'), rewriteForNewVm(virsh('dumpxml', '--inactive', orig), { name: copy, diskPaths: new Map() }));
  virsh('define', join(dir, 'copy.xml'));
  const nvram = /<nvram[^>]*>([^<]+)<\/nvram>/.exec(virsh('dumpxml', '--inactive', copy))?.[1];
  t.truthy(nvram);
  t.not(nvram, vars);
  virsh('undefine', copy, '--nvram');
  await t.notThrowsAsync(access(vars), 'the original VM\'s NVRAM file is still there');
});
