/**
 * The index maps a blob hash to where it lives (pack, offset, length). Index files are
 * written after the packs they describe, so an index entry never points at a pack that is
 * not on disk yet. In memory it is one hash table of typed arrays (BlobIndex); pack ids are
 * interned.
 */
import { once } from 'node:events';
import { CompressStream, decompress as zstdDecompress } from 'zstd-napi';
import type { BlobEntry } from './pack.js';
import { hashHex } from './codec.js';
import { isBlobHash } from './format.js';

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

/** Entries per slot at most, before the table doubles. */
const MAX_LOAD = 0.75;
const KEY_WORDS = 8; // a SHA-256 as eight 32-bit words

/**
 * Every blob of the repository, in an open-addressing hash table of typed arrays keyed by the
 * 32 hash bytes: ~50 bytes per slot, 67–133 per blob. A Map of hex strings to location objects
 * took ~200 bytes per blob on the V8 heap, which made a backup's peak memory grow with the
 * repository (an 8 GiB image adds 24k blobs to a 2 GiB one) and would need gigabytes for the
 * millions of chunks of a cluster's VMs. Lookups take the hex string the rest of the engine
 * uses and decode it into a scratch key.
 */
export class BlobIndex {
  private readonly packIds: string[] = [];
  private readonly packNo = new Map<string, number>();
  private count = 0;
  private keys = new Uint32Array(0);
  /** Pack number + 1 of each slot; 0 marks an empty slot. */
  private packs1 = new Uint32Array(0);
  private offsets = new Uint32Array(0);
  private lengths = new Uint32Array(0);
  private rawLengths = new Uint32Array(0);
  private codecs = new Uint8Array(0);
  /** Mark bits of prune's mark phase. */
  private marks = new Uint8Array(0);
  private readonly probe = new Uint32Array(KEY_WORDS);
  private readonly probeBytes = Buffer.from(this.probe.buffer);
  /** Index file ids that were loaded (for check / prune). */
  readonly files = new Set<string>();

  get size(): number {
    return this.count;
  }

  /** Forget everything (before loading the index files again). */
  clear(): void {
    this.packIds.length = 0;
    this.packNo.clear();
    this.resize(0);
    this.files.clear();
  }

  has(hash: string): boolean {
    return this.find(hash) >= 0;
  }

  get(hash: string): BlobLocation | undefined {
    const i = this.find(hash);
    if (i < 0) return undefined;
    return { pack: this.packIds[(this.packs1[i] as number) - 1] as string, offset: this.offsets[i] as number, length: this.lengths[i] as number, rawLength: this.rawLengths[i] as number, codec: this.codecs[i] as number };
  }

  /** Index the blobs of a pack; a blob already indexed keeps its first location. */
  addPack(packId: string, blobs: BlobEntry[]): void {
    let p = this.packNo.get(packId);
    if (p === undefined) {
      p = this.packIds.length;
      this.packIds.push(packId);
      this.packNo.set(packId, p);
    }
    for (const [hash, o, l, r, c] of blobs) {
      if (!this.toProbe(hash)) throw new Error(`not a blob hash: ${String(hash).slice(0, 70)}`);
      if (this.lookup() >= 0) continue;
      // The key is in probe; resize() does not touch it.
      if (this.count + 1 > this.capacity * MAX_LOAD) this.resize(Math.max(1024, this.capacity * 2));
      const i = this.emptySlotFor(this.probe);
      this.keys.set(this.probe, i * KEY_WORDS);
      this.packs1[i] = p + 1;
      this.offsets[i] = o;
      this.lengths[i] = l;
      this.rawLengths[i] = r;
      this.codecs[i] = c;
      this.count++;
    }
  }

  /** Mark a blob as referenced. True when it was indexed and not marked before. */
  mark(hash: string): boolean {
    const i = this.find(hash);
    if (i < 0 || this.marks[i]) return false;
    this.marks[i] = 1;
    return true;
  }

  isMarked(hash: string): boolean {
    const i = this.find(hash);
    return i >= 0 && this.marks[i] === 1;
  }

