/**
 * The synchronous codec used inside worker threads (codec-worker, the file writers): one
 * definition of how a stored blob is decoded and verified.
 *
 * Decompression can go into a reusable scratch buffer: on restore and check the raw bytes
 * are written or hashed at once and then dropped, and allocating a fresh 256 KiB buffer per
 * chunk left V8 holding hundreds of MiB of garbage ArrayBuffers between collections.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';

type Binding = typeof import('zstd-napi/binding.js');
const binding = createRequire(import.meta.url)('zstd-napi/binding.js') as Binding;
const dctx = new binding.DCtx();
let scratch = Buffer.allocUnsafeSlow(1024 * 1024);

/**
 * The raw bytes of a stored blob, or the reason it is damaged. With `reuse`, the result is a
 * view into a scratch buffer that the next call overwrites: use it before calling again.
 */
export function decodeVerifiedSync(stored: Buffer, codec: number, rawLength: number, hash: string, reuse = false): Buffer | string {
  let raw: Buffer;
  try {
    if (codec === 1) {
      const size = binding.getFrameContentSize(stored);
      if (size === null || size !== rawLength) return 'does not match its recorded length';
      if (reuse && scratch.length < size) scratch = Buffer.allocUnsafeSlow(size);
      const dst = reuse ? scratch.subarray(0, size) : Buffer.allocUnsafeSlow(size);
      if (dctx.decompress(dst, stored) !== size) return 'does not match its recorded length';
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
