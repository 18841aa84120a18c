/**
 * Read many blobs in pack order, as restic's restorer does: blobs are grouped by pack, nearby
 * blobs of a pack are read with one ranged read, and each blob is decoded and verified on the
 * libuv pool before it is handed over. For 30k small files this is ~100 pack reads instead of
 * 30k open/read/close rounds. The order of packs follows the first use of each blob, so a
 * restore progresses through the tree roughly in order.
 */
import pLimit from 'p-limit';
import type { Repository } from '../repo/repository.js';
import type { BlobLocation } from '../repo/index-store.js';
import { Keys } from '../repo/format.js';
import { IntegrityError, InterruptedError, NOT_INDEXED_HINT } from '../errors.js';

/** Packs being read at once (each read holds up to MAX_RANGE_BYTES). */
const PACKS_IN_FLIGHT = 3;
/** Blobs being decoded, verified and delivered at once. */
const BLOBS_IN_FLIGHT = 16;
/** Blobs closer than this in a pack are read together; the gap is read and dropped. */
const MAX_GAP_BYTES = 1 << 20;
/** Small enough that ranges of small files spread over the writer threads. */
const MAX_RANGE_BYTES = 4 << 20;

interface Wanted {
  hash: string;
  loc: BlobLocation;
}

/** Every location first, so a missing blob fails before anything is written. */
export function locateBlobs(repo: Repository, hashes: Iterable<string>): Map<string, BlobLocation> {
  const out = new Map<string, BlobLocation>();
  for (const h of hashes) {
    if (out.has(h)) continue;
    const loc = repo.index.get(h);
    if (!loc) throw new IntegrityError(`blob ${h.slice(0, 12)} is not in the index of ${repo.location} - the point cannot be restored completely`, { hint: NOT_INDEXED_HINT });
    out.set(h, loc);
  }
  return out;
}

export interface StoredBlob {
  hash: string;
  loc: BlobLocation;
  /** The stored (compressed, unverified) bytes: a view into `range`. */
  stored: Buffer;
  /** Offset of `stored` in `range`. */
  at: number;
}

/** A run of nearby blobs of one pack: stored bytes [start, start + length) of the pack. */
export interface PackRange {
  pack: string;
  start: number;
  length: number;
  /** The blobs, `at` = offset relative to `start`. */
  blobs: { hash: string; loc: BlobLocation; at: number }[];
}

/**
 * Call `onRange` for every run of nearby blobs of `located`, in pack order, PACKS_IN_FLIGHT
 * packs at once and one range of a pack at a time (each awaited before the next range of
 * that pack, so memory stays bounded). The first error stops new ranges; work in flight is
 * awaited, then the error is thrown.
 */
export async function forEachRange(
  located: Map<string, BlobLocation>,
  onRange: (range: PackRange) => Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  const byPack = new Map<string, Wanted[]>();
  for (const [hash, loc] of located) {
    let list = byPack.get(loc.pack);
    if (!list) byPack.set(loc.pack, (list = []));
    list.push({ hash, loc });
  }
  const packLimit = pLimit(PACKS_IN_FLIGHT);
  let failure: { e: unknown } | undefined;
  const doPack = async (pack: string, wanted: Wanted[]) => {
    wanted.sort((a, b) => a.loc.offset - b.loc.offset);
    for (const range of ranges(wanted)) {
      if (failure) return;
      if (signal?.aborted) throw new InterruptedError();
      const start = range[0]!.loc.offset;
      const last = range.at(-1)!.loc;
      await onRange({ pack, start, length: last.offset + last.length - start, blobs: range.map((w) => ({ ...w, at: w.loc.offset - start })) });
    }
  };
  await Promise.all([...byPack].map(([pack, wanted]) => packLimit(doPack, pack, wanted).catch((e: unknown) => {
    failure ??= { e };
  })));
  if (failure) throw failure.e;
}

/**
 * Read every blob of `located` in pack order (forEachRange) and hand each range read to
 * `onRange`, which owns the range buffer (it may transfer it to a worker).
 */
export async function fetchByPack(
  repo: Repository,
  located: Map<string, BlobLocation>,
  onRange: (pack: string, blobs: StoredBlob[], range: Buffer) => Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  await forEachRange(located, async (range) => {
    const bytes = await readRange(repo, range);
    await onRange(range.pack, range.blobs.map((w) => ({ ...w, stored: bytes.subarray(w.at, w.at + w.loc.length) })), bytes);
  }, signal);
}

/** The stored bytes of a range. */
export async function readRange(repo: Repository, { pack, start, length }: PackRange): Promise<Buffer> {
  const bytes = await repo.target.get(Keys.pack(pack), { offset: start, length });
  if (bytes.length < length) throw new IntegrityError(`pack ${pack.slice(0, 12)} is shorter than its index says (truncated)`);
  return bytes;
}

/**
 * Decode + verify blobs on the codec pool and call `deliver(hash, raw)` for each, at most
 * BLOBS_IN_FLIGHT at once across all callers of the returned function.
 */
export function verifier(repo: Repository): (pack: string, blobs: StoredBlob[], deliver: (hash: string, raw: Buffer) => Promise<void>) => Promise<void> {
  const limit = pLimit(BLOBS_IN_FLIGHT);
  return async (pack, blobs, deliver) => {
    let failure: { e: unknown } | undefined;
    await Promise.all(blobs.map((b) => limit(async () => {
      if (failure) return;
      const raw = await repo.verifyStored(b.hash, b.stored, pack, b.loc.codec, b.loc.rawLength);
      await deliver(b.hash, raw);
    }).catch((e: unknown) => {
      failure ??= { e };
    })));
    if (failure) throw failure.e;
  };
}

/**
 * Read and verify the (distinct) blobs of `hashes` with as few ranged reads as possible: the
 * blobs of one backup run sit next to each other in their packs. Returns them by hash.
 */
export async function readBlobs(repo: Repository, hashes: string[], located: Map<string, BlobLocation>): Promise<Map<string, Buffer>> {
  const sub = new Map<string, BlobLocation>();
  for (const h of hashes) sub.set(h, located.get(h) ?? locateBlobs(repo, [h]).get(h)!);
  const out = new Map<string, Buffer>();
  const verify = verifier(repo);
  await fetchByPack(repo, sub, async (pack, blobs) => {
    for (const b of blobs) b.stored = Buffer.from(b.stored); // owned: handed to the codec pool without another copy
    await verify(pack, blobs, async (hash, raw) => {
      out.set(hash, raw);
    });
  });
  return out;
}

function* ranges(sorted: Wanted[]): Iterable<Wanted[]> {
  let cur: Wanted[] = [];
  let start = 0;
  let end = 0;
  for (const w of sorted) {
    if (cur.length > 0 && (w.loc.offset - end > MAX_GAP_BYTES || w.loc.offset + w.loc.length - start > MAX_RANGE_BYTES)) {
      yield cur;
      cur = [];
    }
    if (cur.length === 0) {
      start = w.loc.offset;
      end = start;
    }
    cur.push(w);
    end = Math.max(end, w.loc.offset + w.loc.length);
  }
  if (cur.length > 0) yield cur;
}
