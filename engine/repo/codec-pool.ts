/**
 * A small pool of worker threads for the CPU-heavy part of every data path: hashing and
 * compression on backup (for file-level backup also reading and chunking the files, see
 * codec-files.ts), decompression + hash verification on restore and check. One pool
 * per process, created on first use; workers are unref'd while idle so they never keep the
 * process alive. Buffers that own their memory are transferred, not copied.
 */
import { availableParallelism } from 'node:os';
import type { CdcParams } from './chunker-cdc.js';
import { GcPacer } from '../runtime/gc.js';
import { WorkerPool } from '../runtime/worker-pool.js';
import { hasShutDown, onShutdown } from '../runtime/shutdown.js';
import type { ChunkResult, ReadChunksRequest } from './chunk-read.js';
import type { Lease } from './codec-files.js';
import type { PackInspection } from './pack.js';

export type CodecRequest =
  | { id: number; op: 'hash'; data: ArrayBufferLike; offset: number; length: number }
  | { id: number; op: 'compress'; data: ArrayBufferLike; offset: number; length: number; level: number }
  | { id: number; op: 'decode'; data: ArrayBufferLike; offset: number; length: number; codec: number; rawLength: number; hash: string }
  | { id: number; op: 'compress-many'; data: ArrayBufferLike; offset: number; length: number; sizes: number[]; level: number }
  | { id: number; op: 'verify-many'; data: ArrayBufferLike; offset: number; length: number; blobs: StoredRef[] }
  | { id: number; op: 'verify-file'; path: string; blobs: StoredRef[] }
  | ({ id: number; op: 'read-chunks' } & ReadChunksRequest)
  | { id: number; op: 'decode-write'; data?: ArrayBufferLike; offset: number; length: number; blobs: (StoredRef & { at: number[] })[]; fd: number; limit: number; file?: { path: string; offset: number; length: number } }
  | { id: number; op: 'encode-files'; paths: string[]; sizes: number[]; level: number }
  | { id: number; op: 'encode-window'; fd: number; pos: number; windowBytes: number; cdc: CdcParams; level: number };

/** A blob a worker hashed and compressed; its stored bytes follow the previous blob's in the reply. */
export interface EncodedBlob {
  hash: string;
  rawLength: number;
  storedLength: number;
  codec: number;
}

/**
 * An encoded blob with its stored bytes: a view into a reply buffer lent by a worker. Call
 * done() once the bytes are in a pack (putEncoded settled) or not needed: when every blob of a
 * reply is done, its buffer goes back to the worker, which overwrites it.
 */
export interface EncodedData extends EncodedBlob {
  data: Buffer;
  done: () => void;
}

/** Why a worker could not read a source file: enough for describeFsError (it reads `code`). */
export interface SourceFsError {
  code?: string;
  message: string;
}

/** A window of a large file: its decided chunks, where to go on, and whether that was the end. */
export interface EncodedWindow {
  chunks: EncodedData[];
  nextPos: number;
  eof: boolean;
}

/** A blob inside a buffer of stored bytes (offset relative to that buffer). */
export interface StoredRef {
  offset: number;
  length: number;
  codec: number;
  rawLength: number;
  hash: string;
}

/** Verdict on one blob of a batch: ok, or the reason it is damaged. */
export interface DecodedBlob {
  ok: boolean;
  error?: string;
}

/** What a worker found reading a pack file itself (verify-file). */
export interface PackFileRead {
  missing: boolean;
  bytes: number;
}

export type CodecReply =
  | { id: number; ok: true; data: Uint8Array; codec: number; hash?: string; outputs?: [number, number][]; written?: number; results?: { ok: boolean; error?: string }[]; file?: PackFileRead; pack?: PackInspection; chunks?: ChunkResult[];
    blobs?: (EncodedBlob | { error: SourceFsError })[]; nextPos?: number; eof?: boolean; fsError?: SourceFsError; lease?: Lease }
  | { id: number; ok: false; error: string; code?: string; writing?: boolean };