  /** The pack that answers for `hash` (one blob can sit in several packs; the first indexed wins). */
  packOf(hash: string): string | undefined {
    const i = this.find(hash);
    return i < 0 ? undefined : this.packIds[(this.packs1[i] as number) - 1];
  }

  /**
   * Every blob with its location, one pack at a time (for check). Only the pack
   * being yielded is turned into strings and objects: a table of slot numbers sorted by pack
   * (4 bytes per blob) is all that is held for the rest.
   */
  *entriesByPack(): Iterable<[string, [string, BlobLocation][]]> {
    const packs = this.packIds.length;
    const start = new Uint32Array(packs + 1); // start[p]: where pack p's slots begin in `order`
    for (let i = 0; i < this.capacity; i++) {
      const p1 = this.packs1[i] as number;
      if (p1 !== 0) start[p1] = (start[p1] as number) + 1;
    }
    for (let p = 0; p < packs; p++) start[p + 1] = (start[p + 1] as number) + (start[p] as number);
    const order = new Uint32Array(this.count);
    const next = start.slice(0, packs);
    for (let i = 0; i < this.capacity; i++) {
      const p1 = this.packs1[i] as number;
      if (p1 !== 0) order[next[p1 - 1]!++] = i;
    }
    const bytes = Buffer.from(this.keys.buffer, this.keys.byteOffset, this.keys.byteLength);
    for (let p = 0; p < packs; p++) {
      const from = start[p] as number;
      const to = start[p + 1] as number;
      if (from === to) continue;
      const pack = this.packIds[p] as string;
      const group: [string, BlobLocation][] = [];
      for (let k = from; k < to; k++) {
        const i = order[k] as number;
        const hash = bytes.toString('hex', i * KEY_WORDS * 4, (i + 1) * KEY_WORDS * 4);
        group.push([hash, { pack, offset: this.offsets[i] as number, length: this.lengths[i] as number, rawLength: this.rawLengths[i] as number, codec: this.codecs[i] as number }]);
      }
      yield [pack, group];
    }
  }

  private get capacity(): number {
    return this.packs1.length;
  }

  /** The slot holding `hash`, or -1 (also for what is not a hash). */
  private find(hash: string): number {
    return this.toProbe(hash) ? this.lookup() : -1;
  }

  /** Decode `hash` into `probe`; false when it is not 64 hex digits. */
  private toProbe(hash: string): boolean {
    return typeof hash === 'string' && hash.length === 64 && this.probeBytes.write(hash, 'hex') === 32;
  }

  /** The slot holding the key in `probe`, or -1. */
  private lookup(): number {
    if (this.capacity === 0) return -1;
    const k = this.probe;
    const keys = this.keys;
    const mask = this.capacity - 1;
    for (let i = (k[0] as number) & mask; ; i = (i + 1) & mask) {
      if (this.packs1[i] === 0) return -1;
      const at = i * KEY_WORDS;
      if (keys[at] === k[0] && keys[at + 1] === k[1] && keys[at + 2] === k[2] && keys[at + 3] === k[3]
        && keys[at + 4] === k[4] && keys[at + 5] === k[5] && keys[at + 6] === k[6] && keys[at + 7] === k[7]) return i;
    }
  }

  /** The first empty slot on the probe path of `key` (the table is never full). */
  private emptySlotFor(key: Uint32Array): number {
    const mask = this.capacity - 1;
    let i = (key[0] as number) & mask;
    while (this.packs1[i] !== 0) i = (i + 1) & mask;
    return i;
  }

