/**
 * Packs: many compressed blobs followed by a header that lists them, so a pack can be read
 * (and an index rebuilt) without anything else:
 *
 *   [blob 0][blob 1]…[zstd(JSON header)][u32 LE header length]["DRCTLPK2"]
 *
 * A pack is named by the SHA-256 of its tail (the header and the trailer). The header holds
 * every blob's hash, place and length, and every blob is verified against its hash when it is
 * read, so the name covers the whole pack without hashing its bulk: that pass cost the main
 * thread of a backup ~0.5 s of CPU per 740 MiB stored, on a machine whose two cores the codec
 * workers already keep busy. Packs of earlier builds (`DRCTLPK1`) are named by the SHA-256 of
 * all their bytes and are still read and checked.
 */
import { createHash } from 'node:crypto';
import { zstdCompress, zstdDecompress } from './zstd.js';
import { PACK_MAGIC, PACK_MAGIC_WHOLE, PACK_TRAILER_BYTES } from './format.js';

/** [hash hex, offset, stored length, raw length, codec] */
export type BlobEntry = [string, number, number, number, number];

export interface PackHeader {
  v: 1;
  blobs: BlobEntry[];
}

/** The header and trailer to append after a pack's blobs. */
export function packTail(blobs: BlobEntry[]): Buffer {
  const header = zstdCompress(Buffer.from(JSON.stringify({ v: 1, blobs } satisfies PackHeader)), 3);
  const trailer = Buffer.alloc(PACK_TRAILER_BYTES);
  trailer.writeUInt32LE(header.length, 0);
  PACK_MAGIC.copy(trailer, 4);
  return Buffer.concat([header, trailer]);
}

/** The id of a pack written now, from its tail (what packTail gave). */
export function packIdOfTail(tail: Buffer): string {
  return createHash('sha256').update(tail).digest('hex');
}

/** Where a whole pack's header starts, and whether it is named by its tail; throws a plain Error describing the damage. */
function locateHeader(pack: Buffer): { start: number; byTail: boolean } {
  if (pack.length < PACK_TRAILER_BYTES) throw new Error(`pack is truncated (${pack.length} bytes)`);
  const magic = pack.subarray(pack.length - PACK_MAGIC.length);
  const byTail = magic.equals(PACK_MAGIC);
  if (!byTail && !magic.equals(PACK_MAGIC_WHOLE)) throw new Error('pack trailer is missing (truncated or overwritten)');
  const start = pack.length - PACK_TRAILER_BYTES - pack.readUInt32LE(pack.length - PACK_TRAILER_BYTES);
  if (start < 0) throw new Error('pack header length is out of range');
  return { start, byTail };
}

/** Parse the header of a whole pack; throws a plain Error describing the damage. */
export function readPackHeader(pack: Buffer): PackHeader {
  return parseHeader(pack, locateHeader(pack).start);
}

function parseHeader(pack: Buffer, start: number): PackHeader {
  const parsed = JSON.parse((zstdDecompress(pack.subarray(start, pack.length - PACK_TRAILER_BYTES))).toString('utf8')) as PackHeader;
  if (parsed.v !== 1 || !Array.isArray(parsed.blobs)) throw new Error('pack header is not a drctl v1 header');
  return parsed;
}

export interface PackInspection {
  id: string;
  headerOk: boolean;
}

/**
 * The id a whole pack's bytes give (to compare with its name), and whether its header parses.
 * id is '' when the trailer is unreadable, since then the naming rule is unknown.
 */
export function inspectPack(pack: Buffer): PackInspection {
  let located: { start: number; byTail: boolean };
  try {
    located = locateHeader(pack);
  } catch {
    return { id: '', headerOk: false };
  }
  let headerOk = true;
  try {
    parseHeader(pack, located.start);
  } catch {
    headerOk = false;
  }
  const id = createHash('sha256').update(located.byTail ? pack.subarray(located.start) : pack).digest('hex');
  return { id, headerOk };
}
