/**
 * Prune: delete the data no point references any more, and repack packs that are mostly
 * unused. Backups keep running while prune works:
 *
 *   1. mark    (lock `prune`: shared with backups) — walk every point, set the index's mark
 *              bits; per pack, count live and dead bytes from the index files.
 *   2. repack  (same lock) — copy the live blobs of packs whose dead share is at least the
 *              threshold into new packs, verified on the way; write their index file.
 *   3. sweep   (lock `exclusive`, waited for, held only for this step) — load index files and
 *              mark points that backups committed meanwhile (a pack one of them now uses is
 *              kept); write one consolidated index without the dropped packs; delete the old
 *              index files; delete the dropped packs and packs no index lists (leftovers of
 *              killed backups), and temp files of writes killed over an hour ago.
 *
 * A kill at any moment is safe: until the consolidated index is complete the old index files
 * remain; packs are deleted only after no index file lists them. The worst a killed prune
 * leaves is duplicate index entries or unlisted packs, which the next prune removes.
 * Memory: the index (with its mark bits) and one pack at a time.
 */
import type { Repository } from './repository.js';
import type { Point } from './point.js';
import { Keys } from './format.js';
import { decodeIndexFile, type CompactEntries } from './index-codec.js';
import { removeIfThere, replaceIndexFiles, type IndexedPack } from './index-files.js';
import { markPoint } from './reachable.js';
import { codecPool } from './codec-pool.js';
import type { ProgressFn } from '../progress.js';
import { IntegrityError, InterruptedError } from '../errors.js';

export interface PruneOptions {
  /** Repack a pack when at least this share of its bytes is unused (0..1). */
  repackThreshold: number;
  dryRun?: boolean;
  /** How long the sweep waits for running backups to release their locks. */
  lockWaitMs: number;
  signal?: AbortSignal;
  onProgress?: ProgressFn;
  /** One line per phase, for logs and the CLI. */
  log?: (line: string) => void;
}

export interface PruneReport {
  dryRun: boolean;
  points: number;
  packs: number;
  /** Packs deleted because no point uses any of their blobs. */
  packsDeleted: number;
  /** Packs whose live blobs were copied into new packs, then deleted. */
  packsRepacked: number;
  /** Packs on the volume that no index listed (left by killed or failed backups, e.g. on a full volume). */
  unindexedPacksDeleted: number;
  /** Their bytes, counted in bytesFreed. */
  unindexedBytesFreed: number;
  /** Packs kept because a backup that ran during prune started using them. */
  packsRescued: number;
  /** Temp files of writes killed more than an hour ago. */
  tempFilesDeleted: number;
  bytesFreed: number;
  bytesRepacked: number;
  /** Blobs no point references any more, now gone. */
  blobsRemoved: number;
  indexFilesBefore: number;
  indexFilesAfter: number;
  /** How long backups were held off (the sweep). */
  exclusiveMs: number;
  durationMs: number;
}

interface PackUsage {
  size: number;
  blobs: number;
  liveBlobs: number;
  liveBytes: number;
  deadBytes: number;
}

/** Temp files younger than this may belong to a write in progress (a lock being refreshed). */
const TEMP_GRACE_MS = 60 * 60_000;

/** What the mark phase decided, carried into the sweep, which may still rescue packs. */
interface SweepPlan {
  /** Ids of the points marked in phase 1; any other point was committed during prune. */
  seen: Set<string>;
  usage: Map<string, PackUsage>;
  drop: Set<string>;
  repack: Set<string>;
  /** Hashes already copied into new packs by the repack. */
  copied: Set<string>;
}

