/**
 * Repository check. Structure: every index file and point file matches its hash, every
 * indexed pack exists and is long enough, every blob a point references is indexed.
 * With readData: every pack is read, its name checked against its bytes (FORMAT.md "Packs"),
 * and every blob decompressed and re-hashed. Damage is reported as the points and the disk
 * ranges / files it affects.
 */
import type { Repository } from './repository.js';
import type { Point } from './point.js';
import type { BlobLocation } from './index-store.js';
import { HASH_BYTES, LIST_ENTRIES_PER_BLOB, Keys } from './index.js';
import { PACK_MAGIC, PACK_MAGIC_WHOLE, PACK_TRAILER_BYTES, packSizeProblem } from './format.js';
import { runBounded } from '../runtime/concurrency.js';
import { codecPool } from './codec-pool.js';
import type { ProgressFn } from '../progress.js';
import { BlobNotFoundError } from '../../targets/types.js';
import { TargetIoError, hasErrno } from '../errors.js';

export interface CheckProblem {
  kind: 'damaged-index' | 'damaged-point' | 'missing-pack' | 'truncated-pack' | 'unreadable-pack' | 'damaged-pack' | 'damaged-blob' | 'missing-blob';
  object: string;
  message: string;
}

export interface AffectedPoint {
  id: string;
  name: string;
  time: string;
  /** "disk.img bytes 0-262144", "etc/passwd", "folder srv/ and everything below" */
  items: string[];
}

export interface CheckReport {
  ok: boolean;
  points: number;
  packs: number;
  blobs: number;
  readData: boolean;
  bytesRead: number;
  unindexedPacks: number;
  /**
   * Packs in no index whose trailer shows them cut short or overwritten: `drctl repair index`
   * leaves these out too (and names them), so it is no fix for the data they held.
   */
  unindexedDamaged: { pack: string; why: string }[];
  problems: CheckProblem[];
  affected: AffectedPoint[];
}

/** Walks a file point's trees, calling `use` for every blob it references; supplied by the files module. */
export type TreeBlobWalker = (repo: Repository, point: Point, damaged: (hash: string) => boolean) => Promise<string[]>;

export async function checkRepository(repo: Repository, opts: { readData?: boolean; walkFiles: TreeBlobWalker; onProgress?: ProgressFn; signal?: AbortSignal }): Promise<CheckReport> {
  const problems: CheckProblem[] = [];
  for (const id of repo.damagedIndexFiles) {
    problems.push({ kind: 'damaged-index', object: `index/${id}`, message: `index file ${id.slice(0, 12)} is damaged (its blobs are treated as missing)` });
  }
  const { points, damaged: damagedPoints } = await repo.listPoints();
  for (const id of damagedPoints) {
    problems.push({ kind: 'damaged-point', object: Keys.point(id), message: `point file ${id.slice(0, 12)} does not match its hash` });
  }

  const onDisk = await repo.packSizes();
  const bad = new Set<string>(); // blob hashes that cannot be read back
  const packs = checkPackSizes(repo, onDisk, bad, problems);
  const bytesRead = opts.readData ? await readPacks(repo, onDisk, packs.totalBytes, bad, problems, opts) : 0;

  const isBad = (h: string) => bad.has(h) || !repo.index.has(h);
  const affected: AffectedPoint[] = [];
  for (const p of points) {
    const items = p.kind === 'vm' ? await affectedDiskRanges(repo, p, isBad) : await opts.walkFiles(repo, p, isBad);
    if (items.length) affected.push({ id: p.id, name: p.name, time: p.time, items });
  }
  for (const a of affected) {
    problems.push({ kind: 'missing-blob', object: a.id,
      message: `point ${a.id.slice(0, 12)} (${a.name}, ${a.time}) cannot fully restore ${a.items.length} item(s): ${a.items.slice(0, 5).join('; ')}${a.items.length > 5 ? '; …' : ''}` });
  }
  const unindexed = [...onDisk.keys()].filter((p) => !packs.indexed.has(p));
  const unindexedDamaged: CheckReport['unindexedDamaged'] = [];
  for (const pack of unindexed) {
    const why = await trailerProblem(repo, pack, onDisk.get(pack) as number);
    if (why) unindexedDamaged.push({ pack, why });
  }
  return {
    ok: problems.length === 0,
    points: points.length,
    packs: packs.indexed.size,
    blobs: packs.blobs,
    readData: !!opts.readData,
    bytesRead,
    unindexedPacks: unindexed.length,
    unindexedDamaged,
    problems,
    affected,
  };
}

