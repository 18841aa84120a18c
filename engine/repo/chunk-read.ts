/**
 * Worker side of image backups from a local file: read a few chunks straight from the image
 * file, skip all-zero ones, hash the rest and, when asked, compress them — so a chunk's raw
 * bytes never cross threads and the main thread only appends stored bytes to packs. One
 * request carries several chunks (each thread hand-off costs ~50 µs of the main thread on a
 * 2-vCPU VM); the read buffer is kept from request to request.
 */
import { createHash } from 'node:crypto';
import { openSync, readFullSync, closeSync } from '../runtime/fs.js';
import { encodeBlob, lendEncoded, startReply, type Lease } from './codec-files.js';
import { compressBound } from './codec-sync.js';

/** One chunk: its length and where its data pieces are in the file (`at` = offset in the chunk). */
export interface ChunkToRead {
  length: number;
  pieces: { fileOffset: number; length: number; at: number }[];
}

export interface ReadChunksRequest {
  path: string;
  chunks: ChunkToRead[];
  /** Compress (and return the stored bytes) or only hash. */
  compress: boolean;
  level: number;
}

/** Per chunk: all-zero, or its hash and (when compressing) the length and codec of its stored bytes. */
export type ChunkResult = { zero: true } | { zero: false; hash: string; stored?: [length: number, codec: number] };

let scratch = Buffer.allocUnsafeSlow(0);

/**
 * The stored bytes of every compressed chunk come back in one shared buffer, in order, lent
 * to the main thread (lendEncoded in codec-files.ts): it copies them into its pack and hands
 * the buffer back.
 */
export function readChunks(req: ReadChunksRequest): { results: ChunkResult[]; data: Buffer; lease?: Lease } {
  const results: ChunkResult[] = [];
  startReply(req.compress ? req.chunks.reduce((a, c) => a + compressBound(c.length), 0) : 0);
  const fd = openSync(req.path, 'r');
  try {
    for (const c of req.chunks) {
      if (scratch.length < c.length) scratch = Buffer.allocUnsafeSlow(c.length);
      const raw = scratch.subarray(0, c.length);
      const covered = c.pieces.reduce((a, p) => a + p.length, 0);
      if (covered < c.length) raw.fill(0); // holes inside the chunk read as zeros
      for (const p of c.pieces) {
        const got = readFullSync(fd, raw, p.at, p.length, p.fileOffset);
        if (got < p.length) raw.fill(0, p.at + got, p.at + p.length); // file shorter than its map (growing raw image): zeros
      }
      if (isZero(raw)) {
        results.push({ zero: true });
      } else if (req.compress) {
        const b = encodeBlob(raw, req.level);
        results.push({ zero: false, hash: b.hash, stored: [b.storedLength, b.codec] });
      } else {
        results.push({ zero: false, hash: createHash('sha256').update(raw).digest('hex') });
      }
    }
  } finally {
    closeSync(fd);
  }
  return { results, ...lendEncoded() };
}

const ZEROS = Buffer.alloc(64 * 1024);

function isZero(b: Buffer): boolean {
  for (let at = 0; at < b.length; at += ZEROS.length) {
    const end = Math.min(at + ZEROS.length, b.length);
    if (b.compare(ZEROS, 0, end - at, at, end) !== 0) return false;
  }
  return true;
}