export class CodecPool {
  private readonly pool: WorkerPool<CodecReply>;
  // Every 32 MiB handed to or received from workers: tree backup 274 -> 257 MiB peak RSS.
  private readonly pacer = new GcPacer(32 * 1024 * 1024);

  constructor(size = availableParallelism()) {
    this.pool = new WorkerPool<CodecReply>(new URL('./codec-worker.js', import.meta.url), size);
  }

  /**
   * SHA-256 of `data` (hex). The buffer is handed to a worker and handed back: use the
   * returned `data`, not the argument, afterwards.
   */
  async hash(data: Buffer): Promise<{ hash: string; data: Buffer }> {
    const r = await this.send({ op: 'hash' }, data);
    if (!r.ok || !r.hash) throw new Error(r.ok ? 'no hash' : r.error);
    return { hash: r.hash, data: toBuffer(r.data) };
  }

  /**
   * Verify many blobs that sit in one buffer (a pack) in one worker round trip: decompress and
   * re-hash each, keep nothing; also the id the pack's bytes give (to compare with its name,
   * '' when its trailer is unreadable) and whether its header parses. Takes ownership of
   * `stored`. One verdict per blob, in order.
   */
  async verifyMany(stored: Buffer, blobs: StoredRef[]): Promise<{ results: DecodedBlob[]; packId: string; headerOk: boolean }> {
    const r = await this.send({ op: 'verify-many', blobs }, stored);
    if (!r.ok || !r.results || !r.pack) throw new Error(r.ok ? 'no results' : r.error);
    return { results: r.results.map((x) => ({ ok: x.ok, error: x.error })), packId: r.pack.id, headerOk: r.pack.headerOk };
  }

  /**
   * verifyMany for a pack in a local file that the worker reads itself, into a buffer it keeps
   * for its next pack: only verdicts cross threads, and no 16 MiB buffer per pack is left to
   * the garbage collector (check --read-data of the 2 GiB bench image: 208 -> 132 MiB peak RSS).
   * Also the id its bytes give and whether its header parses. `missing` when the file does not exist.
   */
  async verifyFile(path: string, blobs: StoredRef[]): Promise<{ results: DecodedBlob[]; packId: string; headerOk: boolean; file: PackFileRead }> {
    const r = await this.pool.request({ op: 'verify-file', path, blobs }, []);
    if (!r.ok) throw failure(r);
    if (!r.file) throw new Error('no results');
    return { results: (r.results ?? []).map((x) => ({ ok: x.ok, error: x.error })), packId: r.pack?.id ?? '', headerOk: r.pack?.headerOk === true, file: r.file };
  }

  /**
   * Compress many small blobs in one round trip. The outputs are views into one buffer.
   * Each output is as compress() would give it (raw when compression does not pay).
   */
  async compressMany(raws: Buffer[], level: number): Promise<{ data: Buffer; codec: number }[]> {
    const joined = Buffer.allocUnsafeSlow(raws.reduce((a, b) => a + b.length, 0));
    let at = 0;
    for (const r of raws) at += r.copy(joined, at);
    const r = await this.send({ op: 'compress-many', sizes: raws.map((x) => x.length), level }, joined);
    if (!r.ok || !r.outputs) throw new Error(r.ok ? 'no outputs' : r.error);
    const all = toBuffer(r.data);
    let off = 0;
    return r.outputs.map(([len, codec]) => {
      const data = all.subarray(off, off + len);
      off += len;
      return { data, codec };
    });
  }

  /**
   * Decode, verify and write blobs straight into an open file from the worker (restore): each
   * blob is written at every offset in `at`, only its non-zero 4 KiB blocks (holes stay holes),
   * never past `limit`. Takes ownership of `stored`. Nothing of a damaged blob is written.
   */
  async decodeAndWrite(stored: Buffer, blobs: (StoredRef & { at: number[] })[], fd: number, limit: number): Promise<{ results: DecodedBlob[]; written: number }> {
    const r = await this.send({ op: 'decode-write', blobs, fd, limit }, stored);
    if (!r.ok) throw r.writing ? writeFailure(r) : new Error(r.error);
    if (!r.results) throw new Error('no results');
    return { results: r.results.map((x) => ({ ok: x.ok, error: x.error })), written: r.written ?? 0 };
  }

