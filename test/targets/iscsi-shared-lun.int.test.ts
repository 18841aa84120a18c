/**
 * One LUN mounted twice at once loses data: two target names for it, two state folders on one
 * machine, or a production node and a spare DR node. Real tgtd, userspace attach; "another
 * machine" is a loop device on the LUN's backing file mounted in its own mount namespace.
 */
import test from 'ava';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from '../../engine/runtime/exec.js';
import { drctl, json } from '../support/cli.js';
import { makeRawImage, seededBytes, MiB } from '../support/images.js';
import { requireTools } from '../support/tools.js';
import { ISCSI_TOOLS, iscsiLab, leftovers, mountOnOtherMachine, type Lab } from './iscsi-lab.js';

async function san1b(lab: Lab): Promise<void> {
  const yaml = await readFile(join(lab.config, 'targets', 'san1.yaml'), 'utf8');
  await lab.writeTarget('san1b', yaml.replace(lab.mountpoint, `${lab.mountpoint}b`));
}

test('one LUN under two target names, or from a second state folder, is refused while attached; the committed point survives', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS)) return;
  const lab = await iscsiLab(t);
  await san1b(lab);
  const image = join(lab.dir, 'disk.raw');
  await makeRawImage(image, 4 * MiB, [{ offset: 0, data: seededBytes('one', 3 * MiB) }]);
  t.is((await lab.run(['target', 'format', 'san1', '--format'])).code, 0);
  t.is((await lab.run(['target', 'attach', 'san1'])).code, 0);

  const twice = await lab.run(['target', 'attach', 'san1b']);
  t.is(twice.code, 1, twice.stderr);
  t.regex(twice.stderr, /target san1b: LUN 1 of \S+ at \S+ is already attached as target san1 \(mounted on \S+\/mnt\/san1\)/);
  t.regex(twice.stderr, /use target san1, or detach it first/);
  const erase = await lab.run(['target', 'format', 'san1b', '--format', '--force']);
  t.is(erase.code, 1, 'not even --force formats a LUN mounted under another name');
  t.regex(erase.stderr, /already attached as target san1/);

  // Another state folder (the default is relative to the working directory) sees no record.
  const state2 = join(lab.dir, 'state2');
  const other = await drctl(['target', 'attach', 'san1b', '--config', lab.config, '--state', state2]);
  t.is(other.code, 1, other.stderr);
  t.regex(other.stderr, /the ext4 filesystem on LUN 1 of \S+ \(UUID [-0-9a-f]+\) is already mounted on \S+\/mnt\/san1 by target san1 of state folder \S+\/state - mounting it a second time would corrupt it/);
  const sameName = await drctl(['target', 'attach', 'san1', '--config', lab.config, '--state', state2]);
  t.is(sameName.code, 1);
  t.regex(sameName.stderr, /mountpoint \S+ is already in use - \/dev\/loop\d+ is mounted there by target san1 of state folder/);
  const detachThere = await drctl(['target', 'detach', 'san1', '--config', lab.config, '--state', state2]);
  t.is(detachThere.code, 1, 'not "was not attached" while it is mounted');
  t.regex(detachThere.stderr, new RegExp(`target san1 is not attached in state folder ${state2}, but its mountpoint \\S+ is mounted \\(/dev/loop\\d+\\) by target san1 of state folder ${lab.state}`));
  t.regex(detachThere.stderr, new RegExp(`drctl target detach san1 --state ${lab.state}`));

  t.is((await lab.run(['init', '--target', 'san1'])).code, 0);
  const b = await lab.run(['backup', '--target', 'san1', '--image', image, '--name', 'vm1', '--json']);
  t.is(b.code, 0, b.stderr);
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
  t.deepEqual(await leftovers(lab), []);

  // Detached: the other name may use the LUN now, and sees the point.
  t.is((await lab.run(['target', 'attach', 'san1b'])).code, 0);
  const points = json<{ id: string }[]>(await lab.run(['points', '--target', 'san1b', '--json']));
  t.deepEqual(points.map((p) => p.id), [json<{ id: string }>(b).id]);
  t.is((await lab.run(['check', '--target', 'san1b'])).code, 0);
  t.is((await lab.run(['target', 'detach', 'san1b'])).code, 0);
});

