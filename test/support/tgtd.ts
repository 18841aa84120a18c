/**
 * A real iSCSI target for tests: tgtd on 127.0.0.1 with its own portal port and management
 * socket (`-C N` → /var/run/tgtd/socket.N), one file-backed LUN and a CHAP account. stop()
 * kills it the hard way (as a storage outage does); start() brings it back on the same port
 * with the same LUN file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { execFile } from '../../engine/runtime/exec.js';

export interface TgtdOptions {
  dir: string;
  lunBytes?: number;
  iqn?: string;
  chapUser?: string;
  chapSecret?: string;
}

export class Tgtd {
  readonly iqn: string;
  readonly portal: string;
  readonly lunFile: string;
  readonly chapUser: string;
  readonly chapSecret: string;
  private child: ChildProcess | undefined;

  private constructor(private readonly opts: TgtdOptions, readonly port: number, readonly controlPort: number) {
    this.iqn = opts.iqn ?? `iqn.2026-01.invalid.drctl:test-${port}`;
    this.portal = `127.0.0.1:${port}`;
    this.lunFile = join(opts.dir, 'lun.img');
    this.chapUser = opts.chapUser ?? 'drctl';
    this.chapSecret = opts.chapSecret ?? 'test-secret-0123';
  }

  static async start(opts: TgtdOptions): Promise<Tgtd> {
    const port = await freePort();
    const t = new Tgtd(opts, port, 2000 + (port % 28000));
    await writeFile(t.lunFile, '');
    await execFile('truncate', ['-s', String(opts.lunBytes ?? 256 * 1024 * 1024), t.lunFile]);
    await t.start();
    return t;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Start (or restart) the daemon and configure target, LUN 1, ACL and CHAP. */
  async start(): Promise<void> {
    await this.removeSocket();
    const child = spawn('tgtd', ['-f', '-C', String(this.controlPort), '--iscsi', `portal=${this.portal}`], { stdio: 'ignore' });
    this.child = child;
    for (let i = 0; ; i++) {
      const r = await this.adm(['--op', 'show', '--mode', 'target']);
      if (r.code === 0) break;
      if (i > 100 || !this.running) throw new Error(`tgtd did not start on ${this.portal}: ${r.stderr}`);
      await new Promise((res) => setTimeout(res, 50));
    }
    await this.must(['--op', 'new', '--mode', 'target', '--tid', '1', '-T', this.iqn]);
    await this.must(['--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', '1', '-b', this.lunFile]);
    await this.must(['--op', 'bind', '--mode', 'target', '--tid', '1', '-I', 'ALL']);
    await this.must(['--op', 'new', '--mode', 'account', '--user', this.chapUser, '--password', this.chapSecret]);
    await this.must(['--op', 'bind', '--mode', 'account', '--tid', '1', '--user', this.chapUser]);
  }

  /** Kill it at once, like a storage outage (tgtd ignores SIGTERM while it has targets). */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((res) => child.once('exit', res));
      child.kill('SIGKILL');
      await exited;
    }
    await this.removeSocket();
  }

  private adm(args: string[]) {
    return execFile('tgtadm', ['-C', String(this.controlPort), '--lld', 'iscsi', ...args]);
  }

  private async must(args: string[]): Promise<void> {
    const r = await this.adm(args);
    if (r.code !== 0) throw new Error(`tgtadm ${args.join(' ')}: ${r.stderr}`);
  }

  private async removeSocket(): Promise<void> {
    for (const f of [`socket.${this.controlPort}`, `socket.${this.controlPort}.lock`]) await rm(join('/var/run/tgtd', f), { force: true });
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}