  /**
   * decodeAndWrite for a range of a pack in a local file that the worker reads itself (into
   * the buffer it keeps, see verifyFile). `missing` when the pack file does not exist.
   */
  async decodeAndWriteFromFile(file: { path: string; offset: number; length: number }, blobs: (StoredRef & { at: number[] })[], fd: number, limit: number): Promise<{ results: DecodedBlob[]; written: number; missing: boolean }> {
    const r = await this.pool.request({ op: 'decode-write', file, offset: 0, length: 0, blobs, fd, limit }, []);
    if (!r.ok) throw r.writing ? writeFailure(r) : failure(r);
    return { results: (r.results ?? []).map((x) => ({ ok: x.ok, error: x.error })), written: r.written ?? 0, missing: !!r.file?.missing };
  }

  /**
   * Read chunks of a local image file in a worker: all-zero ones are reported as such, the
   * others hashed and, with `compress`, compressed: their stored bytes one after the other in `data`.
   */
  async readChunks(req: ReadChunksRequest): Promise<{ results: ChunkResult[]; data: Buffer; release: () => void }> {
    const r = await this.pool.request({ op: 'read-chunks', ...req }, []);
    if (!r.ok) throw failure(r);
    if (!r.chunks) throw new Error('no results');
    // `data` is lent: call release() once nothing reads it any more.
    return { results: r.chunks, data: this.received(r), release: this.releaser(r) };
  }

  /**
   * Read, hash and compress whole small files in one round trip (file-level backup), each up
   * to its lstat `size`. One result per file, in order: its stored bytes, or the error that
   * kept the worker from reading it.
   */
  async encodeFiles(files: { path: string; size: number }[], level: number): Promise<(EncodedData | { error: SourceFsError })[]> {
    const r = await this.pool.request({ op: 'encode-files', paths: files.map((f) => f.path), sizes: files.map((f) => f.size), level }, []);
    if (!r.ok || !r.blobs) throw new Error(r.ok ? 'no blobs' : r.error);
    const all = this.received(r);
    const done = countdown(r.blobs.filter((b) => !('error' in b)).length, this.releaser(r));
    let off = 0;
    return r.blobs.map((b) => {
      if ('error' in b) return b;
      const data = all.subarray(off, off + b.storedLength);
      off += b.storedLength;
      return { ...b, data, done: once(done) };
    });
  }

  /**
   * Read `windowBytes` at `pos` of the open file `fd`, cut them with the content-defined
   * chunker and hash and compress every chunk whose boundary is decided; the caller goes on
   * at `nextPos` until `eof`. Boundaries are those of one pass over the whole file. `fd`
   * must stay open until this settles.
   */
  async encodeWindow(fd: number, pos: number, windowBytes: number, cdc: CdcParams, level: number): Promise<EncodedWindow | { error: SourceFsError }> {
    const r = await this.pool.request({ op: 'encode-window', fd, pos, windowBytes, cdc, level }, []);
    if (!r.ok) throw new Error(r.error);
    if (r.fsError) return { error: r.fsError };
    if (!r.blobs || r.nextPos === undefined) throw new Error('no chunks');
    const all = this.received(r);
    const done = countdown(r.blobs.length, this.releaser(r));
    let off = 0;
    const chunks = (r.blobs as EncodedBlob[]).map((b) => {
      const data = all.subarray(off, off + b.storedLength);
      off += b.storedLength;
      return { ...b, data, done: once(done) };
    });
    return { chunks, nextPos: r.nextPos, eof: r.eof === true };
  }

  /** zstd-compress `raw` (level), or return it as is (codec 0) when it does not compress. Takes ownership of `raw`. */
  async compress(raw: Buffer, level: number): Promise<{ data: Buffer; codec: number }> {
    const r = await this.send({ op: 'compress', level }, raw);
    if (!r.ok) throw new Error(r.error);
    return { data: toBuffer(r.data), codec: r.codec };
  }

