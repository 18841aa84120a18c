/**
 * Packs: many compressed blobs followed by a header that lists them, so a pack can be read
 * (and an index rebuilt) without anything else:
 *
 *   [blob 0][blob 1]…[zstd(JSON header)][u32 LE header length]["DRCTLPK1"]
 *
 * A pack is named by the SHA-256 of all its bytes.
 */
import { compress as zstdCompress, decompress as zstdDecompress } from 'zstd-napi';
import { PACK_MAGIC, PACK_TRAILER_BYTES } from './format.js';

/** [hash hex, offset, stored length, raw length, codec] */
export type BlobEntry = [string, number, number, number, number];

export interface PackHeader {
  v: 1;
  blobs: BlobEntry[];
}

/** The header and trailer to append after a pack's blobs. */
export function packTail(blobs: BlobEntry[]): Buffer {
  const header = zstdCompress(Buffer.from(JSON.stringify({ v: 1, blobs } satisfies PackHeader)), { compressionLevel: 3 });
  const trailer = Buffer.alloc(PACK_TRAILER_BYTES);
  trailer.writeUInt32LE(header.length, 0);
  PACK_MAGIC.copy(trailer, 4);
  return Buffer.concat([header, trailer]);
}

/** Parse the header of a whole pack; throws a plain Error describing the damage. */
export function readPackHeader(pack: Buffer): PackHeader {
  if (pack.length < PACK_TRAILER_BYTES) throw new Error(`pack is truncated (${pack.length} bytes)`);
  const magic = pack.subarray(pack.length - PACK_MAGIC.length);
  if (!magic.equals(PACK_MAGIC)) throw new Error('pack trailer is missing (truncated or overwritten)');
  const len = pack.readUInt32LE(pack.length - PACK_TRAILER_BYTES);
  const start = pack.length - PACK_TRAILER_BYTES - len;
  if (start < 0) throw new Error('pack header length is out of range');
  const parsed = JSON.parse((zstdDecompress(pack.subarray(start, start + len))).toString('utf8')) as PackHeader;
  if (parsed.v !== 1 || !Array.isArray(parsed.blobs)) throw new Error('pack header is not a drctl v1 header');
  return parsed;
}
