/**
 * Hosts are reached over SSH (ssh2), one pooled connection per host with pinned host keys.
 * `openHostTransport` turns a host definition from the config folder into a transport.
 */
import { readFile } from 'node:fs/promises';
import { SshTransport } from './ssh-transport.js';
import { LocalTransport } from './local-transport.js';
import type { HostTransport } from './transport.js';
import { UsageError } from '../errors.js';
import { checkPrivateKey } from './private-key.js';

export { shq, HostUnreachableError, RemoteCommandError, SshAuthError, type HostTransport, type RemoteResult } from './transport.js';
export { HostKeyError, fingerprintOf, checkHostKey } from './host-key.js';

/** A host as the engine sees it (policies' HostConfig is assignable). */
export interface HostSpec {
  name: string;
  file?: string;
  driver: 'libvirt' | 'hyperv' | 'local';
  ssh?: { host: string; port: number; user: string; keyFile?: string; hostKey?: string; knownHosts?: string };
  uri?: string;
}

export async function openHostTransport(h: HostSpec): Promise<HostTransport> {
  if (!h.ssh) return new LocalTransport(h.name);
  const s = h.ssh;
  const where = h.file ? ` (${h.file})` : '';
  const read = async (path: string, field: string): Promise<Buffer> => {
    try {
      return await readFile(path);
    } catch (e) {
      throw new UsageError(`host ${h.name}${where}: cannot read ssh.${field} ${path} - ${(e as Error).message}`, `fix ssh.${field} in the host file`);
    }
  };
  const privateKey = s.keyFile ? await read(s.keyFile, 'keyFile') : undefined;
  if (privateKey) checkPrivateKey(privateKey, `host ${h.name}${where}: ssh.keyFile ${s.keyFile}`);
  return new SshTransport(h.name, {
    host: s.host, port: s.port, user: s.user,
    ...(privateKey ? { privateKey, keyFile: s.keyFile } : {}),
    ...(h.file ? { hostFile: h.file } : {}),
    pin: { hostKey: s.hostKey, ...(s.knownHosts ? { knownHosts: (await read(s.knownHosts, 'knownHosts')).toString('utf8') } : {}) },
  });
}
