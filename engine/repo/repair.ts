/**
 * `drctl repair index`: rebuild the index from the packs themselves. A pack's tail lists every
 * blob in it (pack.ts), so index files that were lost or damaged (a repository copied to a
 * spare node without its index/ folder, a bad sector under an index file) cost nothing that
 * the packs still hold. Until then the points are there but cannot restore: their blobs are in
 * no index, and prune refuses to run.
 *
 * Only the tail of each pack is read: one ranged read per pack (two when the header is larger
 * than the first guess). A pack whose tail does not match its name, or whose header does not
 * parse or lists blobs outside the pack, is not indexed and is reported. New index files are
 * written first; the old ones are deleted after, so a kill leaves only extra index files.
 * Runs under the exclusive lock: no backup writes packs or index files meanwhile.
 */
import type { Repository } from './repository.js';
import type { LockWait } from './locks.js';
import { Keys, PACK_MAGIC, PACK_TRAILER_BYTES, packSizeProblem } from './format.js';
import { CompactEntries } from './index-codec.js';
import { replaceIndexFiles, type IndexedPack } from './index-files.js';
import { packIdOfTail, readPackHeader, type BlobEntry } from './pack.js';
import type { ProgressFn } from '../progress.js';
import { InterruptedError } from '../errors.js';
import { BlobNotFoundError } from '../../targets/types.js';

export interface RepairIndexOptions {
  lockWait?: LockWait;
  signal?: AbortSignal;
  onProgress?: ProgressFn;
}

export interface RepairIndexReport {
  /** Packs on the volume, and how many of them are in the new index. */
  packs: number;
  packsIndexed: number;
  blobs: number;
  /** Packs left out of the index, and why (their blobs restore from no point until found elsewhere). */
  unreadable: { pack: string; why: string }[];
  indexFilesBefore: number;
  indexFilesAfter: number;
  durationMs: number;
}

/** Bytes read from the end of a pack first: the tail of a 16 MiB pack of 256 KiB chunks is ~5 KiB. */
const TAIL_GUESS_BYTES = 64 * 1024;

export async function repairIndex(repo: Repository, opts: RepairIndexOptions = {}): Promise<RepairIndexReport> {
  const t0 = performance.now();
  const lock = await repo.lock('exclusive', 'drctl repair index', opts.lockWait);
  try {
    const before: string[] = [];
    for await (const info of repo.target.list('index/')) before.push(info.key.slice('index/'.length));
    const sizes = await repo.packSizes();
    const packs: IndexedPack[] = [];
    const unreadable: RepairIndexReport['unreadable'] = [];
    let done = 0;
    for (const [id, size] of sizes) {
      if (opts.signal?.aborted) throw new InterruptedError();
      const r = await packEntries(repo, id, size);
      if (typeof r === 'string') unreadable.push({ pack: id, why: r });
      else packs.push({ id, blobs: r });
      opts.onProgress?.({ phase: 'repair', doneBytes: ++done, totalBytes: sizes.size });
    }
    if (opts.signal?.aborted) throw new InterruptedError();
    const indexFilesAfter = await replaceIndexFiles(repo, before, packs);
    return {
      packs: sizes.size,
      packsIndexed: packs.length,
      blobs: packs.reduce((n, p) => n + p.blobs.length, 0),
      unreadable,
      indexFilesBefore: before.length,
      indexFilesAfter,
      durationMs: Math.round(performance.now() - t0),
    };
  } finally {
    await lock.release();
  }
}

/** The blobs a pack's header lists, or why they cannot be trusted. */
async function packEntries(repo: Repository, id: string, size: number): Promise<CompactEntries | string> {
  const key = Keys.pack(id);
  const bySize = packSizeProblem(size);
  if (bySize) return bySize;
  let end = await readEnd(repo, key, size, Math.min(size, TAIL_GUESS_BYTES));
  if (typeof end === 'string') return end;
  const headerBytes = end.readUInt32LE(end.length - PACK_TRAILER_BYTES);
  const byHeader = packSizeProblem(size, headerBytes);
  if (byHeader) return byHeader;
  const tailBytes = headerBytes + PACK_TRAILER_BYTES;
  if (tailBytes > end.length) end = await readEnd(repo, key, size, tailBytes);
  if (typeof end === 'string') return end;
  const tail = end.subarray(end.length - tailBytes);
  let blobs: BlobEntry[];
  try {
    blobs = readPackHeader(tail).blobs;
  } catch (e) {
    return `has an unreadable header (${(e as Error).message})`;
  }
  // Packs of earlier builds are named by all their bytes: their blobs are still verified on every read.
  const byTail = tail.subarray(tail.length - PACK_MAGIC.length).equals(PACK_MAGIC);
  if (byTail && packIdOfTail(tail) !== id) return 'has a header that does not match its name (damaged)';
  const bulk = size - tailBytes;
  const fits = ([hash, offset, length, rawLength, codec]: BlobEntry): boolean =>
    /^[0-9a-f]{64}$/.test(hash) && Number.isSafeInteger(offset) && Number.isSafeInteger(length) && Number.isSafeInteger(rawLength)
    && offset >= 0 && length >= 0 && offset + length <= bulk && (codec === 0 || codec === 1);
  if (!blobs.every(fits)) return 'has a header that lists blobs outside the pack (damaged)';
  return CompactEntries.of(blobs);
}

/**
 * The last `length` bytes of a pack listed with `size` bytes, or why not: a pack that shrank or
 * went away since the listing (only the volume itself can do that under the exclusive lock) is
 * reported like a damaged one. Other read errors end the run before any index file changes.
 */
async function readEnd(repo: Repository, key: string, size: number, length: number): Promise<Buffer | string> {
  try {
    const got = await repo.target.get(key, { offset: size - length, length });
    return got.length === length ? got : `shrank below its listed ${size} bytes while being read`;
  } catch (e) {
    if (e instanceof BlobNotFoundError) return 'disappeared while being read';
    throw e;
  }
}
