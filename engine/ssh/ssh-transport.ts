/**
 * One pooled ssh2 connection per host. The connection is opened on first use and reused by
 * every command and socket of that host; when it drops (sshd restarted, network blip), the
 * next use reconnects with backoff (0.5, 1, 2, 4 s) and then fails with a clear message.
 * Keepalives detect a dead peer in ~15 s, and every command has a timeout: nothing hangs.
 */
import { connect as tcpConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Client, type ClientChannel } from 'ssh2';
import { checkHostKey, HostKeyError, type HostKeyPin } from './host-key.js';
import { HostUnreachableError, type ExecOptions, type HostTransport, type RemoteResult } from './transport.js';

export interface SshEndpoint {
  host: string;
  port: number;
  user: string;
  privateKey?: Buffer;
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
    const attempts = this.ep.attempts ?? BACKOFF_MS.length;
    let last: unknown;
    for (let i = 0; i < attempts; i++) {
      try {
        return await this.connectOnce();
      } catch (e) {
        if (e instanceof HostKeyError) throw e; // a wrong key does not get better by retrying
        last = e;
        if (i + 1 < attempts) await new Promise((r) => setTimeout(r, BACKOFF_MS[i] ?? 4000));
      }
    }
    throw new HostUnreachableError(this.label, `cannot connect after ${attempts} attempts: ${(last as Error)?.message ?? last}`, { cause: last });
  }

  private connectOnce(): Promise<Client> {
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
      client.on('ready', () => {
        ready = true;
        resolve(client);
      });
      client.on('error', (err) => {
        if (!ready) reject(keyError ?? new HostUnreachableError(this.label, err.message, { cause: err }));
      });
      client.on('close', () => {
        if (!ready) reject(keyError ?? new HostUnreachableError(this.label, 'connection closed during the handshake'));
        // A dropped connection is replaced on next use (unless a newer one already replaced it).
        const current = this.client;
        if (ready && current) {
          void current.then((c) => {
            if (c === client && this.client === current) this.client = undefined;
          }, () => undefined);
        }
      });
      client.connect({
        sock,
        username: this.ep.user,
        ...(this.ep.privateKey ? { privateKey: this.ep.privateKey } : {}),
        readyTimeout: this.ep.connectTimeoutMs ?? 15_000,
        keepaliveInterval: 5000,
        keepaliveCountMax: 3,
        hostVerifier: (key: Buffer) => {
          try {
            checkHostKey(this.label, this.ep.host, this.ep.port, key, this.ep.pin);
            return true;
          } catch (e) {
            keyError = e as HostKeyError;
            return false;
          }
        },
      });
    });
  }
}
