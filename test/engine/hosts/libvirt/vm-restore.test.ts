/**
 * VM restores against a scripted host: what drctl checks before it changes anything on the
 * host (disk sizes, disks, VM name, networks) and what an interrupted restore onto the
 * original VM says. The host answers virsh and shell commands from a table; every command is
 * recorded, so a test can show that nothing was shut down, deleted or written.
 */
import test from 'ava';
import type { Duplex } from 'node:stream';
import { LibvirtHost } from '../../../../engine/hosts/libvirt/libvirt-host.js';
import { restoreAsNewVm, restoreToOriginalVm } from '../../../../engine/restore/vm-restore.js';
import { InterruptedError, UsageError } from '../../../../engine/errors.js';
import { HostUnreachableError, type HostTransport, type RemoteResult } from '../../../../engine/ssh/index.js';
import type { Point, Repository } from '../../../../engine/repo/index.js';

const MiB = 2 ** 20;
const UUID = '6a3c0f7e-0d1f-4b8e-9a57-3f1b2c4d5e6f';

function domainXml(o: { disks?: string[]; iface?: string; nvram?: string } = {}): string {
  return `<domain type='qemu'>
  <name>web01</name>
  <uuid>${UUID}</uuid>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
${o.nvram ? `    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>\n    <nvram template='/usr/share/OVMF/OVMF_VARS.fd'>${o.nvram}</nvram>\n` : ''}  </os>
  <devices>
${(o.disks ?? ['vda']).map((d) => `    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web01-${d}.qcow2'/>
      <target dev='${d}' bus='virtio'/>
    </disk>`).join('\n')}
${o.iface ?? ''}
  </devices>
</domain>`;
}

function point(disks: { name: string; sizeBytes: number }[], xml = domainXml({ disks: disks.map((d) => d.name) })): Point {
  return {
    id: 'a1b2c3d4e5f6a7b8c9d0', name: 'web01', kind: 'vm', time: '2025-03-04T18:00:00Z',
    disks: disks.map((d) => ({ ...d, chunkBytes: MiB, lists: [], sourceFormat: 'qcow2' })),
    vm: { name: 'web01', uuid: UUID, xml },
  } as unknown as Point;
}

type Answer = Partial<RemoteResult> | ((cmd: string) => Partial<RemoteResult>);

/** A host that answers commands matching a pattern (first match wins); anything else fails. */
class ScriptedHost implements HostTransport {
  readonly label = 'host hv1 (root@10.0.0.5:22)';
  readonly bytesIn = 0;
  readonly bytesOut = 0;
  readonly commands: string[] = [];
  onSocket: () => Promise<Duplex> = () => Promise.reject(new Error('no socket in this test'));
  constructor(private readonly answers: [RegExp, Answer][]) {}

  async exec(command: string): Promise<RemoteResult> {
    this.commands.push(command);
    const hit = this.answers.find(([re]) => re.test(command));
    const a = hit ? (typeof hit[1] === 'function' ? hit[1](command) : hit[1]) : { code: 1, stderr: `unexpected command: ${command}` };
    return { code: a.code ?? 0, stdout: a.stdout ?? '', stderr: a.stderr ?? '' };
  }

  openUnixSocket(): Promise<Duplex> {
    return this.onSocket();
  }

  async close(): Promise<void> {}

  ran(re: RegExp): boolean {
    return this.commands.some((c) => re.test(c));
  }
}