export async function pruneRepository(repo: Repository, opts: PruneOptions): Promise<PruneReport> {
  const t0 = performance.now(); // durations: monotonic, not the wall clock (which Repository.deps.clock gives)
  const log = opts.log ?? (() => undefined);
  const lock = await repo.lock('prune', 'drctl prune', { signal: opts.signal });
  try {
    // 1. mark
    const { points, seen } = await markAllPoints(repo, opts);
    const sizes = await repo.packSizes();
    const usage = await packUsage(repo, sizes);
    const { drop, repack } = choosePacks(usage, sizes, opts.repackThreshold);
    const freed = freedBy(usage, drop, repack);
    log(`marked ${points.length} points: ${usage.size} packs, ${drop.size} unused, ${repack.size} to repack (threshold ${Math.round(opts.repackThreshold * 100)}% unused)`);

    const report: PruneReport = {
      dryRun: !!opts.dryRun, points: points.length, packs: usage.size,
      packsDeleted: drop.size, packsRepacked: repack.size, unindexedPacksDeleted: 0, unindexedBytesFreed: 0, packsRescued: 0, tempFilesDeleted: 0,
      bytesFreed: freed.bytesFreed, bytesRepacked: freed.bytesRepacked, blobsRemoved: freed.blobsRemoved,
      indexFilesBefore: repo.index.files.size, indexFilesAfter: repo.index.files.size,
      exclusiveMs: 0, durationMs: 0,
    };
    if (opts.dryRun) {
      const unindexed = [...sizes].filter(([p]) => !usage.has(p));
      report.unindexedPacksDeleted = unindexed.length;
      report.unindexedBytesFreed = unindexed.reduce((a, [, size]) => a + size, 0);
      report.bytesFreed += report.unindexedBytesFreed;
      report.durationMs = Math.round(performance.now() - t0);
      return report;
    }

    // 2. repack
    const { copied, written } = await repackPacks(repo, [...repack], opts);
    for (const id of written) {
      drop.delete(id);
      repack.delete(id);
    }

    // 3. sweep
    await sweepUnderExclusiveLock(repo, opts, log, lock.id, { seen, usage, drop, repack, copied }, report);
    report.durationMs = Math.round(performance.now() - t0);
    return report;
  } finally {
    await lock.release();
  }
}

/** Set the index's mark bits for every point; refuses if a point file is damaged, since its blobs would look unused. */
async function markAllPoints(repo: Repository, opts: PruneOptions): Promise<{ points: Point[]; seen: Set<string> }> {
  const { points, damaged } = await repo.listPoints();
  if (damaged.length) {
    const files = damaged.map((d) => `${repo.location}/${Keys.point(d)}`).join(', ');
    throw new IntegrityError(`prune stopped before deleting anything - point file(s) ${files} are damaged (they do not match their hash), so prune cannot tell what data they use; `
      + `run \`drctl check\` to confirm, then move ${damaged.length === 1 ? 'that file' : 'those files'} out of points/ (this drops ${damaged.length === 1 ? 'that point' : 'those points'}) and run prune again`);
  }
  const seen = new Set(points.map((p) => p.id));
  for (const [k, p] of points.entries()) {
    throwIfAborted(opts.signal);
    try {
      await markPoint(repo, p);
    } catch (e) {
      throw await withLostIndexAdvice(repo, e);
    }
    opts.onProgress?.({ phase: 'mark', doneBytes: k + 1, totalBytes: points.length });
  }
  return { points, seen };
}

/**
 * `e` from marking a point, saying so when index files look lost or damaged (packs on the
 * volume that no index lists, or index files that do not read): then the blob the point misses
 * is most likely in one of those packs, and `drctl repair index` is the fix, not a restore.
 */
async function withLostIndexAdvice(repo: Repository, e: unknown): Promise<unknown> {
  if (!(e instanceof IntegrityError)) return e;
  const indexed = new Set<string>();
  for (const [pack] of repo.index.entriesByPack()) indexed.add(pack);
  const unindexed = [...(await repo.packSizes()).keys()].filter((p) => !indexed.has(p)).length;
  const damagedFiles = repo.damagedIndexFiles.length;
  if (unindexed === 0 && damagedFiles === 0) return e;
  const why = [unindexed ? `${unindexed} pack(s) are in no index` : '', damagedFiles ? `${damagedFiles} index file(s) are damaged` : ''].filter(Boolean).join(' and ');
  return new IntegrityError(`${e.message} - prune stopped before deleting anything: ${why}, so index files were lost or damaged`,
    { cause: e, hint: '`drctl repair index` rebuilds the index from the packs\' own headers; then run `drctl check` and prune again' });
}

/** Packs to delete (no live blob) and packs to repack (dead share at least `repackThreshold`). */
function choosePacks(usage: Map<string, PackUsage>, sizes: Map<string, number>, repackThreshold: number): { drop: Set<string>; repack: Set<string> } {
  const drop = new Set<string>();
  const repack = new Set<string>();
  for (const [pack, u] of usage) {
    if (!sizes.has(pack)) continue; // missing: check's business, nothing to free
    if (u.liveBlobs === 0) drop.add(pack);
    else if (u.deadBytes > 0 && u.deadBytes >= repackThreshold * (u.liveBytes + u.deadBytes)) repack.add(pack);
  }
  return { drop, repack };
}

