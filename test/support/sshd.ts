/**
 * A real OpenSSH server on 127.0.0.1 and a random port, for one test file: generated host and
 * user keys in a temp dir, public-key login as the current user, streamlocal forwarding on.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile, chmod, rm, mkdtemp } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

export interface Sshd {
  port: number;
  user: string;
  keyFile: string;
  /** "SHA256:…" of the host key, as hosts/*.yaml pins it. */
  hostKey: string;
  /** A known_hosts file for [127.0.0.1]:port. */
  knownHosts: string;
  dir: string;
  /** Kill the per-connection sshd processes (drops every open SSH connection). */
  dropConnections(): number;
  stop(): Promise<void>;
}

export async function startSshd(): Promise<Sshd> {
  const dir = await mkdtemp(join(tmpdir(), 'drctl-sshd-'));
  await mkdir('/run/sshd', { recursive: true });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'user_key')]);
  await writeFile(join(dir, 'authorized_keys'), await readFile(join(dir, 'user_key.pub')));
  await chmod(join(dir, 'authorized_keys'), 0o600);
  const hostKey = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', join(dir, 'host_key.pub')], { encoding: 'utf8' }).split(' ')[1] as string;
  const port = await freePort();
  const pub = (await readFile(join(dir, 'host_key.pub'), 'utf8')).trim().split(' ').slice(0, 2).join(' ');
  await writeFile(join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${pub}\n`);
  await writeFile(join(dir, 'sshd_config'), [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${join(dir, 'host_key')}`, `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, 'UsePAM no', 'StrictModes no', 'PasswordAuthentication no',
    'KbdInteractiveAuthentication no', 'PermitRootLogin prohibit-password', 'AllowStreamLocalForwarding yes',
    'AllowTcpForwarding yes',
    // bash sources ~/.bashrc for ssh commands unless SHLVL says it is nested; this machine's
    // root .bashrc takes ~1 s (pyenv), which would otherwise dominate every remote command.
    // MaxSessions stays at OpenSSH's default (10 channels per connection), as on the hosts drctl
    // meets: a VM backup or restore that opened more channels than that fails here too.
    'SetEnv SHLVL=1', 'MaxStartups 64', 'LogLevel ERROR', '',
  ].join('\n'));
  const child: ChildProcess = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  await waitForPort(port, 10_000).catch((e: Error) => {
    child.kill();
    throw new Error(`sshd did not start: ${e.message}\n${stderr}`);
  });
  return {
    port, user: userInfo().username, keyFile: join(dir, 'user_key'), hostKey, knownHosts: join(dir, 'known_hosts'), dir,
    dropConnections() {
      const kids = execFileSync('sh', ['-c', `pgrep -P ${child.pid} || true`], { encoding: 'utf8' }).split('\n').filter(Boolean);
      for (const k of kids) process.kill(Number(k), 'SIGKILL');
      return kids.length;
    },
    async stop() {
      child.kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

async function waitForPort(port: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
