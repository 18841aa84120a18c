import test from 'ava';
import { parseDomain, rewriteForNewVm } from '../../../../engine/hosts/libvirt/domain-xml.js';

const XML = `<domain type='qemu'>
  <name>web01</name>
  <uuid>fefad4b5-1ac4-41f0-969a-c37c5abc5697</uuid>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/web01.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/iso/debian.iso'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='default'/>
    </interface>
    <serial type='file'>
      <source path='/var/log/web01.log'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
  </devices>
</domain>`;

test('parseDomain finds the disks to back up (not the cdrom) and the agent channel', (t) => {
  const d = parseDomain(XML);
  t.is(d.name, 'web01');
  t.is(d.uuid, 'fefad4b5-1ac4-41f0-969a-c37c5abc5697');
  t.deepEqual(d.disks, [{ dev: 'vda', type: 'file', source: '/var/lib/libvirt/images/web01.img', format: 'raw' }]);
  t.true(d.hasAgentChannel);
});

test('rewriteForNewVm: new name, no UUID, no MAC, restored qcow2 disks, own serial log', (t) => {
  const out = rewriteForNewVm(XML, { name: 'web01-copy', diskPaths: new Map([['vda', '/srv/vm/web01-copy-vda.qcow2']]) });
  const d = parseDomain(out);
  t.is(d.name, 'web01-copy');
  t.is(d.uuid, '');
  t.notRegex(out, /mac address/);
  t.deepEqual(d.disks[0], { dev: 'vda', type: 'file', source: '/srv/vm/web01-copy-vda.qcow2', format: 'qcow2' });
  t.regex(out, /<source file='\/iso\/debian.iso'\/>/); // the cdrom is left as it was
  t.regex(out, /<source path='\/var\/log\/web01-copy-web01.log'\/>/);
  t.regex(out, /<interface/);
  t.notRegex(rewriteForNewVm(XML, { name: 'x', diskPaths: new Map(), noNetwork: true }), /<interface/);
});

const UEFI = `<domain type='kvm'>
  <name>win01</name>
  <uuid>0b6e2f4c-3c55-4d0a-8f4e-1a2b3c4d5e6f</uuid>
  <os>
    <type arch='x86_64' machine='pc-q35-8.2'>hvm</type>
    <loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>/var/lib/libvirt/qemu/nvram/win01_VARS.fd</nvram>
  </os>
  <devices>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source bridge='br0'/>
    </interface>
    <interface type='network'>
      <source network='default'/>
    </interface>
    <interface type='user'>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>`;

test('parseDomain reports the NVRAM file and what the interfaces plug into', (t) => {
  const d = parseDomain(UEFI);
  t.is(d.nvram, '/var/lib/libvirt/qemu/nvram/win01_VARS.fd');
  t.deepEqual(d.links, [{ type: 'bridge', name: 'br0' }, { type: 'network', name: 'default' }]);
  t.is(parseDomain(XML).nvram, undefined);
  t.is(parseDomain(`<domain><os><nvram type='file' template='/t.fd'><source file='/n/x_VARS.fd'/></nvram></os></domain>`).nvram, '/n/x_VARS.fd');
});

test('rewriteForNewVm never keeps the original NVRAM path: its own copy, or none so libvirt makes one from the template', (t) => {
  const own = rewriteForNewVm(UEFI, { name: 'win01-drill', diskPaths: new Map(), nvramPath: '/srv/vm/win01-drill_VARS.fd' });
  t.regex(own, /<nvram template='\/usr\/share\/OVMF\/OVMF_VARS_4M\.ms\.fd'>\/srv\/vm\/win01-drill_VARS\.fd<\/nvram>/);
  t.regex(own, /<loader readonly='yes' secure='yes' type='pflash'>\/usr\/share\/OVMF\/OVMF_CODE_4M\.ms\.fd<\/loader>/);
  const fresh = rewriteForNewVm(UEFI, { name: 'win01-drill', diskPaths: new Map() });
  t.regex(fresh, /<nvram template='\/usr\/share\/OVMF\/OVMF_VARS_4M\.ms\.fd'\/>/);
  for (const out of [own, fresh]) t.false(out.includes('win01_VARS.fd'));
  // the newer form with a <source> child
  const typed = rewriteForNewVm(`<domain><os><nvram type='file' template='/t.fd'><source file='/n/x_VARS.fd'/></nvram></os></domain>`, { name: 'y', diskPaths: new Map() });
  t.is(typed, `<domain><os><nvram template='/t.fd'/></os></domain>`);
});