  /** Decompress and verify against `hash`; rejects with the reason when the data is damaged. */
  async decode(stored: Buffer, codec: number, rawLength: number, hash: string): Promise<Buffer> {
    const r = await this.send({ op: 'decode', codec, rawLength, hash }, stored);
    if (!r.ok) throw new Error(r.error);
    return toBuffer(r.data);
  }

  terminate(): Promise<void> {
    return this.pool.terminate();
  }

  /**
   * Bytes a worker made for us: lent (see releaser), or fresh memory that turns to garbage here
   * once packed. Both pace this thread's collections: without the lent bytes, its old space
   * grew to ~60 MiB of promoted garbage between V8's own collections in the tree backup
   * (peak RSS 250 -> 290 MiB).
   */
  private received(r: { data: Uint8Array }): Buffer {
    this.pacer.moved(r.data.byteLength);
    return toBuffer(r.data);
  }

  /**
   * Hands a lent reply buffer back to its worker (nothing to do for a fresh one), once: the
   * worker reuses a slab when all its replies are back, so one handed back twice would let it
   * overwrite a reply still being read.
   */
  private releaser(r: { lease?: Lease }): () => void {
    const lease = r.lease;
    return lease ? once(() => void Atomics.sub(lease.leases, lease.slab, 1)) : () => undefined;
  }

  private send(req: Record<string, unknown>, data: Buffer): Promise<CodecReply> {
    const owned = ownsMemory(data) ? data : copyToOwn(data);
    this.pacer.moved(owned.byteLength);
    return this.pool.request({ ...req, data: owned.buffer, offset: owned.byteOffset, length: owned.byteLength }, [owned.buffer as ArrayBuffer]);
  }
}

/** Writing the destination failed in a worker (restore): an errno error like fs throws, for the caller to name the destination. */
function writeFailure(r: { error: string; code?: string }): Error {
  return Object.assign(new Error(r.error), r.code ? { code: r.code } : {});
}

/** A file a worker read itself (a pack, a source image) could not be read; `code` is the errno. */
export class WorkerReadError extends Error {
  constructor(message: string, readonly code?: string) {
    super(message);
  }
}

function failure(r: { error: string; code?: string }): Error {
  return new WorkerReadError(r.error, r.code);
}

/** True when the buffer is the whole of its ArrayBuffer (so it can be transferred). */
export function ownsMemory(b: Uint8Array): boolean {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && !(b.buffer instanceof SharedArrayBuffer);
}

/** A copy in a fresh ArrayBuffer (never a slice of Node's shared small-buffer pool, which must not be transferred). */
function copyToOwn(b: Uint8Array): Uint8Array {
  const c = new Uint8Array(b.byteLength);
  c.set(b);
  return c;
}

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** `f` for its first call; later calls do nothing (a done() may be called again on an error path). */
export function once(f: () => void): () => void {
  let called = false;
  return () => {
    if (called) return;
    called = true;
    f();
  };
}

/** A function that calls `release` when it has been called `count` times (at once when `count` is 0). */
export function countdown(count: number, release: () => void): () => void {
  let left = count;
  if (left === 0) release();
  return () => {
    if (--left === 0) release();
  };
}

let shared: CodecPool | undefined;

export function codecPool(): CodecPool {
  if (!shared) {
    if (hasShutDown()) throw new Error('drctl is ending: no new codec workers are started');
    shared = new CodecPool();
    onShutdown(shutdownCodecPool);
  }
  return shared;
}

/**
 * Start the shared pool's workers now, so that their start (~70 ms each: a Node isolate, the
 * zstd binding) overlaps what a command does before its first blob (opening the repository,
 * reading the index, qemu-img info) instead of following it.
 */
export function startCodecPool(): void {
  codecPool();
}

/** Stop the shared pool's workers (end of a CLI run); a later codecPool() starts a new one. */
export async function shutdownCodecPool(): Promise<void> {
  const pool = shared;
  shared = undefined;
  await pool?.terminate();
}
