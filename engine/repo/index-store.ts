/**
 * The index maps a blob hash to where it lives (pack, offset, length). Index files are
 * written after the packs they describe, so an index entry never points at a pack that is
 * not on disk yet. In memory it is one hash table of typed arrays (BlobIndex); pack ids are
 * interned. The layout of index files is index-codec.ts.
 */
import { endianness } from 'node:os';
import type { BlobEntry } from './pack.js';
import { CompactEntries, ENTRY_BYTES } from './index-codec.js';

export interface BlobLocation {
  pack: string;
  offset: number;
  length: number;
  rawLength: number;
  codec: number;
}

/** Entries per slot at most, before the table doubles. */
const MAX_LOAD = 0.75;
const KEY_WORDS = 8; // a SHA-256 as eight 32-bit words
const LITTLE_ENDIAN = endianness() === 'LE';
/** Entries per block: 1024 × 50 bytes = one 50 KiB allocation. */
const BLOCK_BITS = 10;
const BLOCK = 1 << BLOCK_BITS;

/** The entries `n << BLOCK_BITS` … of the index, each field in an array of its own over one buffer. */
class Block {
  readonly keys: Uint32Array;
  readonly packs: Uint32Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  readonly rawLengths: Uint32Array;
  readonly codecs: Uint8Array;
  /** Mark bits of prune's mark phase. */
  readonly marks: Uint8Array;

  constructor() {
    const mem = new ArrayBuffer(BLOCK * (4 * KEY_WORDS + 4 * 4 + 2));
    let at = 0;
    const u32 = (n: number): Uint32Array => new Uint32Array(mem, (at += 4 * n) - 4 * n, n);
    this.keys = u32(BLOCK * KEY_WORDS);
    this.packs = u32(BLOCK);
    this.offsets = u32(BLOCK);
    this.lengths = u32(BLOCK);
    this.rawLengths = u32(BLOCK);
    this.codecs = new Uint8Array(mem, at, BLOCK);
    this.marks = new Uint8Array(mem, at + BLOCK, BLOCK);
  }
}

/**
 * Every blob of the repository: its entries in blocks of typed arrays (50 bytes each, appended
 * in the order they are indexed), found through an open-addressing hash table of entry
 * numbers and one word of each key (8 bytes a slot): ~61–71 bytes per blob, and growing the
 * table copies only its 8 bytes a slot. A Map of hex strings to location objects took ~200
 * bytes per blob on the V8 heap, and a table holding the entries in its slots 67–133 (with a
 * copy of them all at each doubling): an 8 GiB image adds 24k blobs to a 2 GiB one, and a
 * cluster's VMs make millions. Lookups take the hex string the rest of the engine uses and
 * decode it into a scratch key.
 */