  /** Move every entry into tables of `capacity` slots (a power of two, or 0 to empty the index). */
  private resize(capacity: number): void {
    const old = { keys: this.keys, packs1: this.packs1, offsets: this.offsets, lengths: this.lengths, rawLengths: this.rawLengths, codecs: this.codecs, marks: this.marks };
    this.keys = new Uint32Array(capacity * KEY_WORDS);
    this.packs1 = new Uint32Array(capacity);
    this.offsets = new Uint32Array(capacity);
    this.lengths = new Uint32Array(capacity);
    this.rawLengths = new Uint32Array(capacity);
    this.codecs = new Uint8Array(capacity);
    this.marks = new Uint8Array(capacity);
    if (capacity === 0) {
      this.count = 0;
      return;
    }
    for (let j = 0; j < old.packs1.length; j++) {
      if (old.packs1[j] === 0) continue;
      const key = old.keys.subarray(j * KEY_WORDS, (j + 1) * KEY_WORDS);
      const i = this.emptySlotFor(key);
      this.keys.set(key, i * KEY_WORDS);
      this.packs1[i] = old.packs1[j] as number;
      this.offsets[i] = old.offsets[j] as number;
      this.lengths[i] = old.lengths[j] as number;
      this.rawLengths[i] = old.rawLengths[j] as number;
      this.codecs[i] = old.codecs[j] as number;
      this.marks[i] = old.marks[j] as number;
    }
  }
}

/**
 * The entries of one pack as a backup keeps them until its index file is written: 64 bytes per
 * blob instead of a tuple and a 64-character string (~200 bytes).
 */
export class CompactEntries {
  private readonly hashes: Buffer;
  /** offset, stored length, raw length, codec of each entry. */
  private readonly nums: Float64Array;

  constructor(entries: BlobEntry[]) {
    this.hashes = Buffer.allocUnsafe(entries.length * 32);
    this.nums = new Float64Array(entries.length * 4);
    entries.forEach(([hash, o, l, r, c], k) => {
      this.hashes.write(hash, k * 32, 'hex');
      this.nums.set([o, l, r, c], k * 4);
    });
  }

  toEntries(): BlobEntry[] {
    const out: BlobEntry[] = [];
    for (let k = 0; k * 4 < this.nums.length; k++) {
      const [o, l, r, c] = this.nums.subarray(k * 4, k * 4 + 4) as unknown as [number, number, number, number];
      out.push([this.hashes.toString('hex', k * 32, (k + 1) * 32), o, l, r, c]);
    }
    return out;
  }
}

/**
 * zstd(JSON) of an index file, compressed as it is written, one pack at a time: the JSON text
 * of a backup's index (~110 bytes per blob) is never whole in memory. It was the last peak of
 * a backup and grew with the disk: 3.5 MiB of text and its bytes for an 8 GiB image.
 */
export async function encodeIndexFile(packs: Iterable<{ id: string; blobs: BlobEntry[] }>): Promise<{ id: string; bytes: Buffer }> {
  const z = new CompressStream({ compressionLevel: 3 });
  const out: Buffer[] = [];
  z.on('data', (b: Buffer) => out.push(b));
  const done = once(z, 'end');
  z.write('{"v":1,"packs":[');
  let first = true;
  for (const p of packs) {
    z.write((first ? '' : ',') + JSON.stringify(p));
    first = false;
  }
  z.end(']}');
  await done;
  const bytes = Buffer.concat(out);
  return { id: hashHex(bytes), bytes };
}

export async function decodeIndexFile(bytes: Buffer): Promise<IndexFile> {
  const parsed = JSON.parse((zstdDecompress(bytes)).toString('utf8')) as IndexFile;
  if (parsed.v !== 1 || !Array.isArray(parsed.packs)) throw new Error('not a drctl v1 index file');
  for (const p of parsed.packs) {
    if (!isBlobHash(p?.id) || !Array.isArray(p.blobs) || !p.blobs.every(isBlobEntry)) throw new Error('an index file entry is damaged');
  }
  return parsed;
}

const U32_MAX = 0xffffffff;

/** A [hash, offset, stored length, raw length, codec] whose numbers fit the index's slots. */
function isBlobEntry(e: unknown): e is BlobEntry {
  if (!Array.isArray(e) || e.length !== 5 || !isBlobHash(e[0])) return false;
  const [, o, l, r, c] = e as unknown[];
  const u32 = (x: unknown): boolean => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= U32_MAX;
  return u32(o) && u32(l) && u32(r) && Number.isInteger(c) && (c as number) >= 0 && (c as number) <= 255;
}
