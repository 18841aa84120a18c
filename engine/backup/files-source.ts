/**
 * Reading files from the source folder of a file-level backup. The codec workers read, chunk,
 * hash and compress file content (codec-files.ts); this side batches small files into one
 * request, steps large files through their windows, and appends what comes back. Errors of
 * the source (a file that vanished, cannot be opened, fails to read) become `ItemSkipped`,
 * which the backup turns into an entry of the point's `errors`; repository errors pass
 * through and abort.
 */
import { createHash } from 'node:crypto';
import { fsp, SOURCE_OPEN_FLAGS, type BigIntStats, type FileHandle } from '../runtime/fs.js';
import type { BlobWriter } from '../repo/blob-writer.js';
import type { CdcParams } from '../repo/chunker-cdc.js';
import { codecPool, type EncodedData, type EncodedWindow, type SourceFsError } from '../repo/codec-pool.js';
import { InterruptedError, errnoCode } from '../errors.js';
import { Slots } from '../runtime/concurrency.js';
import type { TreeEntry } from '../repo/tree.js';

/** Small files per worker request, and their total lstat size: one message instead of hundreds. */
const BATCH_FILES = 256;
const BATCH_BYTES = 2 * 1024 * 1024;
/**
 * Lstat bytes of small files between their batch leaving and their blobs being in a pack.
 * Files waiting for a batch cost only metadata, so the backup allows many (FILE_SLOTS); their
 * stored bytes must still stay bounded when the target is slow and the writer has no room.
 */
const SMALL_BYTES_IN_FLIGHT = 16 * 1024 * 1024;

export class ItemSkipped extends Error {}

export interface StoredContent {
  hashes: string[];
  bytes: number;
}

export function describeFsError(e: unknown): string {
  switch (errnoCode(e)) {
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ENOENT':
      return 'vanished during the backup';
    case 'ELOOP':
      return 'replaced by a symbolic link during the backup';
    case 'ENOTDIR':
      return 'it or a folder above it was replaced by a file during the backup';
    case 'EISDIR':
      return 'replaced by a folder during the backup';
    default:
      // Errors from the codec workers arrive as plain { code, message } objects.
      return typeof e === 'object' && e !== null && 'message' in e && typeof e.message === 'string' ? e.message : String(e);
  }
}

export function specialKind(st: BigIntStats): string {
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  return 'unknown type';
}

async function openSource(abs: string): Promise<FileHandle> {
  try {
    return await fsp.open(abs, SOURCE_OPEN_FLAGS);
  } catch (e) {
    throw new ItemSkipped(describeFsError(e));
  }
}

/**
 * Store a buffer (a tree blob) as one chunk, hashed right here: a worker round trip costs
 * more than hashing a small buffer. Takes ownership of `buf`.
 */
export async function storeWhole(writer: BlobWriter, buf: Buffer): Promise<StoredContent> {
  const bytes = buf.length; // putHashed may hand `buf` to a worker (detaching it)
  if (bytes === 0) return { hashes: [], bytes: 0 };
  const hash = createHash('sha256').update(buf).digest('hex');
  await writer.putHashed(hash, buf);
  return { hashes: [hash], bytes };
}

/**
 * Whether the walker lstats synchronously. From the inode cache that is ~5× cheaper than
 * going through the libuv pool; from a cold disk it would serialize I/O. So: stat
 * synchronously while that is fast, and when many calls take over 1 ms (cache misses) switch
 * to parallel async calls for a while, then probe again. (File content is read by the codec
 * workers, synchronously there, one file per worker at a time.)
 */
export class SyncStatPolicy {
  sync = true;
  private slow = 0;
  private seen = 0;

  /** A synchronous call for `bytes` took `ms`: over 1 ms plus 2 ms/MB looks like a cache miss. */
  observe(ms: number, bytes: number): void {
    if (this.sync && ms > 1 + bytes / 500_000) this.slow++;
    if (++this.seen < 256) return;
    this.sync = this.sync ? this.slow < 16 : true;
    this.slow = 0;
    this.seen = 0;
  }
}

/**
 * Store a large file through the workers, one window of `windowBytes` (≥ maxBytes, so each
 * holds a cut) at a time: the next window is read while this one's chunks are appended. The
 * file stays open throughout, so every window comes from the same inode.
 */
