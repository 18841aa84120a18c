/**
 * Reading files from the source folder of a file-level backup. Errors of the source (a file
 * that vanished, cannot be opened, fails to read) become `ItemSkipped`, which the backup
 * turns into an entry of the point's `errors`; repository errors pass through and abort.
 */
import { createHash } from 'node:crypto';
import { fsp, constants, openSync, readSync, closeSync, type BigIntStats, type FileHandle } from '../runtime/fs.js';
import type { BlobWriter } from '../repo/blob-writer.js';
import { chunkReads, type CdcParams } from '../repo/chunker-cdc.js';
import { InterruptedError, errnoCode } from '../errors.js';

const READ_BYTES = 4 << 20;
/** Chunks of one large file being hashed and compressed at once. */
const CHUNKS_IN_FLIGHT = 4;

/**
 * O_NOFOLLOW: a file swapped for a symlink since lstat is not followed. O_NONBLOCK: a file
 * swapped for a FIFO does not block the open (no effect on regular files).
 */
const SOURCE_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

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
      return 'a parent folder was replaced during the backup';
    default:
      return e instanceof Error ? e.message : String(e);
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
    return await fsp.open(abs, SOURCE_FLAGS);
  } catch (e) {
    throw new ItemSkipped(describeFsError(e));
  }
}

/**
 * Store a whole small file as one chunk, hashed right here: a worker round trip costs more
 * than hashing a small buffer. Takes ownership of `buf`.
 */
export async function storeWhole(writer: BlobWriter, buf: Buffer): Promise<StoredContent> {
  const bytes = buf.length; // putHashed may hand `buf` to a worker (detaching it)
  if (bytes === 0) return { hashes: [], bytes: 0 };
  const hash = createHash('sha256').update(buf).digest('hex');
  await writer.putHashed(hash, buf);
  return { hashes: [hash], bytes };
}

/** Read a whole file (up to `size` bytes; less if it shrank since lstat), synchronously. */
export function readWholeSync(abs: string, size: number): Buffer {
  let fd: number;
  try {
    fd = openSync(abs, SOURCE_FLAGS);
  } catch (e) {
    throw new ItemSkipped(describeFsError(e));
  }
  // Its own ArrayBuffer: the writer can hand it to a worker without a copy.
  const buf = Buffer.allocUnsafeSlow(size);
  let n = 0;
  try {
    while (n < size) {
      const got = readSync(fd, buf, n, size - n, n);
      if (got === 0) break;
      n += got;
    }
  } catch (e) {
    throw new ItemSkipped(describeFsError(e));
  } finally {
    closeSync(fd);
  }
  return n < size ? buf.subarray(0, n) : buf;
}

/** Read a whole file through the libuv pool. */
export async function readWhole(abs: string, size: number): Promise<Buffer> {
  const h = await openSource(abs);
  const buf = Buffer.allocUnsafeSlow(size);
  let n = 0;
  try {
    while (n < size) {
      const { bytesRead } = await h.read(buf, n, size - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
  } catch (e) {
    throw new ItemSkipped(describeFsError(e));
  } finally {
    await h.close();
  }
  return n < size ? buf.subarray(0, n) : buf;
}

/**
 * Whether small files are read synchronously. From the page cache that is ~5× cheaper than
 * going through the libuv pool; from a cold disk it would serialize I/O. So: read
 * synchronously while reads are fast, and when many take over 1 ms (cache misses) switch to
 * parallel async reads for a while, then probe again.
 */
export class SmallReadPolicy {
  sync = true;
  private slow = 0;
  private seen = 0;

  /** A synchronous read of `bytes` took `ms`: over 1 ms plus 2 ms/MB looks like a cache miss. */
  observe(ms: number, bytes: number): void {
    if (this.sync && ms > 1 + bytes / 500_000) this.slow++;
    if (++this.seen < 256) return;
    this.sync = this.sync ? this.slow < 16 : true;
    this.slow = 0;
    this.seen = 0;
  }
}

/** Stream a file through the content-defined chunker, a few chunks stored at once. */
export async function storeChunkedFile(writer: BlobWriter, abs: string, size: number, params: CdcParams, signal?: AbortSignal): Promise<StoredContent> {
  const h = await openSource(abs);
  const hashes: string[] = [];
  const inFlight = new Set<Promise<void>>();
  let bytes = 0;
  try {
    let i = 0;
    for await (const chunk of chunkReads(readAt(h), params, { readBytes: READ_BYTES, sizeHint: size })) {
      if (signal?.aborted) throw new InterruptedError();
      const at = i++;
      bytes += chunk.length;
      const p = writer.putRaw(chunk).then((hash) => {
        hashes[at] = hash;
      });
      inFlight.add(p);
      // Awaited below (Promise.all); this branch only keeps the set small and marks it handled.
      p.then(() => inFlight.delete(p), () => undefined);
      if (inFlight.size >= CHUNKS_IN_FLIGHT) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  } finally {
    await Promise.allSettled(inFlight);
    await h.close();
  }
  return { hashes, bytes };
}

function readAt(h: FileHandle): (buf: Buffer) => Promise<number> {
  let pos = 0;
  return async (buf) => {
    try {
      const { bytesRead } = await h.read(buf, 0, buf.length, pos);
      pos += bytesRead;
      return bytesRead;
    } catch (e) {
      throw new ItemSkipped(describeFsError(e));
    }
  };
}

/** A counting semaphore; waiters are served in order. */
export class Slots {
  private readonly waiters: (() => void)[] = [];
  constructor(private free: number) {}

  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.free++;
  }
}
