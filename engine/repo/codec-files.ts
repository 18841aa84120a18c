/**
 * The worker side of file-level backup: read source files, cut them with the content-defined
 * chunker, hash and compress, and hand back only stored bytes. Doing this on the main thread
 * made it the bottleneck of a 30k-file backup (sync reads, buffer copies and GC there, while
 * the codec workers sat ~60 % idle); now the main thread only walks and packs.
 *
 * Reads and compressed frames go into two reusable scratch buffers per worker; what leaves is
 * one buffer of stored bytes per request: shared memory the main thread reads without a copy
 * or transfer, lent to it and handed back (lendEncoded below).
 */
import { createHash } from 'node:crypto';
import { SOURCE_OPEN_FLAGS, closeSync, openSync, readFullSync } from '../runtime/fs.js';
import { decidedCuts, type CdcParams } from './chunker-cdc.js';
import { compressBound, compressInto } from './codec-sync.js';
import type { EncodedBlob, SourceFsError } from './codec-pool.js';

let scratch = Buffer.allocUnsafeSlow(1 << 20);

function scratchOf(bytes: number): Buffer {
  if (scratch.length < bytes) scratch = Buffer.allocUnsafeSlow(bytes);
  return scratch.subarray(0, bytes);
}

/**
 * Stored bytes of one reply: written straight into a lent slab when one has room for the most
 * the request can store (startReply()), else gathered in a reusable buffer of the sink's own and
 * copied out once. Writing into the slab saves that copy, which is slow here: a copy into
 * shared memory at an odd offset goes at ~3 GB/s (V8 copies shared memory with relaxed
 * atomics), where zstd and read() write at full speed.
 */
class Sink {
  private own: Buffer = Buffer.allocUnsafeSlow(1 << 20);
  /** Where bytes go: `own`, or the slab region `placed` says. */
  private buf: Buffer = this.own;
  /** The slab and offset the reply is written to; undefined while it goes into `own`. */
  placed: SlabRoom | undefined;
  private used = 0;

  /** Gather the next reply in `room`, into at most `bytes` bytes. */
  aim(room: SlabRoom, bytes: number): void {
    this.buf = Buffer.from(room.mem, room.at, bytes);
    this.placed = room;
  }

  /** Room for `bytes` more at the end; add() what was written. */
  room(bytes: number): Buffer {
    if (this.buf.length < this.used + bytes) {
      // Past the slab region (never when the request's bound held): on in a buffer of our own.
      const size = Math.max(this.placed ? this.own.length : 2 * this.own.length, this.used + bytes);
      const bigger = size > this.own.length ? Buffer.allocUnsafeSlow(size) : this.own;
      this.buf.copy(bigger, 0, 0, this.used);
      this.own = this.buf = bigger;
      this.placed = undefined;
    }
    return this.buf.subarray(this.used, this.used + bytes);
  }

  add(bytes: number): void {
    this.used += bytes;
  }

  get size(): number {
    return this.used;
  }

  /** Everything added, in shared memory of its own; the sink is empty again. */
  take(): Buffer {
    return this.takeInto(Buffer.from(new SharedArrayBuffer(this.used)));
  }

  /** Everything added, copied into `out` (exactly `size` bytes) unless it is there already; the sink is empty again. */
  takeInto(out: Buffer): Buffer {
    if (!this.placed) this.buf.copy(out, 0, 0, this.used);
    this.reset();
    return out;
  }

  /** Empty, and gathering into its own buffer. */
  reset(): void {
    this.buf = this.own;
    this.placed = undefined;
    this.used = 0;
  }
}

const sink = new Sink();

