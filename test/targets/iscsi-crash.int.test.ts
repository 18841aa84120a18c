/**
 * drctl killed with -9 while attaching must not wedge the target: `detach` and the next
 * `attach` clean up by evidence (the daemon's pid file, the FUSE mount on the export file, the
 * loop devices on it) and the copy of the CHAP secret never stays on disk.
 */
import test from 'ava';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from '../../engine/runtime/exec.js';
import { json } from '../support/cli.js';
import { requireTools } from '../support/tools.js';
import { ISCSI_TOOLS, iscsiLab, leftovers, type Lab } from './iscsi-lab.js';

const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

/** Start `target attach san1`, kill it with -9 as soon as `moment` is true. */
async function killAttachWhen(lab: Lab, moment: () => Promise<boolean>): Promise<void> {
  const child = lab.start(['target', 'attach', 'san1']);
  const exited = new Promise((res) => child.once('exit', res));
  for (let i = 0; i < 20_000 && child.exitCode === null && !(await moment()); i++) await new Promise((r) => setTimeout(r, 1));
  child.kill('SIGKILL');
  await exited;
}

test('kill -9 during attach: detach removes the daemon, FUSE mount, loop device and secret copy; the next attach and test work', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS)) return;
  const lab = await iscsiLab(t);
  t.is((await lab.run(['target', 'format', 'san1', '--format'])).code, 0);
  const dir = join(lab.state, 'targets', 'san1');
  const exportFile = join(dir, 'lun.raw');
  const secretCopy = join(dir, 'chap.secret');
  const moments: [string, () => Promise<boolean>][] = [
    ['the secret copy is written', () => exists(secretCopy)],
    ['the FUSE export is up', async () => (await readFile('/proc/self/mountinfo', 'utf8')).includes(exportFile)],
    ['the loop device is set up', async () => (await execFile('losetup', ['--list', '--noheadings', '--output', 'BACK-FILE'])).stdout.includes(exportFile)],
  ];
  for (const [when, moment] of moments) {
    await killAttachWhen(lab, moment);
    const d = await lab.run(['target', 'detach', 'san1']);
    t.is(d.code, 0, `${when}: ${d.stderr}`);
    t.deepEqual(await leftovers(lab), [], `${when}: detach left something`);
    t.false(await exists(secretCopy), `${when}: the CHAP secret copy is still on disk`);
  }

  // Killed again; this time the next command is an attach, not a detach.
  await killAttachWhen(lab, moments[1]![1]);
  const att = await lab.run(['target', 'attach', 'san1']);
  t.is(att.code, 0, att.stderr);
  t.notRegex(att.stderr, /unexpected error|ENOTCONN/);
  t.false(await exists(secretCopy));
  const tested = await lab.run(['target', 'test', 'san1', '--json']);
  t.is(tested.code, 0, tested.stdout + tested.stderr);
  t.like(json<{ login: string; filesystem: string }>(tested), { login: 'ok', filesystem: 'ext4' });
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
  t.deepEqual(await leftovers(lab), []);
});

test('a CHAP secret copy left by an older drctl is removed by the next detach or attach', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS)) return;
  const lab = await iscsiLab(t);
  t.is((await lab.run(['target', 'format', 'san1', '--format'])).code, 0);
  const secretCopy = join(lab.state, 'targets', 'san1', 'chap.secret');
  await writeFile(secretCopy, lab.tgtd.chapSecret, { mode: 0o600 });
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
  t.false(await exists(secretCopy));
  await writeFile(secretCopy, lab.tgtd.chapSecret, { mode: 0o600 });
  t.is((await lab.run(['target', 'attach', 'san1'])).code, 0);
  t.false(await exists(secretCopy));
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
});