/** The original VM web01 with these disks (dev → current size), running until `virsh shutdown`. */
function originalVm(sizes: Record<string, number>): ScriptedHost {
  let state = 'running';
  return new ScriptedHost([
    [/ domuuid web01$/, { stdout: `${UUID}\n` }],
    [/ domstate web01$/, () => ({ stdout: `${state}\n` })],
    [/ dumpxml --inactive web01$/, { stdout: domainXml({ disks: Object.keys(sizes) }) }],
    [/ domblkinfo web01 (\w+)$/, (c) => ({ stdout: `Capacity:       ${sizes[c.split(' ').at(-1) as string]}\nAllocation:     0\n` })],
    [/ shutdown web01$/, () => ((state = 'shut off'), {})],
    [/ checkpoint-list web01 --name$/, { stdout: 'drctl-1\n' }],
    [/ checkpoint-delete /, {}],
    [/^qemu-img info/, { stdout: '{}' }],
    [/^mktemp -d/, { stdout: '/tmp/drctl-nbd.x\n' }],
    [/^qemu-nbd /, {}],
    [/^qemu-img resize /, {}],
    [/^p=\$\(cat/, {}],
  ]);
}

const repo = {} as Repository;

test('a disk smaller than the point\'s is refused before the VM is shut down or its checkpoints dropped (exit 2, both sizes)', async (t) => {
  const h = originalVm({ vda: 128 * MiB });
  let safety = false;
  const e = await t.throwsAsync(restoreToOriginalVm(repo, point([{ name: 'vda', sizeBytes: 192 * MiB }]), new LibvirtHost(h, 'qemu:///system'), {
    force: true, safetyPoint: async () => ((safety = true), {} as Point),
  }), { instanceOf: UsageError });
  t.is(e?.exitCode, 2);
  t.regex(e?.message ?? '', /VM web01 on host hv1 \S+: disk vda is 128 MiB \(134217728 bytes\) on the VM but 192 MiB \(201326592 bytes\) in the point - nothing was changed/);
  t.regex(e?.hint ?? '', /--resize-disks/);
  t.false(safety, 'no safety point taken');
  t.false(h.ran(/ (shutdown|destroy|checkpoint-delete) /));
});

test('a disk grown since the point is refused too (its tail would keep newer data)', async (t) => {
  const h = originalVm({ vda: 192 * MiB });
  const e = await t.throwsAsync(restoreToOriginalVm(repo, point([{ name: 'vda', sizeBytes: 128 * MiB }]), new LibvirtHost(h, 'qemu:///system'), { force: true }), { instanceOf: UsageError });
  t.regex(e?.message ?? '', /disk vda is 192 MiB \(201326592 bytes\) on the VM but 128 MiB \(134217728 bytes\) in the point/);
  t.false(h.ran(/ (shutdown|destroy|checkpoint-delete) /));
});

test('a disk of the point the VM no longer has is refused before anything is stopped', async (t) => {
  const h = originalVm({ vda: 128 * MiB });
  const e = await t.throwsAsync(restoreToOriginalVm(repo, point([{ name: 'vda', sizeBytes: 128 * MiB }, { name: 'vdb', sizeBytes: 64 * MiB }]), new LibvirtHost(h, 'qemu:///system'), { force: true }), { instanceOf: UsageError });
  t.regex(e?.message ?? '', /VM web01 on host hv1 \S+ has no disk vdb any more/);
  t.false(h.ran(/ (shutdown|destroy|checkpoint-delete) /));
});

test('with resizeDisks the image is resized to the point\'s size after the VM is off, before it is written', async (t) => {
  const h = originalVm({ vda: 192 * MiB });
  h.onSocket = () => Promise.reject(new HostUnreachableError(h.label, 'stop here'));
  await t.throwsAsync(restoreToOriginalVm(repo, point([{ name: 'vda', sizeBytes: 128 * MiB }]), new LibvirtHost(h, 'qemu:///system'), { force: true, resizeDisks: true, shutdownTimeoutS: 1 }), { message: /stop here/ });
  const i = (re: RegExp): number => h.commands.findIndex((c) => re.test(c));
  t.true(i(/^qemu-img resize -q -f qcow2 --shrink \/var\/lib\/libvirt\/images\/web01-vda\.qcow2 134217728$/) > i(/ shutdown web01$/), h.commands.join('\n'));
  t.true(i(/^qemu-img resize/) < i(/^qemu-nbd /));
});

test('Ctrl-C while the disks are written names the VM, says it is off and partly restored, and gives the command to finish', async (t) => {
  const h = originalVm({ vda: 128 * MiB });
  const ac = new AbortController();
  h.onSocket = () => {
    ac.abort();
    return Promise.reject(new HostUnreachableError(h.label, 'interrupted'));
  };
  const e = await t.throwsAsync(restoreToOriginalVm(repo, point([{ name: 'vda', sizeBytes: 128 * MiB }]), new LibvirtHost(h, 'qemu:///system'), {
    force: true, shutdownTimeoutS: 1, signal: ac.signal,
  }), { instanceOf: InterruptedError });
  t.is(e?.message, 'interrupted - VM web01 on host hv1 (root@10.0.0.5:22) is shut off and its disk vda is partly restored');
  t.regex(e?.hint ?? '', /finish the restore with `drctl restore a1b2c3d4e5f6 --host hv1 --no-safety-point --start`/);
  t.regex(e?.hint ?? '', /it was running before/);
  t.notRegex(`${e?.message} ${e?.hint}`, /nothing was committed/);
});

function newVmHost(o: { networks?: Record<string, 'yes' | 'no'>; links?: string[]; files?: string[] } = {}): ScriptedHost {
  return new ScriptedHost([
    [/ domuuid /, { code: 1, stderr: 'error: failed to get domain' }],
    [/ net-info (\S+)$/, (c) => {
      const active = o.networks?.[c.split(' ').at(-1) as string];
      return active ? { stdout: `Name:           x\nActive:         ${active}\n` } : { code: 1, stderr: 'error: Network not found' };
    }],
    [/^ip link show dev (\S+)$/, (c) => ({ code: o.links?.includes(c.split(' ').at(-1) as string) ? 0 : 1 })],
    [/^test -[er] (\S+)$/, (c) => ({ code: o.files?.includes(c.split(' ').at(-1) as string) ? 0 : 1 })],
    [/^mkdir -p \S+ && cp /, {}],
  ]);
}

const wrote = (h: ScriptedHost): boolean => h.ran(/qemu-img create|^mkdir|^cp | define /);

for (const name of ['../../../etc/evil', '', 'a/b', '-x', '..', 'tab\there']) {
  test(`--as ${JSON.stringify(name)} is refused before anything is written (exit 2)`, async (t) => {
    const h = newVmHost();
    const e = await t.throwsAsync(restoreAsNewVm(repo, point([{ name: 'vda', sizeBytes: 128 * MiB }]), new LibvirtHost(h, 'qemu:///system'), { name, storage: '/srv/vm' }), { instanceOf: UsageError });
    t.regex(e?.message ?? '', /^invalid VM name .* for --as - /);
    t.false(wrote(h));
  });
}

test('a libvirt network or bridge missing on the target host is refused before writing, suggesting --no-network', async (t) => {
  const iface = `    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='prod-lan'/>
    </interface>
    <interface type='bridge'>
      <source bridge='br-dmz'/>
    </interface>
    <interface type='network'>
      <source network='default'/>
    </interface>`;
  const p = point([{ name: 'vda', sizeBytes: 128 * MiB }], domainXml({ iface }));
  const h = newVmHost({ networks: { default: 'yes' } });
  const e = await t.throwsAsync(restoreAsNewVm(repo, p, new LibvirtHost(h, 'qemu:///system'), { name: 'web01-copy', storage: '/srv/vm', start: true }), { instanceOf: UsageError });
  t.is(e?.exitCode, 2);
  t.regex(e?.message ?? '', /^host hv1 \S+ has no network prod-lan, bridge br-dmz for the network interfaces of the new VM - nothing was written$/);
  t.regex(e?.hint ?? '', /--no-network/);
  t.false(wrote(h));
  // an inactive network only matters when the VM is to be started
  const h2 = newVmHost({ networks: { 'prod-lan': 'no', default: 'yes' }, links: ['br-dmz'] });
  const e2 = await t.throwsAsync(restoreAsNewVm(repo, p, new LibvirtHost(h2, 'qemu:///system'), { name: 'web01-copy', storage: '/srv/vm', start: true }), { instanceOf: UsageError });
  t.regex(e2?.message ?? '', /network prod-lan on host hv1 \S+ is not active, so --start would fail/);
  t.regex(e2?.hint ?? '', /virsh net-start prod-lan/);
  t.false(wrote(h2));
});

test('--no-network skips the network check', async (t) => {
  const iface = `    <interface type='network'>\n      <source network='prod-lan'/>\n    </interface>`;
  const h = newVmHost();
  // It gets past the checks and fails at the first write (this scripted host has no qemu-img).
  await t.throwsAsync(restoreAsNewVm(repo, point([{ name: 'vda', sizeBytes: 128 * MiB }], domainXml({ iface })), new LibvirtHost(h, 'qemu:///system'), { name: 'web01-copy', storage: '/srv/vm', noNetwork: true }), { message: /creating \/srv\/vm\/web01-copy-vda\.qcow2 failed/ });
  t.false(h.ran(/net-info/));
});

test('a UEFI VM restored as new gets a copy of the NVRAM next to its images; the original file is only read', async (t) => {
  const orig = '/var/lib/libvirt/qemu/nvram/web01_VARS.fd';
  const h = newVmHost({ files: [orig] });
  const p = point([{ name: 'vda', sizeBytes: 128 * MiB }], domainXml({ nvram: orig }));
  await t.throwsAsync(restoreAsNewVm(repo, p, new LibvirtHost(h, 'qemu:///system'), { name: 'web01-copy', storage: '/srv/vm' }));
  t.true(h.ran(/^mkdir -p \/srv\/vm && cp \/var\/lib\/libvirt\/qemu\/nvram\/web01_VARS\.fd \/srv\/vm\/web01-copy_VARS\.fd$/), h.commands.join('\n'));
  // the copy is removed with the images when the restore fails; the original never is
  t.true(h.ran(/^rm -f \/srv\/vm\/web01-copy_VARS\.fd$/));
  t.false(h.commands.some((c) => c.includes(orig) && !/^(test -r|mkdir -p \/srv\/vm && cp) /.test(c)));
});