export class BlobIndex {
  private readonly packIds: string[] = [];
  private readonly packNo = new Map<string, number>();
  private blocks: Block[] = [];
  private count = 0;
  /** Entry number + 1 of each slot; 0 marks an empty slot. */
  private slots = new Uint32Array(0);
  /** Word 1 of the key in each slot (word 0 chose the slot): most probes end here. */
  private tags = new Uint32Array(0);
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
    this.blocks = [];
    this.count = 0;
    this.slots = new Uint32Array(0);
    this.tags = new Uint32Array(0);
    this.files.clear();
  }

  has(hash: string): boolean {
    return this.find(hash) >= 0;
  }

  get(hash: string): BlobLocation | undefined {
    const e = this.find(hash);
    if (e < 0) return undefined;
    const b = this.blockOf(e);
    const k = e & (BLOCK - 1);
    return { pack: this.packIds[b.packs[k] as number] as string, offset: b.offsets[k] as number, length: b.lengths[k] as number, rawLength: b.rawLengths[k] as number, codec: b.codecs[k] as number };
  }

  /** Index the blobs of a pack; a blob already indexed keeps its first location. */
  addPack(packId: string, blobs: BlobEntry[] | CompactEntries): void {
    let p = this.packNo.get(packId);
    if (p === undefined) {
      p = this.packIds.length;
      this.packIds.push(packId);
      this.packNo.set(packId, p);
    }
    if (blobs instanceof CompactEntries) {
      // Index files are read this way: the hash bytes go straight into the probe key.
      this.reserve(this.count + blobs.length);
      const b = blobs.bytes;
      const k = this.probe;
      for (let at = 0; at < b.length; at += ENTRY_BYTES) {
        // The key words as toProbe gives them (the hash bytes read in this machine's order);
        // Buffer.copy of 32 bytes took twice as long as all the rest when opening a repository.
        for (let w = 0; w < KEY_WORDS; w++) k[w] = LITTLE_ENDIAN ? b.readUInt32LE(at + 4 * w) : b.readUInt32BE(at + 4 * w);
        this.addProbed(p, b.readUInt32LE(at + 32), b.readUInt32LE(at + 36), b.readUInt32LE(at + 40), b[at + 44] as number);
      }
      return;
    }
    for (const [hash, o, l, r, c] of blobs) {
      if (!this.toProbe(hash)) throw new Error(`not a blob hash: ${String(hash).slice(0, 70)}`);
      this.addProbed(p, o, l, r, c);
    }
  }

  /** Make room for `entries` without growing the table on the way (as reading many index files would, once per doubling). */
  reserve(entries: number): void {
    let capacity = Math.max(1024, this.capacity);
    while (entries > capacity * MAX_LOAD) capacity *= 2;
    if (capacity > this.capacity) this.resize(capacity);
  }

  /** Add the blob whose key is in `probe`, unless it is indexed already. */
  private addProbed(pack: number, offset: number, length: number, rawLength: number, codec: number): void {
    if (this.lookup() >= 0) return;
    const e = this.count;
    if ((e & (BLOCK - 1)) === 0) this.blocks.push(new Block());
    const b = this.blockOf(e);
    const k = e & (BLOCK - 1);
    b.keys.set(this.probe, k * KEY_WORDS);
    b.packs[k] = pack;
    b.offsets[k] = offset;
    b.lengths[k] = length;
    b.rawLengths[k] = rawLength;
    b.codecs[k] = codec;
    this.count++;
    if (this.count > this.capacity * MAX_LOAD) this.resize(Math.max(1024, this.capacity * 2));
    else this.insert(e, this.probe[0] as number, this.probe[1] as number);
  }

  /** Mark a blob as referenced. True when it was indexed and not marked before. */
  mark(hash: string): boolean {
    const e = this.find(hash);
    if (e < 0) return false;
    const marks = this.blockOf(e).marks;
    const k = e & (BLOCK - 1);
    if (marks[k]) return false;
    marks[k] = 1;
    return true;
  }

  isMarked(hash: string): boolean {
    const e = this.find(hash);
    return e >= 0 && this.blockOf(e).marks[e & (BLOCK - 1)] === 1;
  }

  /** The pack that answers for `hash` (one blob can sit in several packs; the first indexed wins). */
  packOf(hash: string): string | undefined {
    const e = this.find(hash);
    return e < 0 ? undefined : this.packIds[this.blockOf(e).packs[e & (BLOCK - 1)] as number];
  }

  /**
   * Every blob with its location, one pack at a time (for check). Only the pack
   * being yielded is turned into strings and objects: a table of entry numbers sorted by pack
   * (4 bytes per blob) is all that is held for the rest.
   */
  *entriesByPack(): Iterable<[string, [string, BlobLocation][]]> {
    const packs = this.packIds.length;
    const start = new Uint32Array(packs + 1); // start[p]: where pack p's entries begin in `order`
    for (let e = 0; e < this.count; e++) {
      const p1 = this.packOfEntry(e) + 1;
      start[p1] = (start[p1] as number) + 1;
    }
    for (let p = 0; p < packs; p++) start[p + 1] = (start[p + 1] as number) + (start[p] as number);
    const order = new Uint32Array(this.count);
    const next = start.slice(0, packs);
    for (let e = 0; e < this.count; e++) order[next[this.packOfEntry(e)]!++] = e;
    for (let p = 0; p < packs; p++) {
      const from = start[p] as number;
      const to = start[p + 1] as number;
      if (from === to) continue;
      const pack = this.packIds[p] as string;
      const group: [string, BlobLocation][] = [];
      for (let n = from; n < to; n++) {
        const e = order[n] as number;
        const b = this.blockOf(e);
        const k = e & (BLOCK - 1);
        const hash = Buffer.from(b.keys.buffer, b.keys.byteOffset + k * KEY_WORDS * 4, KEY_WORDS * 4).toString('hex');
        group.push([hash, { pack, offset: b.offsets[k] as number, length: b.lengths[k] as number, rawLength: b.rawLengths[k] as number, codec: b.codecs[k] as number }]);
      }
      yield [pack, group];
    }
  }

  private get capacity(): number {
    return this.slots.length;
  }

  private blockOf(e: number): Block {
    return this.blocks[e >>> BLOCK_BITS] as Block;
  }

  private packOfEntry(e: number): number {
    return this.blockOf(e).packs[e & (BLOCK - 1)] as number;
  }

  /** The entry holding `hash`, or -1 (also for what is not a hash). */
  private find(hash: string): number {
    return this.toProbe(hash) ? this.lookup() : -1;
  }

  /** Decode `hash` into `probe`; false when it is not 64 hex digits. */
  private toProbe(hash: string): boolean {
    return typeof hash === 'string' && hash.length === 64 && this.probeBytes.write(hash, 'hex') === 32;
  }

  /** The entry holding the key in `probe`, or -1. */
  private lookup(): number {
    if (this.capacity === 0) return -1;
    const k = this.probe;
    const slots = this.slots;
    const tags = this.tags;
    const mask = this.capacity - 1;
    const tag = k[1] as number;
    for (let i = (k[0] as number) & mask; ; i = (i + 1) & mask) {
      const e1 = slots[i] as number;
      if (e1 === 0) return -1;
      if (tags[i] !== tag) continue;
      const keys = this.blockOf(e1 - 1).keys;
      const at = ((e1 - 1) & (BLOCK - 1)) * KEY_WORDS;
      if (keys[at] === k[0] && keys[at + 2] === k[2] && keys[at + 3] === k[3] && keys[at + 4] === k[4]
        && keys[at + 5] === k[5] && keys[at + 6] === k[6] && keys[at + 7] === k[7]) return e1 - 1;
    }
  }

  /** Put entry `e` (key words 0 and 1 given) in the first empty slot on its probe path (the table is never full). */
  private insert(e: number, word0: number, word1: number): void {
    const mask = this.capacity - 1;
    let i = word0 & mask;
    while (this.slots[i] !== 0) i = (i + 1) & mask;
    this.slots[i] = e + 1;
    this.tags[i] = word1;
  }

  /** A table of `capacity` slots (a power of two) holding every entry. */
  private resize(capacity: number): void {
    this.slots = new Uint32Array(capacity);
    this.tags = new Uint32Array(capacity);
    for (let e = 0; e < this.count; e++) {
      const keys = this.blockOf(e).keys;
      const at = (e & (BLOCK - 1)) * KEY_WORDS;
      this.insert(e, keys[at] as number, keys[at + 1] as number);
    }
  }
}
