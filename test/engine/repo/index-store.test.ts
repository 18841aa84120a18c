/**
 * The in-memory index is a hash table of typed arrays keyed by hash bytes: it must answer like
 * the Map of hex strings it replaced, across its growth, and index files must round-trip
 * through it and refuse damaged entries.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { compress, decompress } from 'zstd-napi';
import { BlobIndex } from '../../../engine/repo/index-store.js';
import { CompactEntries, decodeIndexFile, encodeIndexFile } from '../../../engine/repo/index-codec.js';
import type { BlobEntry } from '../../../engine/repo/pack.js';

const hashOf = (n: number): string => createHash('sha256').update(`blob ${n}`).digest('hex');
const packOf = (n: number): string => createHash('sha256').update(`pack ${n}`).digest('hex');

test('50,000 blobs in 500 packs: every lookup answers as a Map would, through every growth of the table', (t) => {
  const index = new BlobIndex();
  const want = new Map<string, { pack: string; offset: number; length: number; rawLength: number; codec: number }>();
  for (let p = 0; p < 500; p++) {
    const blobs: BlobEntry[] = [];
    for (let k = 0; k < 100; k++) {
      const n = p * 100 + k;
      const e: BlobEntry = [hashOf(n), k * 70_000, 60_000 + k, 262_144, n % 2];
      blobs.push(e);
      want.set(e[0], { pack: packOf(p), offset: e[1], length: e[2], rawLength: e[3], codec: e[4] });
    }
    // The same blob in a later pack (a killed backup's copy): the first location stays.
    if (p > 0) blobs.push([hashOf(0), 99, 1, 1, 0]);
    index.addPack(packOf(p), blobs);
  }
  t.is(index.size, 50_000);
  let wrong = 0;
  for (const [hash, loc] of want) {
    const got = index.get(hash);
    if (!index.has(hash) || index.packOf(hash) !== loc.pack || JSON.stringify(got) !== JSON.stringify(loc)) wrong++;
  }
  t.is(wrong, 0, 'every blob found at its first location');
  for (const absent of [hashOf(-1), hashOf(50_000), 'not a hash', hashOf(1).toUpperCase().slice(0, 63) + 'g', '']) {
    t.false(index.has(absent), absent);
    t.is(index.get(absent), undefined);
  }
  // Prune's mark phase.
  t.true(index.mark(hashOf(7)));
  t.false(index.mark(hashOf(7)), 'marked once');
  t.false(index.mark(hashOf(-1)), 'not indexed');
  t.true(index.isMarked(hashOf(7)));
  t.false(index.isMarked(hashOf(8)));
  for (let n = 0; n < 50_000; n += 997) index.mark(hashOf(n));
  let marked = 0;
  for (let n = 0; n < 50_000; n++) if (index.isMarked(hashOf(n)) !== (n % 997 === 0 || n === 7)) marked++;
  t.is(marked, 0, 'marks land on their own blob in every block');
  // Grouped by pack, every blob once.
  let total = 0;
  for (const [pack, blobs] of index.entriesByPack()) {
    total += blobs.length;
    for (const [hash, loc] of blobs) if (want.get(hash)?.pack !== pack || loc.pack !== pack) wrong++;
  }
  t.is(total, 50_000);
  t.is(wrong, 0);
  // Two hashes alike in their first 8 bytes (what picks the slot and the tag): each its own.
  const twin = hashOf(3).slice(0, 16) + hashOf(-3).slice(16);
  t.false(index.has(twin));
  index.addPack(packOf(900), [[twin, 5, 6, 7, 0]]);
  t.is(index.get(twin)?.pack, packOf(900));
  t.is(index.get(hashOf(3))?.pack, packOf(0));
  index.clear();
  t.is(index.size, 0);
  t.false(index.has(hashOf(7)));
  index.addPack(packOf(1), [[hashOf(1), 0, 10, 10, 0]]);
  t.is(index.get(hashOf(1))?.length, 10, 'usable again after clear');
});

test('an index file round-trips into the index; format-1 JSON files still read; a damaged or cut entry is refused', async (t) => {
  const packs = [
    { id: packOf(1), blobs: [[hashOf(1), 0, 100, 200, 1], [hashOf(2), 100, 50, 50, 0]] as BlobEntry[] },
    { id: packOf(2), blobs: [[hashOf(3), 0, 7, 7, 0], [hashOf(4), 7, 2 ** 32 - 1, 2 ** 32 - 1, 255]] as BlobEntry[] },
  ];
  const { id, bytes } = await encodeIndexFile(packs.map((p) => ({ id: p.id, blobs: CompactEntries.of(p.blobs) })));
  t.is(id, createHash('sha256').update(bytes).digest('hex'));
  const decoded = (await decodeIndexFile(bytes)).packs;
  t.deepEqual(decoded.map((p) => ({ id: p.id, blobs: p.blobs.toEntries() })), packs);
  const index = new BlobIndex();
  for (const p of decoded) index.addPack(p.id, p.blobs);
  t.is(index.size, 4);
  t.deepEqual(index.get(hashOf(4)), { pack: packOf(2), offset: 7, length: 2 ** 32 - 1, rawLength: 2 ** 32 - 1, codec: 255 });
  t.deepEqual(index.get(hashOf(1)), { pack: packOf(1), offset: 0, length: 100, rawLength: 200, codec: 1 });
  t.false(index.has(packOf(1)));

  // What format 1 wrote: zstd(JSON).
  const v1 = compress(Buffer.from(JSON.stringify({ v: 1, packs })));
  t.deepEqual((await decodeIndexFile(v1)).packs.map((p) => ({ id: p.id, blobs: p.blobs.toEntries() })), packs);
  for (const bad of [[hashOf(1), -1, 1, 1, 0], ['zz', 0, 1, 1, 0], [hashOf(1), 0, 1, 1], [hashOf(1), 0, 2 ** 33, 1, 0]]) {
    const damaged = compress(Buffer.from(JSON.stringify({ v: 1, packs: [{ id: packOf(1), blobs: [bad] }] })));
    await t.throwsAsync(decodeIndexFile(damaged), { message: /damaged/ }, JSON.stringify(bad));
  }
  // A binary file cut inside an entry, or inside a pack's record.
  const plain = decompress(bytes);
  for (const cut of [plain.length - 1, 8 + 36 + 45 + 3]) {
    await t.throwsAsync(decodeIndexFile(compress(plain.subarray(0, cut))), { message: /damaged/ }, `cut at ${cut}`);
  }
});
