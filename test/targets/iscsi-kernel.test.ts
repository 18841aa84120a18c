/**
 * The kernel strategy's command lines (open-iscsi cannot run in the test sandbox: no iscsi_tcp
 * module). What matters: the right iscsiadm modes and names, the I/O timeout, the by-path
 * device name udev creates, and that the CHAP secret never appears on a command line.
 */
import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  byPathDevice, discoveryCommand, ifaceCommands, loginCommand, logoutCommand, nodeRecordFile, nodeUpdateCommands, withPassword,
} from '../../targets/iscsi/kernel.js';
import { qsdArgs } from '../../targets/iscsi/userspace.js';
import type { IscsiTargetConfig } from '../../targets/iscsi/types.js';
import { tempDir } from '../support/tmp.js';

const san1: IscsiTargetConfig = {
  name: 'san1', file: '/etc/drctl/targets/san1.yaml', portal: '192.0.2.20:3260', iqn: 'iqn.2026-01.com.example:backup', lun: 1,
  chap: { user: 'drctl', secretFile: '/etc/drctl/secrets/san1' }, filesystem: 'ext4', mountpoint: '/mnt/drctl/san1',
  attach: 'kernel', keepAttached: false, ioTimeoutSeconds: 30,
};
const NODE = ['-m', 'node', '-T', 'iqn.2026-01.com.example:backup', '-p', '192.0.2.20:3260'];

test('discovery, login and logout address the portal and the target', (t) => {
  t.deepEqual(discoveryCommand(san1), ['iscsiadm', '-m', 'discovery', '-t', 'sendtargets', '-p', '192.0.2.20:3260']);
  t.deepEqual(loginCommand(san1), ['iscsiadm', ...NODE, '--login']);
  t.deepEqual(logoutCommand(san1), ['iscsiadm', ...NODE, '--logout']);
  t.deepEqual(ifaceCommands(san1), [], 'no initiatorName: the system\'s iface');
});

test('node settings: manual start, I/O timeout, CHAP method and user — never the secret', (t) => {
  const set = (n: string, v: string) => ['iscsiadm', ...NODE, '-o', 'update', '-n', n, '-v', v];
  t.deepEqual(nodeUpdateCommands(san1), [
    set('node.startup', 'manual'),
    set('node.session.timeo.replacement_timeout', '30'),
    set('node.session.auth.authmethod', 'CHAP'),
    set('node.session.auth.username', 'drctl'),
  ]);
  const noChap = { ...san1, chap: undefined };
  t.deepEqual(nodeUpdateCommands(noChap).at(-1), set('node.session.auth.authmethod', 'None'));
  t.false(nodeUpdateCommands(san1).flat().some((a) => a.includes('password')));
});

test('an initiatorName gets its own iface, used by every node command', (t) => {
  const t2 = { ...san1, initiatorName: 'iqn.2026-01.com.example:node1' };
  t.deepEqual(ifaceCommands(t2), [
    ['iscsiadm', '-m', 'iface', '-I', 'drctl', '-o', 'new'],
    ['iscsiadm', '-m', 'iface', '-I', 'drctl', '-o', 'update', '-n', 'iface.initiatorname', '-v', 'iqn.2026-01.com.example:node1'],
  ]);
  t.deepEqual(discoveryCommand(t2).slice(-2), ['-I', 'drctl']);
  t.deepEqual(loginCommand(t2), ['iscsiadm', ...NODE, '-I', 'drctl', '--login']);
});

test('IPv6 portals are bracketed for iscsiadm; the by-path device name is udev\'s', (t) => {
  const v6 = { ...san1, portal: '[2001:db8::20]:3260' };
  t.deepEqual(discoveryCommand(v6).slice(-1), ['[2001:db8::20]:3260']);
  t.is(byPathDevice(san1), '/dev/disk/by-path/ip-192.0.2.20:3260-iscsi-iqn.2026-01.com.example:backup-lun-1');
});

test('the CHAP secret goes into the node record file, replacing an old one', async (t) => {
  const record = '# BEGIN RECORD 2.1.8\nnode.name = iqn.2026-01.com.example:backup\nnode.session.auth.password = old\n# END RECORD\n';
  t.is(withPassword(record, 's3cret'), '# BEGIN RECORD 2.1.8\nnode.name = iqn.2026-01.com.example:backup\nnode.session.auth.password = s3cret\n# END RECORD\n');
  const root = await tempDir(t);
  await mkdir(join(root, san1.iqn, '192.0.2.20,3260,1'), { recursive: true });
  await writeFile(join(root, san1.iqn, '192.0.2.20,3260,1', 'default'), record);
  t.is(await nodeRecordFile(san1, root), join(root, san1.iqn, '192.0.2.20,3260,1', 'default'));
  await t.throwsAsync(nodeRecordFile({ ...san1, portal: '192.0.2.21:3260' }, root), { message: /did not list/ });
});

test('userspace: qemu-storage-daemon gets the secret as a file object, not on argv', (t) => {
  const args = qsdArgs(san1, '/run/drctl/lun.raw', '/run/drctl/qsd.pid', '/run/drctl/chap.secret');
  t.true(args.includes('secret,id=chap,file=/run/drctl/chap.secret'));
  t.regex(args.join(' '), /driver=iscsi,.*portal=192\.0\.2\.20:3260,target=iqn\.2026-01\.com\.example:backup,lun=1,.*user=drctl,password-secret=chap/);
  t.regex(args.join(' '), /type=fuse,.*mountpoint=\/run\/drctl\/lun\.raw,writable=on/);
});
