/**
 * A secret pasted where a config file wants the path of the file holding it (a CHAP password in
 * chap.secretFile, a private key in ssh.keyFile) is reported as a problem without being
 * printed: not by `policy validate`, not by `status --json`, not in the daemon's reload log.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json, startDrctl } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { collect, exited, waitFor } from '../daemon/daemon-env.js';

const CHAP_SECRET = 'Pa55w0rd-SAN!';
const KEY = '-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAABG5vbmU';

const san = (secretFile: string): string =>
  `type: iscsi\nportal: 192.0.2.20:3260\niqn: iqn.2026-01.com.example:backup\nlun: 1\nchap: { user: drctl, secretFile: ${JSON.stringify(secretFile)} }\nfilesystem: ext4\nmountpoint: /mnt/drctl/san1\n`;
const hv = (keyFile: string): string =>
  `driver: libvirt\nssh:\n  host: 10.0.0.5\n  user: root\n  keyFile: ${JSON.stringify(keyFile)}\n  knownHosts: /etc/drctl/known_hosts\n`;

async function configFolder(t: ExecutionContext, secrets: boolean): Promise<{ config: string; args: string[] }> {
  const dir = await tempDir(t);
  const config = join(dir, 'config');
  for (const sub of ['policies', 'targets', 'hosts']) await mkdir(join(config, sub), { recursive: true });
  await writeFile(join(config, 'targets', 'san1.yaml'), san(secrets ? CHAP_SECRET : '/etc/drctl/secrets/san1'));
  await writeFile(join(config, 'hosts', 'hv1.yaml'), hv(secrets ? KEY : '/etc/drctl/keys/id_ed25519'));
  await writeFile(join(config, 'policies', 'web.yaml'), 'name: web\ntarget: san1\nsources:\n  - path: /srv/www\nretention:\n  generations: 3\n');
  return { config, args: ['--config', config, '--state', join(dir, 'state')] };
}

function assertHidden(t: ExecutionContext, text: string): void {
  t.false(text.includes('Pa55w0rd'), `the CHAP secret is printed:\n${text}`);
  t.false(text.includes('PRIVATE KEY'), `the private key is printed:\n${text}`);
}

test('policy validate and status --json name the field of a pasted secret but never print it', async (t) => {
  const { args } = await configFolder(t, true);
  const v = await drctl(['policy', 'validate', ...args]);
  t.is(v.code, 2);
  assertHidden(t, v.stdout + v.stderr);
  t.regex(v.stdout + v.stderr, /san1\.yaml:5:\d+: chap\.secretFile: expected the absolute path of a file holding the CHAP secret, got a text of 13 characters \(not shown: it may be a secret\) - write it like secretFile: \/etc\/drctl\/secrets\/san1/);
  t.regex(v.stdout + v.stderr, /hv1\.yaml:5:\d+: ssh\.keyFile: expected the absolute path of a private key, got a text of \d+ characters \(not shown: it may be a secret\)/);

  const s = await drctl(['status', '--json', ...args]);
  t.is(s.code, 2);
  assertHidden(t, s.stdout + s.stderr);
  const doc = json<{ problems: { path: string; message: string }[] }>(s);
  const secretFields = doc.problems.filter((p) => /secret|key/i.test(p.path));
  t.deepEqual(secretFields.map((p) => p.path).sort(), ['chap.secretFile', 'ssh.keyFile']);
  for (const p of secretFields) t.regex(p.message, /got a text of \d+ characters \(not shown: it may be a secret\)$/);
});

test('the daemon\'s reload log names a pasted secret\'s field without printing it', async (t) => {
  const { config, args } = await configFolder(t, false);
  const child = startDrctl(['daemon', ...args]);
  const out = collect(child);
  t.teardown(() => void child.kill('SIGKILL'));
  await waitFor(child, /daemon started/, out);
  await writeFile(join(config, 'targets', 'san1.yaml'), san(CHAP_SECRET));
  child.kill('SIGHUP');
  await waitFor(child, /chap\.secretFile/, out);
  child.kill('SIGTERM');
  await exited(child);
  assertHidden(t, out.text + out.err);
  t.regex(out.text, /chap\.secretFile: expected the absolute path of a file holding the CHAP secret, got a text of 13 characters \(not shown: it may be a secret\)/);
});
