/**
 * Worker thread body for FileWriters (file-writer-pool.ts): decode + verify each blob of a
 * batch, then create the small files it is the whole content of and write it into the open
 * descriptors of larger files — synchronous calls only. Nothing of a damaged blob is written,
 * and a file this thread fails to write completely is removed before the batch's reply.
 */
import { parentPort } from 'node:worker_threads';
import { constants, openSync, readFullSync, writeFullSync, closeSync, ftruncateSync } from '../runtime/fs.js';
import { setMetaSync } from './file-meta.js';
import { publishSync, removeQuietSync } from './partial-file.js';
import { decodeScratchBytes, decodeVerifiedSync, nextPowerOfTwo } from '../repo/codec-sync.js';
import { GcPacer, collectGarbage } from '../runtime/gc.js';
import { nonZeroSpans, writeNonZeroSync } from '../runtime/sparse-write.js';
import type { WholeFile, WriteBatch, WriteReply } from './file-writer-pool.js';

const CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

class BadBlob extends Error {}

function decodeVerified(stored: Buffer, codec: number, rawLength: number, hash: string): Buffer {
  const r = decodeVerifiedSync(stored, codec, rawLength, hash, true); // written at once, before the next blob
  if (typeof r === 'string') throw new BadBlob(r);
  return r;
}

/** Files of one blob from this size on are written sparse; below it a zero block is rare and a write is one syscall. */
const SPARSE_FROM_BYTES = 64 * 1024;

/**
 * Create `f` (under its temporary name when it has one), write it, set its metadata, and name
 * it. On any failure what this call created is removed: O_EXCL made it, so it is ours.
 */
function writeWhole(f: WholeFile, raw: Buffer): void {
  const at = f.tmp ?? f.path;
  const fd = openSync(at, CREATE, f.modeByCreate ? f.mode : 0o600);
  try {
    try {
      if (raw.length < SPARSE_FROM_BYTES) writeFullSync(fd, raw, 0, raw.length, 0);
      else {
        // Sized first, then only its non-zero blocks: holes of a sparse file stay holes.
        ftruncateSync(fd, raw.length);
        writeNonZeroSync(fd, raw, 0, raw.length);
      }
      setMetaSync(fd, f, { owner: f.ownerByCreate, mode: f.modeByCreate });
    } finally {
      closeSync(fd);
    }
    if (f.tmp) publishSync(f.tmp, f.path, f.replace);
  } catch (e) {
    removeQuietSync(at);
    throw e;
  }
}

/** One buffer per worker for ranges it reads itself, grown to the largest range seen. */
let rangeBuffer = Buffer.allocUnsafeSlow(0);

/**
 * `length` bytes at `offset` of a pack file into rangeBuffer; or why not: damage (missing,
 * truncated) as a message, a failed read (the volume) as the error itself.
 */
function readRange(path: string, offset: number, length: number): Buffer | string | NodeJS.ErrnoException {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'is missing' : (e as NodeJS.ErrnoException);
  }
  try {
    if (rangeBuffer.length < length) rangeBuffer = Buffer.allocUnsafeSlow(nextPowerOfTwo(length));
    if (readFullSync(fd, rangeBuffer, 0, length, offset) < length) return 'is shorter than its index says (truncated)';
    return rangeBuffer.subarray(0, length);
  } catch (e) {
    return e as NodeJS.ErrnoException;
  } finally {
    closeSync(fd);
  }
}

function handle(req: WriteBatch): WriteReply {
  let data: Buffer;
  if (req.file) {
    const r = readRange(req.file.path, req.file.offset, req.length);
    if (typeof r === 'string') return { id: req.id, ok: false, kind: 'pack', message: r };
    if (!Buffer.isBuffer(r)) return { id: req.id, ok: false, kind: 'read', message: r.message, code: r.code };
    data = r;
  } else {
    data = Buffer.from(req.data as ArrayBuffer, req.base, req.length);
  }
  let bytes = 0;
  let current = '';
  let done = 0;
  try {
    for (const b of req.blobs) {
      current = b.hash;
      const raw = decodeVerified(data.subarray(b.offset, b.offset + b.length), b.codec, b.rawLength, b.hash);
      for (const f of b.files) {
        current = f.path;
        writeWhole(f, raw);
        bytes += raw.length;
        done++;
      }
      if (b.writes.length > 0) {
        const spans = nonZeroSpans(raw);
        for (const w of b.writes) {
          current = w.path;
          writeNonZeroSync(w.fd, raw, w.at, w.limit, spans);
          bytes += Math.max(0, Math.min(raw.length, w.limit - w.at));
        }
      }
    }
  } catch (e) {
    if (e instanceof BadBlob) return { id: req.id, ok: false, kind: 'integrity', hash: current, message: e.message, done };
    const err = e as NodeJS.ErrnoException;
    return { id: req.id, ok: false, kind: 'fs', path: current, message: err.message, code: err.code, done };
  }
  return { id: req.id, ok: true, bytes, done };
}

const pacer = new GcPacer();

parentPort?.on('message', (req: WriteBatch) => {
  if (req.data) pacer.moved(req.length);
  const buffers = rangeBuffer.length + decodeScratchBytes();
  parentPort?.postMessage(handle(req));
  // A buffer that grew left the old one as garbage, which this thread (a few objects per
  // batch) would keep for a long time. Bench tree restore: peak RSS 195–202 -> 174–182 MiB.
  if (rangeBuffer.length + decodeScratchBytes() !== buffers) collectGarbage();
});
