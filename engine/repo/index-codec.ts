/**
 * Index files on disk: their binary layout (FORMAT.md), and CompactEntries, the entries of
 * one pack in that layout, which is also how a backup keeps them in memory until it writes
 * their index file.
 */
import { zstdCompress, zstdDecompress } from './zstd.js';
import type { BlobEntry } from './pack.js';
import { hashHex } from './codec.js';
import { isBlobHash } from './format.js';

export interface IndexFile {
  packs: { id: string; blobs: CompactEntries }[];
}

/** One entry of an index file (and of CompactEntries): hash, offset, stored length, raw length (u32 LE), codec (u8). */
export const ENTRY_BYTES = 32 + 4 * 3 + 1;
/** An index file's pack record: pack id, u32 LE number of entries, then the entries. */
const PACK_HEAD_BYTES = 32 + 4;
const INDEX_MAGIC = Buffer.from('DRCTLIX2');

/**
 * The entries of one pack in the layout of index files, 45 bytes a blob instead of a tuple and
 * a 64-character string (~200 bytes): how a backup keeps the entries of the packs it wrote
 * until it writes their index file, and how index files are read.
 */
export class CompactEntries implements Iterable<BlobEntry> {
  /** `bytes`: whole entries, as an index file holds them. */
  constructor(readonly bytes: Buffer) {}

  static of(entries: BlobEntry[]): CompactEntries {
    const bytes = Buffer.allocUnsafe(entries.length * ENTRY_BYTES);
    entries.forEach(([hash, o, l, r, c], k) => {
      const at = k * ENTRY_BYTES;
      if (bytes.write(hash, at, 32, 'hex') !== 32) throw new Error(`not a blob hash: ${String(hash).slice(0, 70)}`);
      bytes.writeUInt32LE(o, at + 32);
      bytes.writeUInt32LE(l, at + 36);
      bytes.writeUInt32LE(r, at + 40);
      bytes.writeUInt8(c, at + 44);
    });
    return new CompactEntries(bytes);
  }

  get length(): number {
    return this.bytes.length / ENTRY_BYTES;
  }

  /** Offset, stored length, raw length and codec of entry `k`. */
  numbersAt(k: number): [offset: number, length: number, rawLength: number, codec: number] {
    const at = k * ENTRY_BYTES;
    const b = this.bytes;
    return [b.readUInt32LE(at + 32), b.readUInt32LE(at + 36), b.readUInt32LE(at + 40), b[at + 44] as number];
  }

  hashBytes(k: number): Buffer {
    return this.bytes.subarray(k * ENTRY_BYTES, k * ENTRY_BYTES + 32);
  }

  *[Symbol.iterator](): Iterator<BlobEntry> {
    for (let k = 0; k < this.length; k++) yield [this.hashBytes(k).toString('hex'), ...this.numbersAt(k)];
  }

  toEntries(): BlobEntry[] {
    return [...this];
  }
}

/**
 * An index file: zstd of "DRCTLIX2", then per pack its id, the number of its entries and the
 * entries, 45 bytes each (FORMAT.md). Built from the entries as a backup keeps them, with no
 * text in between: the JSON of format 1 (~110 bytes a blob as text, then as objects) was a
 * backup's last memory peak and grew with the disk (+11 MiB for an 8 GiB image).
 */
export async function encodeIndexFile(packs: Iterable<{ id: string; blobs: CompactEntries }>): Promise<{ id: string; bytes: Buffer }> {
  const parts: Buffer[] = [INDEX_MAGIC];
  for (const p of packs) {
    const head = Buffer.allocUnsafe(PACK_HEAD_BYTES);
    if (head.write(p.id, 0, 32, 'hex') !== 32) throw new Error(`not a pack id: ${p.id.slice(0, 70)}`);
    head.writeUInt32LE(p.blobs.length, 32);
    parts.push(head, p.blobs.bytes);
  }
  const bytes = zstdCompress(Buffer.concat(parts), 1); // hashes barely compress: level 3 saves 1 %
  return { id: hashHex(bytes), bytes };
}

/** Read an index file, of either layout (format 1 wrote JSON); throws when it is damaged. */
export async function decodeIndexFile(bytes: Buffer): Promise<IndexFile> {
  const plain = zstdDecompress(bytes);
  if (plain.subarray(0, INDEX_MAGIC.length).equals(INDEX_MAGIC)) return decodeBinary(plain);
  const parsed = JSON.parse(plain.toString('utf8')) as { v: number; packs: { id: string; blobs: BlobEntry[] }[] };
  if (parsed.v !== 1 || !Array.isArray(parsed.packs)) throw new Error('not a drctl index file');
  for (const p of parsed.packs) {
    if (!isBlobHash(p?.id) || !Array.isArray(p.blobs) || !p.blobs.every(isBlobEntry)) throw new Error('an index file entry is damaged');
  }
  return { packs: parsed.packs.map((p) => ({ id: p.id, blobs: CompactEntries.of(p.blobs) })) };
}

/** The binary layout; each pack's entries are a view into `plain`. */
function decodeBinary(plain: Buffer): IndexFile {
  const packs: IndexFile['packs'] = [];
  let at = INDEX_MAGIC.length;
  while (at < plain.length) {
    if (plain.length - at < PACK_HEAD_BYTES) throw new Error('an index file entry is damaged (cut short)');
    const id = plain.toString('hex', at, at + 32);
    const end = at + PACK_HEAD_BYTES + plain.readUInt32LE(at + 32) * ENTRY_BYTES;
    if (end > plain.length) throw new Error('an index file entry is damaged (cut short)');
    packs.push({ id, blobs: new CompactEntries(plain.subarray(at + PACK_HEAD_BYTES, end)) });
    at = end;
  }
  return { packs };
}

const U32_MAX = 0xffffffff;

/** A [hash, offset, stored length, raw length, codec] whose numbers fit the index's slots. */
function isBlobEntry(e: unknown): e is BlobEntry {
  if (!Array.isArray(e) || e.length !== 5 || !isBlobHash(e[0])) return false;
  const [, o, l, r, c] = e as unknown[];
  const u32 = (x: unknown): boolean => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= U32_MAX;
  return u32(o) && u32(l) && u32(r) && Number.isInteger(c) && (c as number) >= 0 && (c as number) <= 255;
}
