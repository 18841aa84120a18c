/**
 * One pooled ssh2 connection per host. The connection is opened on first use and reused by
 * every command and socket of that host; when it drops (sshd restarted, network blip), the
 * next use reconnects with backoff (0.5, 1, 2, 4 s) and then fails with a clear message.
 * Keepalives detect a dead peer in ~15 s, and every command has a timeout: nothing hangs.
 * A changed host key, a refused login or an unusable key file fail at once, without retries.
 */
import { connect as tcpConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Client, type ClientChannel } from 'ssh2';
import { checkHostKey, fingerprintOf, HostKeyError, hostKeyAlgorithmsFor, keyTypeOf, keyTypeOfAlgorithm, pinnedKeyTypes, type HostKeyPin } from './host-key.js';
import { checkPrivateKey } from './private-key.js';
import { HostUnreachableError, SshAuthError, type ExecOptions, type HostTransport, type RemoteResult } from './transport.js';

export interface SshEndpoint {
  host: string;
  port: number;
  user: string;
  privateKey?: Buffer;
  /** Where privateKey came from, and the host file: named in messages. */
  keyFile?: string;
  hostFile?: string;
  pin: HostKeyPin;
  connectTimeoutMs?: number;
  /** Connection attempts before giving up (default 4). */
  attempts?: number;
}

const BACKOFF_MS = [500, 1000, 2000, 4000];

export class SshTransport implements HostTransport {
  readonly label: string;
  private client?: Promise<Client>;
  private inBytes = 0;
  private outBytes = 0;
  private closed = false;

  constructor(name: string, private readonly ep: SshEndpoint) {
    this.label = `host ${name} (${ep.user}@${ep.host}:${ep.port})`;
  }

  get bytesIn(): number {
    return this.inBytes;
  }

  get bytesOut(): number {
    return this.outBytes;
  }

