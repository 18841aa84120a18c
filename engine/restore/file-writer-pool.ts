/**
 * Worker threads that write restored file content: each gets a range read from a pack (one
 * buffer of stored, still compressed blobs) and a list saying where every blob goes; it
 * decodes and verifies each blob, then
 *   - creates small files whole (O_EXCL|O_NOFOLLOW, write, owner, mode, mtime, close; larger
 *     and replacing ones under a temporary name, then named), and
 *   - writes chunks of larger files into descriptors the main thread opened and sized, at
 *     their offsets, skipping all-zero 4 KiB blocks (the file is sized first, so they read
 *     back as zeros and sparse data stays sparse).
 * All with synchronous calls in the worker. Why: on a 2-vCPU VM every hand-off between
 * threads (a libuv pool request, a postMessage) costs ~50 µs of the main thread, and a small
 * file needs five or six of them; here a batch of hundreds of files is one message, decoded
 * bytes never travel back to the main thread, and two workers create files in parallel.
 * Measured restoring the 30k-file / 1.1 GB bench tree on 2 vCPUs: ~9.5 s with FileHandle calls
 * from the main thread, ~5–6 s with whole-file writers.
 */
import { WorkerPool } from '../runtime/worker-pool.js';
import { ownsMemory, WorkerReadError } from '../repo/codec-pool.js';
import { availableParallelism } from 'node:os';
import { IntegrityError } from '../errors.js';

export interface WholeFile {
  path: string;
  uid: number;
  gid: number;
  mode: number;
  /** utimeArg() of the point's mtime. */
  mtime: string;
  /**
   * Written under this name, then given `path` when complete (partial-file.ts); without it the
   * file is created as `path` at once (small files: a few system calls, nothing to rename).
   */
  tmp?: string;
  /** Something is at `path` and is replaced, in one rename of `tmp` over it (overwrite; `tmp` is set). */
  replace: boolean;
  /**
   * The create already gives the file this owner and group, or this mode (created with it):
   * the fchown / fchmod is skipped, two of the six system calls of a small file.
   */
  ownerByCreate: boolean;
  modeByCreate: boolean;
}

/** A chunk's place in a file the main thread holds open: written at `at`, never at or past `limit` (the file size). */
export interface FdWrite {
  fd: number;
  /** For error messages only. */
  path: string;
  at: number;
  limit: number;
}

export interface BatchBlob {
  /** Where the stored bytes are inside the batch buffer. */
  offset: number;
  length: number;
  codec: number;
  rawLength: number;
  hash: string;
  /** Files this blob is the whole content of, created by the worker. */
  files: WholeFile[];
  /** Places in open files. */
  writes: FdWrite[];
}

export interface WriteBatch {
  id: number;
  /** The batch's bytes are data[base, base + length) (small buffers live in Node's shared pool)… */
  data?: ArrayBuffer;
  base: number;
  length: number;
  /** … or bytes [offset, offset + length) of a local pack file the worker reads itself. */
  file?: { path: string; offset: number };
  blobs: BatchBlob[];
}

/** `done`: how many WholeFile entries of the batch (in order: blobs, then each blob's files) were written complete. */
export type WriteReply =
  | { id: number; ok: true; bytes: number; done: number }
  | { id: number; ok: false; kind: 'integrity'; hash: string; message: string; done: number }
  | { id: number; ok: false; kind: 'pack'; message: string }
  | { id: number; ok: false; kind: 'read'; message: string; code?: string }
  | { id: number; ok: false; kind: 'fs'; path: string; message: string; code?: string; done: number };

/**
 * Called once per batch, before write() resolves or rejects, with how many WholeFile entries of
 * `blobs` (in order: blobs, then each blob's files) are complete under their final names; a
 * failed batch removed the rest it had started.
 */
export type OnWholeFilesDone = (count: number) => void;

export class FileWriters {
  private readonly pool: WorkerPool<WriteReply>;

  constructor(private readonly pack: (blobHash: string) => string, size = Math.min(availableParallelism(), 4)) {
    this.pool = new WorkerPool<WriteReply>(new URL('./file-writer-worker.js', import.meta.url), size);
  }

  /** Write every destination of `blobs` (stored bytes in `data`, which is handed over). Resolves to the file bytes restored. */
  async write(data: Buffer, blobs: BatchBlob[], onDone: OnWholeFilesDone): Promise<number> {
    // Transfer when `data` is all of its ArrayBuffer; otherwise (a slice of Node's pool) it is copied.
    const own = ownsMemory(data);
    const req: Omit<WriteBatch, 'id'> = { data: data.buffer as ArrayBuffer, base: data.byteOffset, length: data.byteLength, blobs };
    return this.settle(await this.pool.request(req, own ? [data.buffer as ArrayBuffer] : []), onDone);
  }

  /**
   * As write(), with the stored bytes read by the worker from `length` bytes at `offset` of
   * a local pack file, into a buffer it keeps: the main thread never holds them.
   */
  async writeFromFile(pack: string, path: string, offset: number, length: number, blobs: BatchBlob[], onDone: OnWholeFilesDone): Promise<number> {
    return this.settle(await this.pool.request({ file: { path, offset }, base: 0, length, blobs }, []), onDone, pack);
  }

  close(): Promise<void> {
    return this.pool.terminate();
  }

  /** Bytes written, or the failure as the caller reports it; `pack` names the file a worker read itself. */
  private settle(r: WriteReply, onDone: OnWholeFilesDone, pack = '?'): number {
    onDone('done' in r ? r.done : 0);
    if (r.ok) return r.bytes;
    if (r.kind === 'pack') throw new IntegrityError(`pack ${pack.slice(0, 12)} ${r.message}`);
    if (r.kind === 'read') throw new WorkerReadError(r.message, r.code);
    if (r.kind === 'integrity') {
      throw new IntegrityError(`blob ${r.hash.slice(0, 12)} in pack ${this.pack(r.hash).slice(0, 12)} ${r.message} (damaged pack)`);
    }
    throw Object.assign(new Error(`${r.message}`), { code: r.code, path: r.path });
  }
}