export async function storeChunkedFile(writer: BlobWriter, abs: string, cdc: CdcParams, level: number, windowBytes: number, signal?: AbortSignal): Promise<StoredContent> {
  const h = await openSource(abs);
  const hashes: string[] = [];
  let bytes = 0;
  const encode = (pos: number) => {
    const p = codecPool().encodeWindow(h.fd, pos, windowBytes, cdc, level);
    p.catch(() => undefined); // awaited below; may settle while appends are awaited
    return p;
  };
  let next: Promise<EncodedWindow | { error: SourceFsError }> | undefined = encode(0);
  try {
    while (next) {
      const w = await next;
      next = undefined;
      if ('error' in w) throw new ItemSkipped(describeFsError(w.error));
      try {
        if (signal?.aborted) throw new InterruptedError();
        if (!w.eof) next = encode(w.nextPos);
        for (const c of w.chunks) {
          hashes.push(c.hash);
          bytes += c.rawLength;
        }
        const appended = await Promise.allSettled(w.chunks.map((c) => writer.putEncoded(c.hash, c.rawLength, c.data, c.codec)));
        const failed = appended.find((a) => a.status === 'rejected');
        if (failed) throw failed.reason;
      } finally {
        // Every append has settled (or none began): the reply's buffer can go back to its worker.
        for (const c of w.chunks) c.done();
      }
    }
  } finally {
    // A worker may still be reading this fd: closing it first could let it read another file.
    await next?.then((w) => {
      if (!('error' in w)) for (const c of w.chunks) c.done();
    }, () => undefined);
    await h.close();
  }
  return { hashes, bytes };
}

/**
 * Small files go to the workers in batches, each read, hashed and compressed there. A batch
 * leaves when full or at the next turn of the event loop (the walker yields at every folder
 * and whenever it waits for a slot), so nothing waits for it.
 */
export class SmallFileEncoder {
  private batch: { path: string; size: number; resolve: (r: EncodedData | { error: SourceFsError }) => void; reject: (e: unknown) => void }[] = [];
  private batchBytes = 0;
  private scheduled = false;
  private readonly budget = new Slots(SMALL_BYTES_IN_FLIGHT);

  constructor(private readonly level: number) {}

  /** Store the whole small file `abs`, read up to `size` bytes (less if it shrank since lstat). */
  async store(writer: BlobWriter, abs: string, size: number): Promise<StoredContent> {
    const held = await this.budget.acquire(size);
    try {
      const r = await this.encode(abs, size);
      if ('error' in r) throw new ItemSkipped(describeFsError(r.error));
      try {
        if (r.rawLength === 0) return { hashes: [], bytes: 0 };
        await writer.putEncoded(r.hash, r.rawLength, r.data, r.codec);
        return { hashes: [r.hash], bytes: r.rawLength };
      } finally {
        r.done(); // in the pack, or not needed
      }
    } finally {
      this.budget.release(held);
    }
  }

  private encode(path: string, size: number): Promise<EncodedData | { error: SourceFsError }> {
    return new Promise((resolve, reject) => {
      this.batch.push({ path, size, resolve, reject });
      this.batchBytes += size;
      if (this.batch.length >= BATCH_FILES || this.batchBytes >= BATCH_BYTES) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.flush();
        });
      }
    });
  }

  private flush(): void {
    const batch = this.batch;
    if (batch.length === 0) return;
    this.batch = [];
    this.batchBytes = 0;
    codecPool().encodeFiles(batch, this.level).then(
      (out) => batch.forEach((b, k) => b.resolve(out[k] as EncodedData | { error: SourceFsError })),
      (e: unknown) => batch.forEach((b) => b.reject(e)),
    );
  }
}

/** A tree entry's metadata from lstat (`size` 0: the caller sets what it stored). */
export function entryMeta(name: string, type: TreeEntry['type'], st: BigIntStats): TreeEntry {
  return {
    name, type,
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtimeNs: st.mtimeNs.toString(),
    size: 0,
    ino: st.ino.toString(),
    ctimeNs: st.ctimeNs.toString(),
  };
}

/** Whether a file is as the parent point saw it: same type, size, mtime, inode and ctime (its content is not read again). */
export function isUnchanged(prev: TreeEntry, st: BigIntStats): boolean {
  return (prev.type === 'file' || prev.type === 'hardlink')
    && prev.size === Number(st.size) && prev.mtimeNs === st.mtimeNs.toString()
    && prev.ino === st.ino.toString() && prev.ctimeNs === st.ctimeNs.toString();
}
