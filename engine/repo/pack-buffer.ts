/**
 * A pack on its way to the target: blobs are copied into 1 MiB segments, and each segment is
 * written into the pack's temp object as soon as it is full and reused once written. The pack
 * is named by the hash of its tail (pack.ts), so its bulk is not hashed here.
 *
 * Why not hold the pack in memory until it is sealed: every byte of a pack then sat in memory
 * touched for the first time, and on this project's VMs a first touch costs a page fault of
 * ~15 µs per 4 KiB (about 4 ms per MiB, 60 times the copy). In a changed-extent image backup
 * (60 MiB of new data) the main thread spent ~230 ms faulting in segments while the codec
 * workers waited for it. A few segments, written and reused, are touched once per run.
 *
 * Why copy at all: blobs arrive as views into buffers the codec workers lent (codec-pool.ts,
 * leases); a lent buffer goes back to its worker as soon as its blobs are copied, instead of
 * waiting for a write. 1 MiB: the pieces the target writes (WRITE_PIECE_BYTES).
 */
import { packIdOfTail } from './pack.js';
import type { ObjectUpload } from '../../targets/types.js';

export const SEGMENT_BYTES = 1 << 20;

/**
 * Segments of one writer's packs. Segments still being written are "busy"; `room()` waits while
 * `maxBusy` are, which bounds the memory a slow target makes the writer hold.
 */
export class SegmentPool {
  private readonly free: Buffer[] = [];
  private busy = 0;
  private waiters: (() => void)[] = [];

  constructor(private readonly maxBusy = 8) {}

  take(): Buffer {
    this.busy++;
    return this.free.pop() ?? Buffer.allocUnsafeSlow(SEGMENT_BYTES);
  }

  give(segment: Buffer): void {
    this.busy--;
    this.free.push(segment);
    this.wake();
  }

  /**
   * Resolves once fewer than `maxBusy` segments are taken. Waiters go one at a time: the next
   * one is woken only after this one's append had its turn (and took what it needed), else all
   * would pass at once and take a segment each.
   */
  async room(): Promise<void> {
    while (this.busy >= this.maxBusy) await new Promise<void>((r) => this.waiters.push(r));
    if (this.waiters.length > 0) setImmediate(() => this.wake());
  }

  private wake(): void {
    if (this.busy < this.maxBusy) this.waiters.shift()?.();
  }
}

export class PackStream {
  private segment: Buffer | undefined;
  /** Bytes used in `segment`. */
  private used = 0;
  private total = 0;
  private readonly writes: Promise<void>[] = [];
  private failure: unknown;
  private aborted = false;

  /** `onFailure` hears of the first failed write at once (the writer stops taking blobs). */
  constructor(private readonly upload: ObjectUpload, private readonly pool: SegmentPool, private readonly onFailure: (e: unknown) => void) {}

  get bytes(): number {
    return this.total;
  }

  /** Copy `data` to the end; the caller may reuse its memory right away. */
  append(data: Uint8Array): void {
    for (let at = 0; at < data.length;) {
      this.segment ??= this.pool.take();
      const n = Math.min(data.length - at, SEGMENT_BYTES - this.used);
      this.segment.set(data.subarray(at, at + n), this.used);
      this.used += n;
      at += n;
      if (this.used === SEGMENT_BYTES) this.flush();
    }
    this.total += data.length;
  }

  /**
   * Append `tail` (the pack header and trailer, packTail), wait for every write, and commit
   * the pack under `key(id)`, where id is the SHA-256 of the tail. Returns the id.
   */
  async finish(tail: Buffer, key: (id: string) => string): Promise<string> {
    this.flush();
    this.track(this.upload.write([tail]));
    await Promise.all(this.writes);
    if (this.failure !== undefined) throw this.failure;
    const id = packIdOfTail(tail);
    await this.upload.commit(key(id));
    return id;
  }

  /** Drop the temp object (after a failure, or when the backup stops). */
  abort(): Promise<void> {
    this.aborted = true;
    if (this.segment) this.pool.give(this.segment);
    this.segment = undefined;
    return this.upload.abort();
  }

  private flush(): void {
    const segment = this.segment;
    if (!segment || this.aborted) return;
    const view = segment.subarray(0, this.used);
    this.segment = undefined;
    this.used = 0;
    // Given back when the write settled either way: the target no longer reads it.
    this.track(this.upload.write([view]).finally(() => this.pool.give(segment)));
  }

  private track(w: Promise<void>): void {
    this.writes.push(w.catch((e: unknown) => {
      if (this.failure === undefined) {
        this.failure = e;
        this.onFailure(e);
      }
    }));
  }
}