test('drctl formats ext4 with multi-mount protection: another machine cannot mount it while it is attached here, and drctl refuses it while another machine has it', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS, 'dumpe2fs', 'unshare')) return;
  const lab = await iscsiLab(t);
  t.is((await lab.run(['target', 'format', 'san1', '--format'])).code, 0);
  t.regex((await execFile('dumpe2fs', ['-h', lab.tgtd.lunFile])).stdout, /^Filesystem features:.*\bmmp\b/m);

  t.is((await lab.run(['target', 'attach', 'san1'])).code, 0);
  await writeFile(join(lab.mountpoint, 'mine'), 'attached here\n');
  // This kernel honours MMP: the other machine's mount fails while drctl has it mounted.
  await t.throwsAsync(mountOnOtherMachine(t, lab), { message: /could not mount the LUN/ });
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);

  const elsewhere = await mountOnOtherMachine(t, lab);
  const refused = await lab.run(['target', 'attach', 'san1']);
  t.is(refused.code, 1, refused.stderr);
  t.regex(refused.stderr, /target san1: the ext4 filesystem on LUN 1 of \S+ at \S+ is in use by another machine \(multi-mount protection: last updated by node \S+/);
  t.regex(refused.stderr, /detach it there first/);
  t.deepEqual(await leftovers(lab), [], 'nothing stays attached here');
  await elsewhere.stop();

  t.is((await lab.run(['target', 'attach', 'san1'])).code, 0);
  t.is(await readFile(join(lab.mountpoint, 'mine'), 'utf8'), 'attached here\n');
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
});

test('an ext4 without multi-mount protection whose journal needs recovery is not checked or mounted unless the operator says no one else has it', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS, 'mkfs.ext4', 'unshare')) return;
  const lab = await iscsiLab(t);
  // As an older drctl formatted it: no MMP.
  await execFile('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', lab.tgtd.lunFile]);
  const att = await lab.run(['target', 'attach', 'san1']);
  t.is(att.code, 0, att.stderr);
  t.regex(att.stderr, /its ext4 has no multi-mount protection/);
  await writeFile(join(lab.mountpoint, 'data'), 'before\n');
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);

  // Mounted on the other machine: its journal is live, drctl cannot tell that from a crash.
  const elsewhere = await mountOnOtherMachine(t, lab);
  const crashed = join(lab.dir, 'crashed.img');
  await execFile('sync', []);
  await copyFile(lab.tgtd.lunFile, crashed);
  const refused = await lab.run(['target', 'attach', 'san1']);
  t.is(refused.code, 1, refused.stderr);
  t.regex(refused.stderr, /target san1: the ext4 filesystem on LUN 1 of \S+ at \S+ was not unmounted cleanly \(its journal needs recovery\) and has no multi-mount protection, so drctl cannot tell whether another machine has it mounted now - nothing was checked or mounted/);
  t.regex(refused.stderr, /drctl target attach san1 --force/);
  t.regex(refused.stderr, /tune2fs -O mmp/);
  t.deepEqual(await leftovers(lab), []);
  await elsewhere.stop();

  // The same image after a crash of that machine: the operator knows, --force replays the journal.
  await copyFile(crashed, lab.tgtd.lunFile);
  t.is((await lab.run(['target', 'attach', 'san1'])).code, 1);
  const forced = await lab.run(['target', 'attach', 'san1', '--force']);
  t.is(forced.code, 0, forced.stderr);
  t.is(await readFile(join(lab.mountpoint, 'data'), 'utf8'), 'before\n');
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
});
