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
  /** `label` is the transport's ("host hv1 (root@10.0.0.5:22)"). `offered`: every key the host showed, when more than one was tried. */
  constructor(label: string, why: string, fingerprint: string, offered: { type: string; fingerprint: string }[] = []) {
    const keys = offered.length > 1 ? offered.map((k) => `${k.type} ${k.fingerprint}`).join(', ') : fingerprint;
    super(`${label}: ${why} (the host offers ${keys})`,
      `if you trust this key, pin it in the host file: hostKey: "${fingerprint}" (compare with \`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\` run on the host${offered.length > 1 ? '; any of the keys listed can be pinned, `ssh-keygen -lf /etc/ssh/ssh_host_TYPE_key.pub` for the others' : ''})`);
  }
}

/** The key type inside an SSH public key blob ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"). */
export function keyTypeOf(keyBlob: Buffer): string {
  if (keyBlob.length < 4) return 'unknown';
  const len = keyBlob.readUInt32BE(0);
  return len > 0 && len < 64 && keyBlob.length >= 4 + len ? keyBlob.subarray(4, 4 + len).toString('latin1') : 'unknown';
}

/** Host-key algorithms that produce a key of `keyType` (an RSA key is offered under three names). */
export function hostKeyAlgorithmsFor(keyType: string): string[] {
  return keyType === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [keyType];
}

/** The key type a host-key algorithm name stands for. */
export function keyTypeOfAlgorithm(algorithm: string): string {
  return /^rsa-sha2-/.test(algorithm) ? 'ssh-rsa' : algorithm;
}

/**
 * Key types the pin can match for `host:port`: the type of a pinned public key line, or of
 * the known_hosts entries for the host. Undefined when it cannot be known (a bare SHA256
 * fingerprint, or no entry for the host): then any key type must be tried. Restricting the
 * negotiation matters because a host offers one key per type and ssh2 takes ed25519 first;
 * a pinned ECDSA or RSA key would otherwise look like a changed key.
 */
export function pinnedKeyTypes(host: string, port: number, pin: HostKeyPin): string[] | undefined {
  if (pin.hostKey) {
    const want = pin.hostKey.trim();
    return want.startsWith('SHA256:') ? undefined : [want.split(/\s+/)[0] as string];
  }
  if (pin.knownHosts === undefined) return undefined;
  const types = knownHostsEntries(host, port, pin.knownHosts).map((e) => e.type);
  return types.length ? [...new Set(types)] : undefined;
}

function knownHostsEntries(host: string, port: number, knownHosts: string): { type: string; key: Buffer }[] {
  const names = port === 22 ? [host] : [`[${host}]:${port}`];
  const out: { type: string; key: Buffer }[] = [];
  for (const raw of knownHosts.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith('@revoked')) continue;
    const [patterns, type, b64] = line.split(/\s+/);
    if (!patterns || !type || !b64) continue;
    if (!patterns.split(',').some((p) => names.some((n) => matchPattern(p, n)))) continue;
    out.push({ type, key: Buffer.from(b64, 'base64') });
  }
  return out;
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
    const entries = knownHostsEntries(host, port, pin.knownHosts);
    if (entries.some((e) => e.key.equals(keyBlob))) return;
    const sawHost = entries.length > 0;
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
