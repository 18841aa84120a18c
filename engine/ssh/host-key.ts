/**
 * Host-key pinning. drctl talks only to hosts whose key it knows: a pinned SHA-256
 * fingerprint (the `ssh-keygen -lf` form, "SHA256:" + unpadded base64) or a public key line,
 * or an OpenSSH known_hosts file (plain host patterns, `[host]:port` for other ports; hashed
 * entries are matched too). An unknown or changed key fails with the fingerprint to pin.
 */
import { createHash, createHmac } from 'node:crypto';
import { DrError, ExitCode } from '../errors.js';

export function fingerprintOf(keyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;
}

export class HostKeyError extends DrError {
  readonly code = 'HOST_KEY';
  readonly exitCode = ExitCode.failed;
  constructor(host: string, why: string, fingerprint: string) {
    super(`host ${host}: ${why} (the host offers ${fingerprint})`,
      `if you trust this key, pin it in the host file: hostKey: "${fingerprint}" (compare with \`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\` run on the host)`);
  }
}

export interface HostKeyPin {
  hostKey?: string;
  /** Contents of a known_hosts file. */
  knownHosts?: string;
}

/** Throws HostKeyError unless `keyBlob` matches the pin for `host:port`. */
export function checkHostKey(label: string, host: string, port: number, keyBlob: Buffer, pin: HostKeyPin): void {
  const fp = fingerprintOf(keyBlob);
  if (pin.hostKey) {
    const want = pin.hostKey.trim();
    const ok = want.startsWith('SHA256:')
      ? want.replace(/=+$/, '') === fp
      : Buffer.from(want.split(/\s+/)[1] ?? '', 'base64').equals(keyBlob);
    if (!ok) throw new HostKeyError(label, `host key does not match the pinned hostKey - the key changed or this is another machine`, fp);
    return;
  }
  if (pin.knownHosts !== undefined) {
    const names = port === 22 ? [host] : [`[${host}]:${port}`];
    let sawHost = false;
    for (const raw of pin.knownHosts.split('\n')) {
      const line = raw.trim();
      if (!line || line.startsWith('#') || line.startsWith('@revoked')) continue;
      const [patterns, , b64] = line.split(/\s+/);
      if (!patterns || !b64) continue;
      if (!patterns.split(',').some((p) => names.some((n) => matchPattern(p, n)))) continue;
      sawHost = true;
      if (Buffer.from(b64, 'base64').equals(keyBlob)) return;
    }
    throw new HostKeyError(label, sawHost ? 'host key does not match known_hosts - the key changed or this is another machine' : 'host is not in the known_hosts file', fp);
  }
  throw new HostKeyError(label, 'no hostKey or knownHosts is configured', fp);
}

function matchPattern(pattern: string, name: string): boolean {
  if (pattern.startsWith('|1|')) {
    const [, , salt, hash] = pattern.split('|');
    if (!salt || !hash) return false;
    return createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64') === hash;
  }
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
  return re.test(name);
}
