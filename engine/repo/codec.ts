/**
 * Hashing and compression entry points. SHA-256 of chunks, compression, and decompression +
 * verification run in a worker-thread pool (codec-pool.ts), so every core is busy while the
 * main thread only schedules I/O.
 */
import { createHash } from 'node:crypto';
import { codecPool } from './codec-pool.js';

export const HASH_BYTES = 32;

export const Codec = { raw: 0, zstd: 1 } as const;
export type CodecId = (typeof Codec)[keyof typeof Codec];

/** SHA-256 on the worker pool. Takes the buffer and gives it back: use the returned `data`. */
export function hashOwned(data: Buffer): Promise<{ hash: string; data: Buffer }> {
  return codecPool().hash(data);
}

export function hashHex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Compress with zstd at `level`; the raw bytes are kept when compression saves less than 3%
 * (random data, already-compressed files): not worth a decompress on every restore.
 */
export async function encode(raw: Buffer, level: number): Promise<{ data: Buffer; codec: CodecId }> {
  const r = await codecPool().compress(raw, level);
  return { data: r.data, codec: r.codec as CodecId };
}

/** Decompress stored bytes and check them against `hash`; throws an Error naming the damage. */
export function decodeVerified(stored: Buffer, codec: number, rawLength: number, hash: string): Promise<Buffer> {
  return codecPool().decode(stored, codec, rawLength, hash);
}