/**
 * Every indexed pack against the volume's listing: missing or shorter than its index says
 * (those blobs go to `bad`). One pass over the index, a pack at a time: it is never turned
 * into strings all at once.
 */
function checkPackSizes(repo: Repository, onDisk: Map<string, number>, bad: Set<string>, problems: CheckProblem[]): { indexed: Set<string>; blobs: number; totalBytes: number } {
  const indexed = new Set<string>();
  let blobs = 0;
  let totalBytes = 0;
  for (const [pack, entries] of repo.index.entriesByPack()) {
    indexed.add(pack);
    blobs += entries.length;
    const size = onDisk.get(pack);
    totalBytes += size ?? 0;
    const needed = Math.max(...entries.map(([, l]) => l.offset + l.length));
    if (size === undefined) {
      problems.push({ kind: 'missing-pack', object: Keys.pack(pack), message: `pack ${pack.slice(0, 12)} is missing (${entries.length} blobs)` });
      for (const [h] of entries) bad.add(h);
    } else if (size < needed) {
      problems.push({ kind: 'truncated-pack', object: Keys.pack(pack), message: `pack ${pack.slice(0, 12)} is truncated (${size} bytes, index needs ${needed})` });
      for (const [h, l] of entries) if (l.offset + l.length > size) bad.add(h);
    }
  }
  return { indexed, blobs, totalBytes };
}

/** Read and verify every pack on the volume that the index lists, three at a time; bytes read. */
async function readPacks(repo: Repository, onDisk: Map<string, number>, totalBytes: number, bad: Set<string>, problems: CheckProblem[],
  opts: { onProgress?: ProgressFn; signal?: AbortSignal }): Promise<number> {
  let bytesRead = 0;
  const jobs = function* (): Iterable<() => Promise<void>> {
    for (const [pack, entries] of repo.index.entriesByPack()) {
      if (!onDisk.has(pack)) continue;
      yield async () => {
        // Up to three of these run at once: add after the await, never `bytesRead += await …`,
        // which reads the total before the await and so loses the other jobs' bytes.
        const n = await readPack(repo, pack, entries, bad, problems);
        bytesRead += n;
        opts.onProgress?.({ phase: 'check', doneBytes: bytesRead, totalBytes });
      };
    }
  };
  await runBounded(jobs(), 3, opts.signal);
  return bytesRead;
}

/**
 * Read and verify one pack. A pack the volume cannot read (EIO: a bad sector under it) is
 * damage like a flipped byte: reported with the points it affects while the other packs are
 * still checked. Other read errors (the target as a whole is gone) stop the check.
 */
async function readPack(repo: Repository, pack: string, entries: [string, BlobLocation][], bad: Set<string>, problems: CheckProblem[]): Promise<number> {
  try {
    return await readPackOnce(repo, pack, entries, bad, problems);
  } catch (e) {
    if (!(e instanceof TargetIoError) || !hasErrno(e, 'EIO')) throw e;
    for (const [h] of entries) bad.add(h);
    problems.push({ kind: 'unreadable-pack', object: Keys.pack(pack),
      message: `pack ${pack.slice(0, 12)} cannot be read: the volume returned an I/O error (check the disk: kernel log, dmesg)` });
    return 0;
  }
}