/** What deleting `drop` and repacking `repack` frees, and the live bytes the repack copies. */
function freedBy(usage: Map<string, PackUsage>, drop: Set<string>, repack: Set<string>): { bytesFreed: number; blobsRemoved: number; bytesRepacked: number } {
  const sum = (set: Set<string>, f: (u: PackUsage) => number): number => [...set].reduce((a, p) => a + f(usage.get(p) as PackUsage), 0);
  return {
    bytesFreed: sum(drop, (u) => u.size) + sum(repack, (u) => u.size - u.liveBytes),
    blobsRemoved: sum(drop, (u) => u.blobs) + sum(repack, (u) => u.blobs - u.liveBlobs),
    bytesRepacked: sum(repack, (u) => u.liveBytes),
  };
}

/** Phase 3: take the exclusive lock (waiting for running backups), sweep, release it, and log how long backups were held off. */
async function sweepUnderExclusiveLock(repo: Repository, opts: PruneOptions, log: (line: string) => void, sharedLockId: string, plan: SweepPlan, report: PruneReport): Promise<void> {
  const tEx = performance.now();
  const ex = await repo.lock('exclusive', 'drctl prune (final step)', {
    waitMs: opts.lockWaitMs, ignore: [sharedLockId], signal: opts.signal,
    onWait: (holder) => log(`waiting for ${holder} to finish before the final step`),
  });
  const tHeld = performance.now();
  try {
    await sweep(repo, opts, log, plan, report);
  } finally {
    await ex.release();
  }
  report.exclusiveMs = Math.round(performance.now() - tHeld);
  log(`final step held the repository for ${report.exclusiveMs} ms (waited ${Math.round(tHeld - tEx)} ms for it)`);
}

/** The work under the exclusive lock: rescue packs new points use, write the consolidated index, delete packs and old temp files. */
async function sweep(repo: Repository, opts: PruneOptions, log: (line: string) => void, plan: SweepPlan, report: PruneReport): Promise<void> {
  const { usage, drop, repack } = plan;
  throwIfAborted(opts.signal);
  // Index files and points written by backups since the mark.
  await loadNewIndexFiles(repo);
  await rescuePacksOfNewPoints(repo, plan, report);
  report.packsDeleted = drop.size;
  report.packsRepacked = repack.size;
  const freed = freedBy(usage, drop, repack);
  report.bytesFreed = freed.bytesFreed;
  report.blobsRemoved = freed.blobsRemoved;

  const gone = new Set([...drop, ...repack]);
  const { listed, keepPacks, oldFiles } = await readIndexedPacks(repo, gone);
  const unlisted = await listUnindexedPacks(repo, listed);
  report.unindexedPacksDeleted = unlisted.length;
  report.unindexedBytesFreed = unlisted.reduce((a, p) => a + p.size, 0);
  report.bytesFreed += report.unindexedBytesFreed;
  if (gone.size > 0 || oldFiles.length > 1) {
    report.indexFilesAfter = await replaceIndexFiles(repo, oldFiles, keepPacks);
  }
  for (const id of [...gone, ...unlisted.map((p) => p.id)]) await removeIfThere(repo, Keys.pack(id));
  const temp = (await repo.target.sweepTemp?.(TEMP_GRACE_MS)) ?? { files: 0, bytes: 0 };
  report.tempFilesDeleted = temp.files;
  report.bytesFreed += temp.bytes;
  const leftovers = unlisted.length ? `, ${unlisted.length} of them leftovers no index lists (${mib(report.unindexedBytesFreed)}, from backups that did not finish)` : '';
  log(`deleted ${gone.size + unlisted.length} packs (${report.packsRescued} kept for backups that ran meanwhile)${leftovers}, ${report.indexFilesBefore} index files → ${report.indexFilesAfter}`);
}

/** Add to the in-memory index the index files backups wrote since it was loaded. */
async function loadNewIndexFiles(repo: Repository): Promise<void> {
  for await (const info of repo.target.list('index/')) {
    const id = info.key.slice('index/'.length);
    if (repo.index.files.has(id)) continue;
    const file = await decodeIndexFile(await repo.target.get(info.key));
    for (const p of file.packs) repo.index.addPack(p.id, p.blobs);
    repo.index.files.add(id);
  }
}

/** Mark the points committed since the mark phase, keeping any dropped or repacked pack they use for a blob not copied. */
async function rescuePacksOfNewPoints(repo: Repository, plan: SweepPlan, report: PruneReport): Promise<void> {
  const { seen, drop, repack, copied } = plan;
  const rescue = (hash: string): void => {
    const pack = repo.index.packOf(hash) as string;
    if ((drop.has(pack) || repack.has(pack)) && !copied.has(hash)) {
      drop.delete(pack);
      repack.delete(pack);
      report.packsRescued++;
    }
  };
  const { points: now } = await repo.listPoints();
  for (const p of now.filter((q: Point) => !seen.has(q.id))) await markPoint(repo, p, rescue);
}

