/**
 * A LUN whose filesystem is damaged is not an empty LUN: drctl must neither call it empty nor
 * format it without --force, and its advice must lead to a repair that works (attach the
 * device without mounting, run the repair tool on it). Real tgtd, userspace attach.
 */
import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from '../../engine/runtime/exec.js';
import { json } from '../support/cli.js';
import { requireTools } from '../support/tools.js';
import { ISCSI_TOOLS, iscsiLab, leftovers, type Lab } from './iscsi-lab.js';

/** Format san1, put a repository and a marker file on it, detach. */
async function repositoryWithMarker(t: import('ava').ExecutionContext, lab: Lab): Promise<void> {
  t.is((await lab.run(['target', 'format', 'san1', '--format'])).code, 0);
  t.is((await lab.run(['target', 'attach', 'san1'])).code, 0);
  t.is((await lab.run(['init', '--target', 'san1'])).code, 0);
  await writeFile(join(lab.mountpoint, 'marker'), 'still here\n');
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
}

test('a LUN whose ext4 primary superblock was zeroed holds data: attach and test do not call it empty, format refuses without --force, the advised repair brings the repository back', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS, 'e2fsck', 'dd')) return;
  const lab = await iscsiLab(t);
  await repositoryWithMarker(t, lab);
  // What the tester did: zero only the primary superblock (1 KiB at offset 1 KiB).
  await execFile('dd', ['if=/dev/zero', `of=${lab.tgtd.lunFile}`, 'bs=1024', 'seek=1', 'count=1', 'conv=notrunc']);

  const att = await lab.run(['target', 'attach', 'san1']);
  t.is(att.code, 1, att.stderr);
  t.regex(att.stderr, /target san1: LUN 1 of \S+ at \S+ holds data but no filesystem drctl recognises/);
  t.regex(att.stderr, /backup superblock is at block 8193/);
  t.regex(att.stderr, /drctl target attach san1 --no-mount/);
  t.notRegex(att.stderr, /format it once/);

  const tested = await lab.run(['target', 'test', 'san1', '--json']);
  t.is(tested.code, 1);
  const report = json<{ filesystem: string; error: string; hint: string }>(tested);
  t.is(report.filesystem, 'unrecognised data');
  t.regex(report.error, /holds data but no filesystem drctl recognises/);
  t.notRegex(report.hint, /drctl target format/);

  const fmt = await lab.run(['target', 'format', 'san1', '--format']);
  t.is(fmt.code, 2, fmt.stderr);
  t.regex(fmt.stderr, /target san1: LUN 1 of \S+ holds data but no filesystem drctl recognises.* - refusing to format it/);
  t.regex(fmt.stderr, /e2fsck -fy -b 8193 -B 1024 DEVICE/);
  t.regex(fmt.stderr, /add --force to erase it/);

  // The advice works: attach without mounting, repair from the backup superblock, attach.
  const block = await lab.run(['target', 'attach', 'san1', '--no-mount', '--json']);
  t.is(block.code, 0, block.stderr);
  const { device, mounted } = json<{ device: string; mounted: boolean }>(block);
  t.false(mounted);
  t.regex(device, /^\/dev\/loop\d+$/);
  t.is((await lab.run(['target', 'attach', 'san1'])).code, 1, 'a block-only attach is not mounted behind the operator\'s back');
  const fsck = await execFile('e2fsck', ['-fy', '-b', '8193', '-B', '1024', device]);
  t.true(fsck.code <= 1, fsck.stdout + fsck.stderr);

  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
  t.deepEqual(await leftovers(lab), []);
  const again = await lab.run(['target', 'attach', 'san1']);
  t.is(again.code, 0, again.stderr);
  t.is(await readFile(join(lab.mountpoint, 'marker'), 'utf8'), 'still here\n');
  t.is((await lab.run(['check', '--target', 'san1'])).code, 0);
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
});

test('a new LUN that reads as zeros is called empty and formats without --force; --force erases a LUN with data', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS, 'dd')) return;
  const lab = await iscsiLab(t);
  const att = await lab.run(['target', 'attach', 'san1']);
  t.is(att.code, 1);
  t.regex(att.stderr, /LUN 1 of \S+ at \S+ holds no filesystem \(it reads as zeros: a new LUN\).*drctl target format san1 --format/);
  t.is(json<{ filesystem: string }>(await lab.run(['target', 'test', 'san1', '--json'])).filesystem, 'none');

  // Some old data without any signature, 64 MiB in: refused, then erased with --force.
  await execFile('dd', ['if=/dev/urandom', `of=${lab.tgtd.lunFile}`, 'bs=1M', 'seek=64', 'count=1', 'conv=notrunc']);
  t.is((await lab.run(['target', 'format', 'san1', '--format'])).code, 2);
  const forced = await lab.run(['target', 'format', 'san1', '--format', '--force', '--json']);
  t.is(forced.code, 0, forced.stderr);
  t.like(json<{ erased: string; mmp: boolean }>(forced), { erased: 'data without a filesystem signature', mmp: true });
  t.is((await lab.run(['target', 'attach', 'san1'])).code, 0);
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
});

test('errors fsck -p will not fix: the advice is a block-only attach that exists, and following it repairs the volume', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS, 'e2fsck', 'debugfs', 'tune2fs')) return;
  const lab = await iscsiLab(t);
  await repositoryWithMarker(t, lab);
  // Root inode cleared and the filesystem flagged for a check: fsck -p stops ("RUN fsck MANUALLY").
  await execFile('debugfs', ['-w', '-R', 'clri <2>', lab.tgtd.lunFile]);
  await execFile('tune2fs', ['-E', 'force_fsck', lab.tgtd.lunFile]);

  const att = await lab.run(['target', 'attach', 'san1']);
  t.is(att.code, 1, att.stderr);
  t.regex(att.stderr, /target san1: the ext4 filesystem on LUN 1 of \S+ has errors fsck cannot fix automatically/);
  t.regex(att.stderr, /`drctl target attach san1 --no-mount` \(prints its device\), run `e2fsck -f DEVICE`/);
  t.notRegex(att.stderr, /\/dev\/loop\d+/, 'no loop device that was already released');
  t.notRegex(att.stderr, /block-only/);
  t.deepEqual(await leftovers(lab), []);

  const block = await lab.run(['target', 'attach', 'san1', '--no-mount', '--json']);
  t.is(block.code, 0, block.stderr);
  const fsck = await execFile('e2fsck', ['-fy', json<{ device: string }>(block).device]);
  t.true(fsck.code <= 1, fsck.stdout);
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
  t.is((await lab.run(['target', 'attach', 'san1'])).code, 0);
  // The root directory was rebuilt and what it held reconnected under lost+found (named by
  // inode number): the repository and the marker's content are all there.
  const found = await execFile('grep', ['-rlx', 'still here', join(lab.mountpoint, 'lost+found')]);
  t.is(found.code, 0, 'the marker file is in lost+found');
  t.regex(found.stdout, /lost\+found\/#\d+/);
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
});