  async exec(command: string, opts: ExecOptions = {}): Promise<RemoteResult> {
    const client = await this.connection();
    const timeoutMs = opts.timeoutMs ?? 120_000;
    return new Promise<RemoteResult>((resolve, reject) => {
      let ch: ClientChannel | undefined;
      const timer = setTimeout(() => {
        ch?.close();
        reject(new HostUnreachableError(this.label, `command did not finish within ${Math.round(timeoutMs / 1000)} s: ${command.slice(0, 80)}`));
      }, timeoutMs);
      const onAbort = (): void => {
        ch?.close();
        clearTimeout(timer);
        reject(new HostUnreachableError(this.label, 'interrupted'));
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      client.exec(command, (err, channel) => {
        if (err) {
          clearTimeout(timer);
          reject(new HostUnreachableError(this.label, `cannot run a command: ${err.message}`, { cause: err }));
          return;
        }
        ch = channel;
        const out: Buffer[] = [];
        const errOut: Buffer[] = [];
        let code = -1;
        channel.on('data', (b: Buffer) => out.push(b));
        channel.stderr.on('data', (b: Buffer) => errOut.push(b));
        channel.on('exit', (c: number | null) => {
          code = c ?? 255;
        });
        channel.on('close', () => {
          clearTimeout(timer);
          opts.signal?.removeEventListener('abort', onAbort);
          if (code === -1) {
            reject(new HostUnreachableError(this.label, `connection lost while running: ${command.slice(0, 80)}`));
            return;
          }
          resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(errOut).toString('utf8') });
        });
        if (opts.stdin !== undefined) channel.end(opts.stdin);
        else channel.end();
      });
    });
  }

  async openUnixSocket(path: string): Promise<Duplex> {
    const client = await this.connection();
    return new Promise<Duplex>((resolve, reject) => {
      client.openssh_forwardOutStreamLocal(path, (err, stream) => {
        if (err) reject(new HostUnreachableError(this.label, `cannot open ${path} on the host (AllowStreamLocalForwarding in sshd_config?): ${err.message}`, { cause: err }));
        else resolve(stream);
      });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const c = await this.client?.catch(() => undefined);
    this.client = undefined;
    c?.end();
  }

  /** The live connection, or a new one (with retries). */
  private connection(): Promise<Client> {
    if (this.closed) return Promise.reject(new HostUnreachableError(this.label, 'connection was closed'));
    if (!this.client) {
      this.client = this.connectWithRetry();
      this.client.catch(() => {
        this.client = undefined;
      });
    }
    return this.client;
  }

  private async connectWithRetry(): Promise<Client> {
    if (this.ep.privateKey) checkPrivateKey(this.ep.privateKey, `${this.label}: ssh.keyFile${this.ep.keyFile ? ` ${this.ep.keyFile}` : ''}`);
    const attempts = this.ep.attempts ?? BACKOFF_MS.length;
    let last: unknown;
    for (let i = 0; i < attempts; i++) {
      try {
        return await this.connectPinned();
      } catch (e) {
        // A wrong host key or a refused login does not get better by retrying.
        if (e instanceof HostKeyError || e instanceof SshAuthError) throw e;
        last = e;
        if (i + 1 < attempts) await new Promise((r) => setTimeout(r, BACKOFF_MS[i] ?? 4000));
      }
    }
    throw new HostUnreachableError(this.label, `cannot connect after ${attempts} attempts: ${(last as Error)?.message ?? last}`, { cause: last });
  }

  /**
   * A connection whose host key matches the pin. A host has one key per type and ssh2 asks for
   * ed25519 first, so the negotiation is limited to the pinned key's type when the pin says
   * it. A bare SHA256 fingerprint does not: then each other key type the host offers is
   * tried in turn, and the error lists every key seen.
   */
  private async connectPinned(): Promise<Client> {
    const types = pinnedKeyTypes(this.ep.host, this.ep.port, this.ep.pin);
    const algorithms = types && supported(types.flatMap(hostKeyAlgorithmsFor));
    const seen: Handshake = { offered: [], keys: [] };
    try {
      return await this.connectOnce(algorithms?.length ? algorithms : undefined, seen);
    } catch (e) {
      const bareFingerprint = this.ep.pin.hostKey?.trim().startsWith('SHA256:') ?? false;
      if (!(e instanceof HostKeyError) || !bareFingerprint || !seen.keys[0]) throw e;
      const tried = new Set(seen.keys.map((k) => keyTypeOf(k)));
      for (const type of [...new Set(seen.offered.map(keyTypeOfAlgorithm))]) {
        const algs = supported(hostKeyAlgorithmsFor(type));
        if (tried.has(type) || !algs.length) continue;
        tried.add(type);
        try {
          return await this.connectOnce(algs, seen);
        } catch (e2) {
          if (!(e2 instanceof HostKeyError)) throw e2;
        }
      }
      const offered = seen.keys.map((k) => ({ type: keyTypeOf(k), fingerprint: fingerprintOf(k) }));
      if (offered.length < 2) throw e;
      throw new HostKeyError(this.label, `host key does not match the pinned hostKey - none of the host's ${offered.length} keys is the pinned one: the key changed or this is another machine`, offered[0]?.fingerprint ?? '', offered);
    }
  }

  /** One connection attempt. Whatever fails, the TCP socket is destroyed (sshd would hold it until LoginGraceTime). */
  private connectOnce(serverHostKey: string[] | undefined, seen: Handshake): Promise<Client> {
    return new Promise<Client>((resolve, reject) => {
      const sock: Socket = tcpConnect({ host: this.ep.host, port: this.ep.port });
      sock.on('data', (b: Buffer) => {
        this.inBytes += b.length;
      });
      const write = sock.write.bind(sock) as (chunk: unknown, ...rest: unknown[]) => boolean;
      // Count what we send: wrap write on the socket we own (ssh2 writes through it).
      sock.write = ((chunk: unknown, ...rest: unknown[]) => {
        this.outBytes += (chunk as { length?: number }).length ?? 0;
        return write(chunk, ...rest);
      }) as typeof sock.write;
      const client = new Client();
      let keyError: HostKeyError | undefined;
      let ready = false;
      let failed = false;
      const fail = (e: unknown): void => {
        if (ready || failed) return;
        failed = true;
        sock.destroy();
        reject(e);
      };
      client.on('ready', () => {
        ready = true;
        resolve(client);
      });
      client.on('error', (err: Error & { level?: string }) => {
        if (err.level === 'client-authentication') fail(new SshAuthError(this.label, this.ep.user, this.ep.keyFile, this.ep.hostFile ? ` in ${this.ep.hostFile}` : ' in the host file', { cause: err }));
        else fail(keyError ?? new HostUnreachableError(this.label, err.message, { cause: err }));
      });
      client.on('close', () => {
        fail(keyError ?? new HostUnreachableError(this.label, 'connection closed during the handshake'));
        // A dropped connection is replaced on next use (unless a newer one already replaced it).
        const current = this.client;
        if (ready && current) {
          void current.then((c) => {
            if (c === client && this.client === current) this.client = undefined;
          }, () => undefined);
        }
      });
      try {
        client.connect({
          sock,
          username: this.ep.user,
          ...(this.ep.privateKey ? { privateKey: this.ep.privateKey } : {}),
          ...(serverHostKey ? { algorithms: { serverHostKey: serverHostKey as never } } : {}),
          readyTimeout: this.ep.connectTimeoutMs ?? 15_000,
          keepaliveInterval: 5000,
          keepaliveCountMax: 3,
          // The host-key algorithms the server offers are only visible in ssh2's debug output.
          debug: (line: string) => {
            const m = /^Handshake: \(remote\) Host key format: (.*)$/.exec(line);
            if (m?.[1]) seen.offered = m[1].split(',');
          },
          hostVerifier: (key: Buffer) => {
            seen.keys.push(key);
            try {
              checkHostKey(this.label, this.ep.host, this.ep.port, key, this.ep.pin);
              return true;
            } catch (e) {
              keyError = e as HostKeyError;
              return false;
            }
          },
        });
      } catch (e) {
        fail(e);
      }
    });
  }
}

/** What a handshake showed: the host-key algorithms the server offers, the keys it presented. */
interface Handshake {
  offered: string[];
  keys: Buffer[];
}

function supported(algorithms: string[]): string[] {
  return algorithms.filter((a) => SUPPORTED_HOST_KEY_ALGORITHMS.includes(a));
}

/** What ssh2 can verify (its DEFAULT_SERVER_HOST_KEY; ed25519 needs OpenSSL support, present in Node 20). */
const SUPPORTED_HOST_KEY_ALGORITHMS = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];
