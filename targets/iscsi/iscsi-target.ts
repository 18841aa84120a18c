/**
 * The TargetDriver of an iSCSI volume: a lease on the shared attach (volume.ts), the repository
 * in a LocalTarget at the mountpoint, and a watchdog. Every error after the watchdog tripped —
 * and every EIO/ENOTCONN from the volume — becomes one message naming the target, the portal
 * and what happened. close() gives the lease back (the last user detaches).
 */
import { errnoCode } from '../../engine/errors.js';
import { LocalTarget } from '../local/local-target.js';
import type { BlobInfo, ByteRange, ObjectUpload, TargetDriver } from '../types.js';
import { acquireVolume, type VolumeLease } from './volume.js';
import { PortalWatchdog } from './watchdog.js';
import type { IscsiTargetConfig } from './types.js';

const LOST = new Set(['EIO', 'ENOTCONN', 'ECONNABORTED', 'ENXIO', 'ESHUTDOWN']);

export class IscsiTarget implements TargetDriver {
  readonly capabilities = { atomicReplace: true, maxConnections: 8 };
  private constructor(
    private readonly t: IscsiTargetConfig,
    private readonly inner: LocalTarget,
    private readonly lease: VolumeLease,
    private readonly watchdog: PortalWatchdog,
  ) {}

  static async open(t: IscsiTargetConfig, stateDir: string): Promise<IscsiTarget> {
    const lease = await acquireVolume(t, stateDir);
    const watchdog = new PortalWatchdog(t, lease.state);
    watchdog.start();
    return new IscsiTarget(t, new LocalTarget(t.mountpoint), lease, watchdog);
  }

  get location(): string {
    return this.inner.location;
  }

  put(key: string, data: Uint8Array | readonly Uint8Array[], opts?: { replace?: boolean }): Promise<void> {
    return this.guard(() => this.inner.put(key, data, opts));
  }

  create(what?: string): ObjectUpload {
    const upload = this.inner.create(what);
    return {
      write: (parts) => this.guard(() => upload.write(parts)),
      commit: (key, opts) => this.guard(() => upload.commit(key, opts)),
      abort: () => upload.abort(),
    };
  }

  get(key: string, range?: ByteRange): Promise<Buffer> {
    return this.guard(() => this.inner.get(key, range));
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    if (this.watchdog.failure) throw this.watchdog.failure;
    try {
      yield* this.inner.list(prefix);
    } catch (e) {
      throw this.translate(e);
    }
  }

  remove(key: string): Promise<void> {
    return this.guard(() => this.inner.remove(key));
  }

  sweepTemp(olderThanMs: number): Promise<{ files: number; bytes: number }> {
    return this.guard(() => this.inner.sweepTemp(olderThanMs));
  }

  freeBytes(): Promise<number> {
    return this.guard(() => this.inner.freeBytes());
  }

  async close(): Promise<void> {
    this.watchdog.stop();
    await this.lease.release();
  }

  private async guard<T>(op: () => Promise<T>): Promise<T> {
    if (this.watchdog.failure) throw this.watchdog.failure;
    try {
      return await op();
    } catch (e) {
      throw this.translate(e);
    }
  }

  private translate(e: unknown): unknown {
    if (this.watchdog.failure) return this.watchdog.failure;
    const code = errnoCode(e) ?? errnoCode((e as { cause?: unknown })?.cause);
    if (code && LOST.has(code)) return this.watchdog.trip(`I/O error (${code}) on LUN ${this.t.lun} of ${this.t.iqn} at ${this.t.portal}`, e);
    if (code === 'EROFS') return this.watchdog.trip(`the filesystem on LUN ${this.t.lun} at ${this.t.portal} was remounted read-only (I/O errors)`, e);
    return e;
  }
}