/**
 * Replies are lent to the main thread, which hands each back once every blob in it is in a
 * pack or not needed (`done` of EncodedData and of image chunks; codec-pool.ts). Replies then
 * land in memory that is already mapped instead of fresh memory with a page fault per 4 KiB:
 * with the pack segments of pack-buffer.ts, image backup of the 2 GiB bench image 3.9–4.3 ->
 * 3.3–3.6 s (system time 1.5 -> 0.9 s), tree backup 5.3–6.2 -> 4.8–5.6 s.
 *
 * Replies are packed one after another into a slab, and `leases[slab]` counts those the main
 * thread still holds: this worker adds one per reply, the main thread takes it back off
 * (Atomics); at 0 the slab is empty again. One slab per reply, as before, let slabs multiply
 * when writes were slow: the image reader then sends many one-chunk requests, and each held
 * a 2 MiB slab for ~150 KiB (5–6 slabs per worker in the 8 GiB image backup, 3 for 2 GiB).
 * When no slab has room and a new one would exceed MAX_SLABS or SLABS_MAX_BYTES (also: a
 * lease never returned after a failure), a reply gets fresh memory.
 */
export interface Lease {
  slab: number;
  /** Replies out of each slab (shared by the worker and the main thread). */
  leases: Int32Array;
}

const MAX_SLABS = 8;
const SLAB_MIN_BYTES = 2 << 20;
const SLABS_MAX_BYTES = 32 << 20;
const leases = new Int32Array(new SharedArrayBuffer(4 * MAX_SLABS));
const slabs: (SharedArrayBuffer | undefined)[] = [];
/** Where the next reply goes in each slab (only this worker's business). */
const filled = new Array<number>(MAX_SLABS).fill(0);

/**
 * The stored bytes encodeBlob gathered since the last call, in a lent slab when one can be
 * had: the first with room after its last reply, or a new one in an empty place (sized to
 * whole MiB). A slab is never replaced by a bigger one: the old one's memory would live on
 * until both threads collected it, and the new one is fresh memory again.
 */
export function lendEncoded(): { data: Buffer; lease?: Lease } {
  const bytes = sink.size;
  if (bytes === 0) {
    sink.reset();
    return { data: Buffer.alloc(0) }; // only hashes (or nothing stored)
  }
  const room = sink.placed ?? slabWithRoom(bytes);
  if (room) return lend(room, bytes);
  let empty = 0;
  while (empty < MAX_SLABS && slabs[empty]) empty++;
  const size = Math.max(SLAB_MIN_BYTES, Math.ceil(bytes / (1 << 20)) << 20);
  const held = slabs.reduce((a, m) => a + (m?.byteLength ?? 0), 0);
  if (empty === MAX_SLABS || held + size > SLABS_MAX_BYTES) return { data: sink.take() };
  const mem = (slabs[empty] = new SharedArrayBuffer(size));
  return lend({ slab: empty, mem, at: 0 }, bytes);
}

/**
 * Start the stored bytes of a request that stores at most `maxBytes` (the compress bounds of its
 * blobs). The sink starts empty even after a request that failed half-way (a read error after
 * some chunks were encoded), whose bytes would otherwise lead the next reply and shift every
 * blob in it. And it writes straight into a slab that has room for `maxBytes`, if one has. No
 * slab is made here: lendEncoded makes one by what a reply really holds, so slabs are no more
 * than they were.
 */
export function startReply(maxBytes: number): void {
  sink.reset();
  const room = maxBytes > 0 ? slabWithRoom(maxBytes) : undefined;
  if (room) sink.aim(room, maxBytes);
}

/** Free room in a slab: from `at` to its end. */
interface SlabRoom {
  slab: number;
  mem: SharedArrayBuffer;
  at: number;
}

/** The first slab with `bytes` free after its last reply still lent (all of it once none is). */
function slabWithRoom(bytes: number): SlabRoom | undefined {
  for (let slab = 0; slab < MAX_SLABS; slab++) {
    const mem = slabs[slab];
    if (!mem) continue;
    if (Atomics.load(leases, slab) === 0) filled[slab] = 0;
    const at = filled[slab]!;
    if (mem.byteLength - at >= bytes) return { slab, mem, at };
  }
  return undefined;
}

