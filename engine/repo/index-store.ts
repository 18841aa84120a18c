/**
 * The index maps a blob hash to where it lives (pack, offset, length). Index files are
 * written after the packs they describe, so an index entry never points at a pack that is
 * not on disk yet. In memory it is one Map; pack ids are interned.
 */
import { compress as zstdCompress, decompress as zstdDecompress } from 'zstd-napi';
import type { BlobEntry } from './pack.js';
import { hashHex } from './codec.js';

export interface BlobLocation {
  pack: string;
  offset: number;
  length: number;
  rawLength: number;
  codec: number;
}

export interface IndexFile {
  v: 1;
  packs: { id: string; blobs: BlobEntry[] }[];
}

interface Slot {
  p: number;
  o: number;
  l: number;
  r: number;
  c: number;
  /** Mark bit of prune's mark phase. */
  u: 0 | 1;
}

export class BlobIndex {
  private readonly packIds: string[] = [];
  private readonly packNo = new Map<string, number>();
  private readonly blobs = new Map<string, Slot>();
  /** Index file ids that were loaded (for check / prune). */
  readonly files = new Set<string>();

  get size(): number {
    return this.blobs.size;
  }

  /** Forget everything (before loading the index files again). */
  clear(): void {
    this.packIds.length = 0;
    this.packNo.clear();
    this.blobs.clear();
    this.files.clear();
  }

  has(hash: string): boolean {
    return this.blobs.has(hash);
  }

  get(hash: string): BlobLocation | undefined {
    const s = this.blobs.get(hash);
    if (!s) return undefined;
    return { pack: this.packIds[s.p] as string, offset: s.o, length: s.l, rawLength: s.r, codec: s.c };
  }

  addPack(packId: string, blobs: BlobEntry[]): void {
    let p = this.packNo.get(packId);
    if (p === undefined) {
      p = this.packIds.length;
      this.packIds.push(packId);
      this.packNo.set(packId, p);
    }
    for (const [hash, o, l, r, c] of blobs) {
      if (!this.blobs.has(hash)) this.blobs.set(hash, { p, o, l, r, c, u: 0 });
    }
  }

  /** Mark a blob as referenced. True when it was indexed and not marked before. */
  mark(hash: string): boolean {
    const s = this.blobs.get(hash);
    if (!s || s.u) return false;
    s.u = 1;
    return true;
  }

  isMarked(hash: string): boolean {
    return this.blobs.get(hash)?.u === 1;
  }

  /** The pack that answers for `hash` (one blob can sit in several packs; the first indexed wins). */
  packOf(hash: string): string | undefined {
    const s = this.blobs.get(hash);
    return s ? this.packIds[s.p] : undefined;
  }

  packs(): string[] {
    return [...this.packIds];
  }

  /** Every blob with its location, grouped by pack (for check --read-data and prune). */
  *entriesByPack(): Iterable<[string, [string, BlobLocation][]]> {
    const groups = new Map<number, [string, BlobLocation][]>();
    for (const [hash, s] of this.blobs) {
      let g = groups.get(s.p);
      if (!g) groups.set(s.p, (g = []));
      g.push([hash, { pack: this.packIds[s.p] as string, offset: s.o, length: s.l, rawLength: s.r, codec: s.c }]);
    }
    for (const [p, g] of groups) yield [this.packIds[p] as string, g];
  }
}

export async function encodeIndexFile(packs: { id: string; blobs: BlobEntry[] }[]): Promise<{ id: string; bytes: Buffer }> {
  const bytes = zstdCompress(Buffer.from(JSON.stringify({ v: 1, packs } satisfies IndexFile)), { compressionLevel: 3 });
  return { id: hashHex(bytes), bytes };
}

export async function decodeIndexFile(bytes: Buffer): Promise<IndexFile> {
  const parsed = JSON.parse((zstdDecompress(bytes)).toString('utf8')) as IndexFile;
  if (parsed.v !== 1 || !Array.isArray(parsed.packs)) throw new Error('not a drctl v1 index file');
  return parsed;
}
