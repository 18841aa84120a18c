/**
 * The bytes of the pack being filled, copied into 1 MiB segments of shared memory that are
 * reused from pack to pack.
 *
 * Why copy: blobs arrive as views into the buffers the codec workers replied with. Keeping the
 * views kept every reply alive until its pack was uploaded, so each reply needed fresh memory,
 * and fresh memory costs a page fault per 4 KiB: on this project's VMs a quarter of the
 * workers' time in a changed-extent image backup. With the copy, a reply is done with as soon
 * as its blobs are appended and its buffer goes back to the worker (codec-pool.ts, leases),
 * while the copy lands in memory that is already mapped (~0.1 ms per MiB on the main thread,
 * which is mostly idle). Shared memory: the worker that hashes the pack reads the segments
 * without a copy or a transfer. 1 MiB: the pieces the target writes (WRITE_PIECE_BYTES).
 */
export const SEGMENT_BYTES = 1 << 20;

/** Segments of the packs of one writer: taken while a pack fills, given back once it is uploaded. */
export class SegmentPool {
  private readonly free: Buffer[] = [];

  take(): Buffer {
    return this.free.pop() ?? Buffer.from(new SharedArrayBuffer(SEGMENT_BYTES));
  }

  give(segments: Buffer[]): void {
    this.free.push(...segments);
  }
}

export class PackBuffer {
  private segments: Buffer[] = [];
  /** Bytes used in the last segment. */
  private used = SEGMENT_BYTES;
  private total = 0;

  constructor(private readonly pool: SegmentPool) {}

  get bytes(): number {
    return this.total;
  }

  /** Copy `data` to the end; the caller may reuse its memory right away. */
  append(data: Uint8Array): void {
    for (let at = 0; at < data.length;) {
      if (this.used === SEGMENT_BYTES) {
        this.segments.push(this.pool.take());
        this.used = 0;
      }
      const n = Math.min(data.length - at, SEGMENT_BYTES - this.used);
      (this.segments.at(-1) as Buffer).set(data.subarray(at, at + n), this.used);
      this.used += n;
      at += n;
    }
    this.total += data.length;
  }

  /**
   * Everything appended, as views of the segments in order (the last one trimmed), and the
   * segments themselves, which the caller gives back to the pool once nothing reads the views.
   * The buffer is empty again.
   */
  take(): { parts: Buffer[]; segments: Buffer[] } {
    const segments = this.segments;
    const parts = segments.map((s, i) => (i === segments.length - 1 ? s.subarray(0, this.used) : s));
    this.segments = [];
    this.used = SEGMENT_BYTES;
    this.total = 0;
    return { parts, segments };
  }
}