/** Forget the slabs not lent out: their memory goes once both threads have collected them. */
export function dropFreeSlabs(): void {
  for (let slab = 0; slab < MAX_SLABS; slab++) {
    if (Atomics.load(leases, slab) === 0) slabs[slab] = undefined;
  }
}

function lend({ slab, mem, at }: SlabRoom, bytes: number): { data: Buffer; lease: Lease } {
  filled[slab] = at + ((bytes + 63) & ~63); // next reply on a cache line of its own
  Atomics.add(leases, slab, 1);
  return { data: sink.takeInto(Buffer.from(mem, at, bytes)), lease: { slab, leases } };
}

/**
 * Whole small files, hashed and compressed. Each is read up to its lstat `size`: less if it
 * shrank since, never more if it grew. One entry per file, in order.
 */
export function encodeFiles(paths: string[], sizes: number[], level: number): { data: Buffer; lease?: Lease; blobs: (EncodedBlob | { error: SourceFsError })[] } {
  const buf = scratchOf(sizes.reduce((a, b) => a + b, 0));
  startReply(sizes.reduce((a, b) => a + compressBound(b), 0));
  const blobs: (EncodedBlob | { error: SourceFsError })[] = [];
  let at = 0;
  for (let i = 0; i < paths.length; i++) {
    const size = sizes[i] as number;
    const got = readWhole(paths[i] as string, buf.subarray(at, at + size));
    if (typeof got !== 'number') {
      blobs.push({ error: got });
      continue;
    }
    blobs.push(encodeBlob(buf.subarray(at, at + got), level));
    at += got;
  }
  return { ...lendEncoded(), blobs };
}

/**
 * The window of `windowBytes` at `pos` of an open file, cut into chunks. Only chunks whose
 * boundary is decided are encoded (all of them at the end of the file); the caller goes on at
 * `nextPos`, where the chunker restarts exactly as it would have in one pass over the file.
 * A window of at least maxBytes always holds a decided cut.
 */
export function encodeWindow(fd: number, pos: number, windowBytes: number, cdc: CdcParams, level: number): { data: Buffer; lease?: Lease; blobs: EncodedBlob[]; nextPos: number; eof: boolean } | { error: SourceFsError } {
  const buf = scratchOf(windowBytes);
  startReply(0); // the bound of its chunks is not known before cutting; windows outgrow slabs anyway
  let n: number;
  try {
    n = readFullSync(fd, buf, 0, buf.length, pos);
  } catch (e) {
    return { error: fsError(e) };
  }
  const eof = n < windowBytes;
  const blobs: EncodedBlob[] = [];
  let at = 0;
  for (const len of decidedCuts(buf.subarray(0, n), cdc, eof)) {
    blobs.push(encodeBlob(buf.subarray(at, at + len), level));
    at += len;
  }
  return { ...lendEncoded(), blobs, nextPos: pos + at, eof: eof && at === n };
}

/** Hash and compress one blob into the reply being gathered (image backups use it too, chunk-read.ts). */
export function encodeBlob(raw: Buffer, level: number): EncodedBlob {
  const hash = createHash('sha256').update(raw).digest('hex');
  const room = sink.room(compressBound(raw.length));
  let { length, codec } = compressInto(raw, level, room);
  if (codec === 0) length = raw.copy(room);
  sink.add(length);
  return { hash, rawLength: raw.length, storedLength: length, codec };
}

/** Bytes read into `into` (its length is the most read), or the error that stopped it. */
function readWhole(path: string, into: Buffer): number | SourceFsError {
  let fd: number;
  try {
    fd = openSync(path, SOURCE_OPEN_FLAGS);
  } catch (e) {
    return fsError(e);
  }
  try {
    return readFullSync(fd, into, 0, into.length, 0);
  } catch (e) {
    return fsError(e);
  } finally {
    closeSync(fd);
  }
}

function fsError(e: unknown): SourceFsError {
  const code = typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
  return { ...(code ? { code } : {}), message: e instanceof Error ? e.message : String(e) };
}