async function readPackOnce(repo: Repository, pack: string, entries: [string, BlobLocation][], bad: Set<string>, problems: CheckProblem[]): Promise<number> {
  const refs = entries.map(([hash, l]) => ({ offset: l.offset, length: l.length, codec: l.codec, rawLength: l.rawLength, hash }));
  const key = Keys.pack(pack);
  const local = repo.target.localPath?.(key);
  if (local) {
    const { results, packId, headerOk, file } = await repo.workerRead(key, codecPool().verifyFile(local, refs));
    if (file.missing) {
      for (const [h] of entries) bad.add(h);
      return 0;
    }
    judgePack(pack, entries, headerOk && packId === pack, results, bad, problems);
    return file.bytes;
  }
  let bytes: Buffer;
  try {
    bytes = await repo.target.get(key);
  } catch (e) {
    if (!(e instanceof BlobNotFoundError)) throw e;
    for (const [h] of entries) bad.add(h);
    return 0;
  }
  const length = bytes.length;
  const { results, packId, headerOk } = await codecPool().verifyMany(bytes, refs);
  judgePack(pack, entries, headerOk && packId === pack, results, bad, problems);
  return length;
}

function judgePack(pack: string, entries: [string, BlobLocation][], packOk: boolean, results: { ok: boolean }[], bad: Set<string>, problems: CheckProblem[]): void {
  let badBlobs = 0;
  for (const [k, [hash]] of entries.entries()) {
    if (results[k]?.ok) continue;
    bad.add(hash);
    badBlobs++;
  }
  if (badBlobs) {
    problems.push({ kind: 'damaged-pack', object: Keys.pack(pack),
      message: `pack ${pack.slice(0, 12)} is damaged: ${badBlobs} of ${entries.length} blobs do not match their hash` });
  } else if (!packOk) {
    problems.push({ kind: 'damaged-pack', object: Keys.pack(pack),
      message: `pack ${pack.slice(0, 12)} is damaged: its header or trailer does not match its name (its ${entries.length} blobs are intact and restore through the index)` });
  }
}

/**
 * Why a pack's trailer (its last 12 bytes: header length and magic, FORMAT.md "Packs") shows it
 * cut short or overwritten, or undefined when it looks whole. One small read per pack in no
 * index; a pack that reads as whole may still have a damaged header, which repair names.
 */
async function trailerProblem(repo: Repository, pack: string, size: number): Promise<string | undefined> {
  const bySize = packSizeProblem(size);
  if (bySize) return bySize;
  let trailer: Buffer;
  try {
    trailer = await repo.target.get(Keys.pack(pack), { offset: size - PACK_TRAILER_BYTES, length: PACK_TRAILER_BYTES });
  } catch (e) {
    if (e instanceof BlobNotFoundError) return undefined; // gone since the listing: prune's business
    if (e instanceof TargetIoError && hasErrno(e, 'EIO')) return 'cannot be read (I/O error)';
    throw e;
  }
  if (trailer.length < PACK_TRAILER_BYTES) return undefined;
  const magic = trailer.subarray(4);
  if (!magic.equals(PACK_MAGIC) && !magic.equals(PACK_MAGIC_WHOLE)) return 'has no pack trailer (truncated or overwritten)';
  return packSizeProblem(size, trailer.readUInt32LE(0));
}

/** Disk byte ranges of a VM point that reference unreadable chunks, merged. */
async function affectedDiskRanges(repo: Repository, p: Point, isBad: (h: string) => boolean): Promise<string[]> {
  const items: string[] = [];
  for (const disk of p.disks ?? []) {
    const ranges: [number, number][] = [];
    for (const [seg, listHash] of disk.lists.entries()) {
      const segStart = seg * LIST_ENTRIES_PER_BLOB * disk.chunkBytes;
      if (isBad(listHash)) {
        ranges.push([segStart, Math.min(disk.sizeBytes, segStart + LIST_ENTRIES_PER_BLOB * disk.chunkBytes)]);
        continue;
      }
      const entries = await repo.readBlob(listHash);
      for (let j = 0; j * HASH_BYTES < entries.length; j++) {
        const h = entries.subarray(j * HASH_BYTES, (j + 1) * HASH_BYTES);
        if (h.every((b) => b === 0) || !isBad(h.toString('hex'))) continue;
        const s = segStart + j * disk.chunkBytes;
        const e = Math.min(disk.sizeBytes, s + disk.chunkBytes);
        const last = ranges.at(-1);
        if (last && last[1] === s) last[1] = e;
        else ranges.push([s, e]);
      }
    }
    for (const [s, e] of ranges) items.push(`${disk.name} bytes ${s}-${e}`);
  }
  return items;
}
