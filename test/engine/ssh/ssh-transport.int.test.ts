/**
 * SSH failures an operator meets, against a real OpenSSH server on 127.0.0.1: key files drctl
 * cannot use, a login the host refuses, and host keys pinned by ECDSA or RSA fingerprint on a
 * host that also has an ed25519 key (the type ssh2 asks for first).
 */
import test from 'ava';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, startSshd, type Sshd } from '../../support/sshd.js';
import { requireTools } from '../../support/tools.js';
import { drctl } from '../../support/cli.js';
import { sharedTempDir } from '../../support/tmp.js';
import { HostKeyError, SshAuthError, openHostTransport, type HostSpec } from '../../../engine/ssh/index.js';
import { SshTransport } from '../../../engine/ssh/ssh-transport.js';
import { UsageError } from '../../../engine/errors.js';

interface Lab {
  dir: string;
  sshd: Sshd;
  /** A second sshd with ed25519, ecdsa and rsa host keys. */
  multi: { port: number; child: ChildProcess; fp: Record<'ed25519' | 'ecdsa' | 'rsa', string>; pub: Record<'ed25519' | 'ecdsa' | 'rsa', string> };
  encrypted: string;
  stranger: string;
}
let lab: Lab | undefined;

test.before(async () => {
  if (!['sshd', 'ssh-keygen', 'ss'].every((c) => execFileSync('sh', ['-c', `command -v ${c} || true`], { encoding: 'utf8' }).trim())) return;
  const dir = await sharedTempDir('drctl-ssh-');
  const sshd = await startSshd().catch(async (e: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw e;
  });
  const keygen = (file: string, ...args: string[]): void => void execFileSync('ssh-keygen', ['-q', ...args, '-f', file]);
  const encrypted = join(dir, 'encrypted_key');
  keygen(encrypted, '-t', 'ed25519', '-N', 'secret');
  // Authorized: same public key as the fixture's user key, so only the passphrase is in the way.
  await writeFile(join(sshd.dir, 'authorized_keys'), `${await readFile(`${sshd.keyFile}.pub`, 'utf8')}${await readFile(`${encrypted}.pub`, 'utf8')}`);
  const stranger = join(dir, 'stranger_key');
  keygen(stranger, '-t', 'ed25519', '-N', '');
  lab = { dir, sshd, multi: await startMultiKeySshd(sshd, dir), encrypted, stranger };
});

test.after.always(async () => {
  if (!lab) return;
  lab.multi.child.kill();
  await lab.sshd.stop();
  await rm(lab.dir, { recursive: true, force: true });
});

function ready(t: import('ava').ExecutionContext): Lab | undefined {
  return requireTools(t, 'sshd', 'ssh-keygen', 'ss') ? lab : undefined;
}

