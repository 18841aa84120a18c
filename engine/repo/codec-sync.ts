/**
 * The synchronous codec used inside worker threads (codec-worker, the file writers): one
 * definition of how a blob is compressed for storage, and of how a stored blob is decoded and
 * verified.
 *
 * Decompression can go into a reusable scratch buffer: on restore and check the raw bytes
 * are written or hashed at once and then dropped, and allocating a fresh 256 KiB buffer per
 * chunk left V8 holding hundreds of MiB of garbage ArrayBuffers between collections.
 */
import { createHash } from 'node:crypto';
import { compressionContext, decompressionContext, zstd, zstdCompress } from './zstd.js';

let scratch = Buffer.allocUnsafeSlow(1024 * 1024);

const PROBE_BYTES = 8 * 1024;
const probeOut = Buffer.allocUnsafeSlow(zstd.compressBound(PROBE_BYTES));

/**
 * Random or already-compressed data: two small samples that do not compress → store raw.
 * `squeeze` gives the compressed length of a sample at level 1.
 */
function looksIncompressible(raw: Buffer, squeeze: (sample: Buffer) => number): boolean {
  if (raw.length < 8 * PROBE_BYTES) return false;
  const mid = raw.length >> 1;
  for (const s of [raw.subarray(0, PROBE_BYTES), raw.subarray(mid, mid + PROBE_BYTES)]) {
    if (squeeze(s) < s.length * 0.95) return false;
  }
  return true;
}

/**
 * zstd at `level`, or `data` itself (codec 0) when that saves less than 3 %: not worth a
 * decompression on every restore. The result is never longer than `data`.
 */
export function compressSync(data: Buffer, level: number): { data: Buffer; codec: number } {
  if (!looksIncompressible(data, (sample) => compressionContext(1).compress2(probeOut, sample))) {
    const z = zstdCompress(data, level);
    if (z.length < data.length * 0.97) return { data: z, codec: 1 };
  }
  return { data, codec: 0 };
}

/** Bytes of the reusable decode buffer (threads that keep few objects collect garbage when it grows). */
export function decodeScratchBytes(): number {
  return scratch.length;
}

export function nextPowerOfTwo(n: number): number {
  return n <= 1 ? 1 : 2 ** Math.ceil(Math.log2(n));
}

/**
 * The raw bytes of a stored blob, or the reason it is damaged. With `reuse`, the result is a
 * view into a scratch buffer that the next call overwrites: use it before calling again.
 */
export function decodeVerifiedSync(stored: Buffer, codec: number, rawLength: number, hash: string, reuse = false): Buffer | string {
  let raw: Buffer;
  try {
    if (codec === 1) {
      const size = zstd.getFrameContentSize(stored);
      if (size === null || size !== rawLength) return 'does not match its recorded length';
      if (reuse && scratch.length < size) scratch = Buffer.allocUnsafeSlow(nextPowerOfTwo(size)); // few growths, each leaves garbage
      const dst = reuse ? scratch.subarray(0, size) : Buffer.allocUnsafeSlow(size);
      if (decompressionContext().decompress(dst, stored) !== size) return 'does not match its recorded length';
      raw = dst;
    } else if (codec === 0) {
      raw = stored;
    } else {
      return `has unknown codec ${codec}`;
    }
  } catch (e) {
    return `cannot be decompressed (${(e as Error).message})`;
  }
  if (raw.length !== rawLength || createHash('sha256').update(raw).digest('hex') !== hash) return 'does not match its hash';
  return raw;
}

export const compressBound = (bytes: number): number => zstd.compressBound(bytes);

/**
 * compressSync without allocating: the frame goes into `dst`, which must have room for
 * compressBound(data.length) bytes. Returns its length, or codec 0 (nothing written) when
 * `data` is to be stored as it is. The codec workers encode whole files this way, since a
 * fresh buffer per chunk costs page faults and garbage collections.
 */
export function compressInto(data: Buffer, level: number, dst: Buffer): { length: number; codec: number } {
  if (!looksIncompressible(data, (sample) => compressionContext(1).compress2(probeOut, sample))) {
    const n = compressionContext(level).compress2(dst, data);
    if (n < data.length * 0.97) return { length: n, codec: 1 };
  }
  return { length: 0, codec: 0 };
}
