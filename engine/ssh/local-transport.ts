/** A host without `ssh:` is the machine drctl runs on: commands and sockets are local. */
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { HostUnreachableError, type ExecOptions, type HostTransport, type RemoteResult } from './transport.js';

export class LocalTransport implements HostTransport {
  readonly label: string;
  bytesIn = 0;
  bytesOut = 0;

  constructor(name: string) {
    this.label = `host ${name} (local)`;
  }

  exec(command: string, opts: ExecOptions = {}): Promise<RemoteResult> {
    return new Promise((resolve, reject) => {
      const child = spawn('sh', ['-c', command], { stdio: ['pipe', 'pipe', 'pipe'], signal: opts.signal, timeout: opts.timeoutMs ?? 120_000 });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      child.on('error', (e) => reject(new HostUnreachableError(this.label, e.message, { cause: e })));
      child.on('close', (code) => resolve({ code: code ?? 255, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
      child.stdin.end(opts.stdin ?? '');
    });
  }

  openUnixSocket(path: string): Promise<Duplex> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => resolve(s));
      s.once('error', (e) => reject(new HostUnreachableError(this.label, `cannot open ${path}: ${e.message}`, { cause: e })));
    });
  }

  async close(): Promise<void> {}
}
