/**
 * The synchronous codec used inside worker threads (codec-worker, the file writers): one
 * definition of how a stored blob is decoded and verified.
 */
import { createHash } from 'node:crypto';
import { Decompressor } from 'zstd-napi';

const decompressor = new Decompressor();

/** The raw bytes of a stored blob, or the reason it is damaged. */
export function decodeVerifiedSync(stored: Buffer, codec: number, rawLength: number, hash: string): Buffer | string {
  let raw: Buffer;
  try {
    if (codec === 1) raw = decompressor.decompress(stored);
    else if (codec === 0) raw = stored;
    else return `has unknown codec ${codec}`;
  } catch (e) {
    return `cannot be decompressed (${(e as Error).message})`;
  }
  if (raw.length !== rawLength || createHash('sha256').update(raw).digest('hex') !== hash) return 'does not match its hash';
  return raw;
}