/** An sshd like the fixture's (same user key), on its own port, with three host keys. */
async function startMultiKeySshd(base: Sshd, dir: string): Promise<Lab['multi']> {
  const fp = {} as Lab['multi']['fp'];
  const pub = {} as Lab['multi']['pub'];
  const keys: string[] = [];
  for (const type of ['ed25519', 'ecdsa', 'rsa'] as const) {
    const file = join(dir, `host_${type}`);
    execFileSync('ssh-keygen', ['-q', '-t', type, ...(type === 'rsa' ? ['-b', '2048'] : []), '-N', '', '-f', file]);
    fp[type] = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${file}.pub`], { encoding: 'utf8' }).split(' ')[1] as string;
    pub[type] = (await readFile(`${file}.pub`, 'utf8')).trim().split(' ').slice(0, 2).join(' ');
    keys.push(`HostKey ${file}`);
  }
  const port = await freePort();
  const config = (await readFile(join(base.dir, 'sshd_config'), 'utf8')).split('\n')
    .filter((l) => !/^(Port|HostKey|PidFile) /.test(l));
  await writeFile(join(dir, 'sshd_config'), [`Port ${port}`, `PidFile ${join(dir, 'sshd.pid')}`, ...keys, ...config].join('\n'));
  const child = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !listening(port); i++) await new Promise((r) => setTimeout(r, 100));
  return { port, child, fp, pub };
}

function listening(port: number): boolean {
  return execFileSync('ss', ['-Htln', `sport = :${port}`], { encoding: 'utf8' }).trim() !== '';
}

/** TCP connections this process holds open to 127.0.0.1:port. */
function openConnections(port: number): number {
  return execFileSync('ss', ['-Htnp', 'state', 'established', `dport = :${port}`], { encoding: 'utf8' })
    .split('\n').filter((l) => l.includes(`pid=${process.pid},`)).length;
}

function spec(l: Lab, over: Partial<NonNullable<HostSpec['ssh']>>, port = l.sshd.port): HostSpec {
  return { name: 'hv1', file: 'hosts/hv1.yaml', driver: 'libvirt', ssh: { host: '127.0.0.1', port, user: l.sshd.user, keyFile: l.sshd.keyFile, hostKey: l.sshd.hostKey, ...over } };
}

async function run(h: HostSpec): Promise<string> {
  const tr = await openHostTransport(h);
  try {
    const r = await tr.exec('echo ok');
    return r.stdout.trim();
  } finally {
    await tr.close();
  }
}

test.serial('an encrypted key file is refused before any connection, naming ssh.keyFile (exit 2)', async (t) => {
  const l = ready(t);
  if (!l) return;
  const e = await t.throwsAsync(run(spec(l, { keyFile: l.encrypted })), { instanceOf: UsageError });
  t.regex(e?.message ?? '', /host hv1 \(hosts\/hv1\.yaml\): ssh\.keyFile \S+encrypted_key is encrypted with a passphrase - encrypted keys are not supported/);
  t.is(e?.exitCode, 2);
  t.is(openConnections(l.sshd.port), 0);
});

test.serial('a public key given as ssh.keyFile is refused before any connection (exit 2)', async (t) => {
  const l = ready(t);
  if (!l) return;
  const e = await t.throwsAsync(run(spec(l, { keyFile: `${l.sshd.keyFile}.pub` })), { instanceOf: UsageError });
  t.regex(e?.message ?? '', /ssh\.keyFile \S+user_key\.pub is a public key/);
  t.is(openConnections(l.sshd.port), 0);
});

test.serial('a transport given an unusable key opens no connection and does not retry', async (t) => {
  const l = ready(t);
  if (!l) return;
  const tr = new SshTransport('hv1', { host: '127.0.0.1', port: l.sshd.port, user: l.sshd.user, privateKey: await readFile(l.encrypted), keyFile: l.encrypted, pin: { hostKey: l.sshd.hostKey } });
  try {
    await t.throwsAsync(tr.exec('true'), { instanceOf: UsageError, message: /encrypted/ });
    t.is(openConnections(l.sshd.port), 0, 'no half-open SSH connection is left to sshd');
  } finally {
    await tr.close();
  }
});

test.serial('a key the host does not accept is a final authentication error naming the user and ssh.keyFile', async (t) => {
  const l = ready(t);
  if (!l) return;
  const e = await t.throwsAsync(run(spec(l, { keyFile: l.stranger })), { instanceOf: SshAuthError });
  t.regex(e?.message ?? '', new RegExp(`authentication failed - the host did not accept the key in ssh\\.keyFile \\S+stranger_key for user ${l.sshd.user}`));
  t.regex(e?.hint ?? '', /ssh\.user and ssh\.keyFile in hosts\/hv1\.yaml/);
  t.notRegex(e?.message ?? '', /attempts/);
  t.is(openConnections(l.sshd.port), 0);
});

test.serial('drctl hosts test: unusable key and refused login exit 2 with the reason; the process does not linger', async (t) => {
  const l = ready(t);
  if (!l) return;
  const config = join(l.dir, 'config');
  await mkdir(join(config, 'hosts'), { recursive: true });
  const host = (key: string): string => `driver: libvirt\nssh:\n  host: 127.0.0.1\n  port: ${l.sshd.port}\n  user: ${l.sshd.user}\n  keyFile: ${key}\n  hostKey: "${l.sshd.hostKey}"\n`;
  await writeFile(join(config, 'hosts', 'enc.yaml'), host(l.encrypted));
  await writeFile(join(config, 'hosts', 'who.yaml'), host(l.stranger));
  const enc = await drctl(['hosts', 'test', 'enc', '--config', config]);
  t.is(enc.code, 2, enc.stderr);
  t.regex(enc.stderr, /ssh\.keyFile \S+ is encrypted with a passphrase/);
  const who = await drctl(['hosts', 'test', 'who', '--config', config]);
  t.is(who.code, 2, who.stderr);
  t.regex(who.stderr, /authentication failed/);
  t.notRegex(who.stderr, /check that the host is up/);
});

for (const type of ['ecdsa', 'rsa'] as const) {
  test.serial(`a host with ed25519, ecdsa and rsa keys: its ${type} key pinned by fingerprint, by key line or in known_hosts connects`, async (t) => {
    const l = ready(t);
    if (!l) return;
    const m = l.multi;
    const kh = join(l.dir, `known_hosts_${type}`);
    await writeFile(kh, `[127.0.0.1]:${m.port} ${m.pub[type]}\n`);
    t.is(await run(spec(l, { hostKey: m.fp[type] }, m.port)), 'ok');
    t.is(await run(spec(l, { hostKey: m.pub[type] }, m.port)), 'ok');
    t.is(await run(spec(l, { hostKey: undefined, knownHosts: kh }, m.port)), 'ok');
  });
}

test.serial('a fingerprint that matches none of the host\'s keys lists every key offered; the label is not doubled', async (t) => {
  const l = ready(t);
  if (!l) return;
  const m = l.multi;
  const e = await t.throwsAsync(run(spec(l, { hostKey: `SHA256:${'A'.repeat(43)}` }, m.port)), { instanceOf: HostKeyError });
  const msg = e?.message ?? '';
  t.regex(msg, /^host hv1 \(\S+\): host key does not match the pinned hostKey/);
  t.notRegex(msg, /host host/);
  for (const type of ['ed25519', 'ecdsa', 'rsa'] as const) t.true(msg.includes(m.fp[type]), `${type} missing: ${msg}`);
  t.is(openConnections(m.port), 0);
  // the fixture's single-key host: one fingerprint, as before
  const one = await t.throwsAsync(run(spec(l, { hostKey: `SHA256:${'A'.repeat(43)}` })), { instanceOf: HostKeyError });
  t.true(one?.message.includes(l.sshd.hostKey));
});