/** Read every index file: the packs they list, those of them to keep (first listing wins), and the files read. */
async function readIndexedPacks(repo: Repository, gone: Set<string>): Promise<{ listed: Set<string>; keepPacks: IndexedPack[]; oldFiles: string[] }> {
  const listed = new Set<string>();
  const keepPacks: IndexedPack[] = [];
  const oldFiles = [...repo.index.files];
  for (const id of oldFiles) {
    const file = await decodeIndexFile(await repo.target.get(Keys.index(id)));
    for (const p of file.packs) {
      if (listed.has(p.id)) continue;
      listed.add(p.id);
      if (!gone.has(p.id)) keepPacks.push(p);
    }
  }
  return { listed, keepPacks, oldFiles };
}

/** Packs on the volume that no index file lists (left by killed or failed backups), with their sizes. */
async function listUnindexedPacks(repo: Repository, listed: Set<string>): Promise<{ id: string; size: number }[]> {
  return [...(await repo.packSizes())].filter(([id]) => !listed.has(id)).map(([id, size]) => ({ id, size }));
}

/** Live and dead bytes per pack, read from the index files one at a time. */
async function packUsage(repo: Repository, sizes: Map<string, number>): Promise<Map<string, PackUsage>> {
  const usage = new Map<string, PackUsage>();
  for (const id of repo.index.files) {
    const file = await decodeIndexFile(await repo.target.get(Keys.index(id)));
    for (const p of file.packs) {
      if (usage.has(p.id)) continue; // listed by two index files (a killed prune): count once
      const u: PackUsage = { size: sizes.get(p.id) ?? 0, blobs: p.blobs.length, liveBlobs: 0, liveBytes: 0, deadBytes: 0 };
      for (const [hash, , length] of p.blobs) {
        // A blob counts as live only in the pack the index answers with; other copies are dead.
        if (repo.index.isMarked(hash) && repo.index.packOf(hash) === p.id) {
          u.liveBlobs++;
          u.liveBytes += length;
        } else u.deadBytes += length;
      }
      usage.set(p.id, u);
    }
  }
  return usage;
}

/**
 * Copy the live blobs of `packs` into new packs, verifying each. Returns the hashes copied and
 * the ids of the packs written (an id can equal one of `packs` when a killed prune already
 * wrote the same pack: that one must then stay).
 */
async function repackPacks(repo: Repository, packs: string[], opts: PruneOptions): Promise<{ copied: Set<string>; written: Set<string> }> {
  const copied = new Set<string>();
  if (packs.length === 0) return { copied, written: new Set() };
  const writer = repo.newWriter();
  const want = new Set(packs);
  const entries = new Map<string, CompactEntries>();
  for (const id of repo.index.files) {
    const file = await decodeIndexFile(await repo.target.get(Keys.index(id)));
    for (const p of file.packs) if (want.has(p.id) && !entries.has(p.id)) entries.set(p.id, p.blobs);
  }
  await writer.complete((async () => {
    let done = 0;
    for (const pack of packs) {
      throwIfAborted(opts.signal);
      const live = [...(entries.get(pack) ?? [])].filter(([h]) => repo.index.isMarked(h) && repo.index.packOf(h) === pack && !copied.has(h));
      const bytes = await repo.target.get(Keys.pack(pack));
      const copies = live.map(([h, o, l, r, c]) => ({ h, r, c, data: Buffer.from(bytes.subarray(o, o + l)) }));
      const { results } = await codecPool().verifyMany(bytes, live.map(([hash, offset, length, rawLength, codec]) => ({ hash, offset, length, rawLength, codec })));
      const bad = live.filter((_, k) => !results[k]?.ok);
      if (bad.length) {
        throw new IntegrityError(`pack ${pack.slice(0, 12)} holds ${bad.length} damaged live blob(s) - prune stopped before deleting anything`);
      }
      for (const c of copies) {
        await writer.copyStored(c.h, c.data, c.r, c.c);
        copied.add(c.h);
      }
      done++;
      opts.onProgress?.({ phase: 'repack', doneBytes: done, totalBytes: packs.length });
    }
  })());
  opts.log?.(`repacked ${packs.length} packs: ${copied.size} live blobs copied into ${writer.stats.packsWritten} new packs`);
  return { copied, written: new Set(writer.packsWritten()) };
}

function mib(n: number): string {
  return `${(n / 1048576).toFixed(1)} MiB`;
}

function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new InterruptedError();
}
