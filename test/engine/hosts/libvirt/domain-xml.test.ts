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
