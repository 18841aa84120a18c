/**
 * Restore a disk of a VM-level point to a raw image file: sparse (zero chunks are never
 * written), chunks fetched pack by pack with one ranged read per run of nearby blobs, each
 * blob decompressed and hash-verified on the worker pool before it is written.
 */
import { join } from 'node:path';
import type { Repository, DiskRecord, Point, BlobLocation } from '../repo/index.js';
import { HASH_BYTES, Keys, LIST_ENTRIES_PER_BLOB } from '../repo/index.js';
import { fsp, constants, type FileHandle } from '../runtime/fs.js';
import { runBounded } from '../runtime/concurrency.js';
import { collectGarbage } from '../runtime/gc.js';
import { codecPool } from '../repo/codec-pool.js';
import type { ProgressFn } from '../progress.js';
import { DestinationExistsError, IntegrityError, InterruptedError, NOT_INDEXED_HINT, UsageError, asDestinationError, destinationCreateError, errnoCode } from '../errors.js';
import { BlobNotFoundError } from '../../targets/types.js';

export interface ImageRestoreOptions {
  overwrite?: boolean;
  signal?: AbortSignal;
  onProgress?: ProgressFn;
}

export interface ImageRestoreResult {
  files: string[];
  bytesWritten: number;
  logicalBytes: number;
  durationMs: number;
}

/** Where each disk of `point` goes for `dest`: a file for a one-disk point, or files in a folder. */
export async function imageDestinations(point: Point, dest: string): Promise<string[]> {
  const disks = point.disks ?? [];
  const isDir = dest.endsWith('/') || (await fsp.stat(dest).then((s) => s.isDirectory(), () => false));
  if (!isDir && disks.length > 1) {
    throw new UsageError(`point ${point.id.slice(0, 8)} has ${disks.length} disks - --to must be a folder`, 'give an existing folder or a path ending in /');
  }
  return disks.map((d) => (isDir ? join(dest, rawName(d)) : dest));
}

function rawName(d: DiskRecord): string {
  return d.sourceFormat === 'raw' ? d.name : `${d.name.replace(/\.[^.]+$/, '')}.raw`;
}

export async function restoreImage(repo: Repository, point: Point, dest: string, opts: ImageRestoreOptions = {}): Promise<ImageRestoreResult> {
  const t0 = performance.now();
  const files = await imageDestinations(point, dest);
  if (!opts.overwrite) {
    for (const f of files) if (await fsp.lstat(f).then(() => true, () => false)) throw new DestinationExistsError(f);
  }
  let bytesWritten = 0;
  let logical = 0;
  const disks = point.disks ?? [];
  const total = disks.reduce((a, d) => a + d.sizeBytes, 0);
  for (const [k, disk] of disks.entries()) {
    const path = files[k] as string;
    const n = await restoreDisk(repo, disk, path, opts, (done) =>
      opts.onProgress?.({ phase: 'restore', doneBytes: logical + done, totalBytes: total, item: disk.name }));
    bytesWritten += n;
    logical += disk.sizeBytes;
  }
  return { files, bytesWritten, logicalBytes: logical, durationMs: Math.round(performance.now() - t0) };
}

const PACK_RUNS_IN_FLIGHT = 4;
/**
 * Chunks planned at once (1 GiB of disk at 256 KiB): a whole chunk-list segment is 4 GiB, and
 * planning it at once made the 8 GiB bench image peak 16 MiB above the 2 GiB one.
 */
const PLAN_WINDOW_CHUNKS = 4096;
/** Blobs closer than this in one pack are fetched with one read. */
const MAX_GAP_BYTES = 1024 * 1024;
/** Bounds one read (and the memory of one run in flight): 4 MiB stored is ~7 MiB raw. */
const MAX_RUN_BYTES = 4 * 1024 * 1024;

interface Want {
  hash: string;
  loc: BlobLocation;
  chunks: number[];
}

async function restoreDisk(repo: Repository, disk: DiskRecord, path: string, opts: ImageRestoreOptions, progress: (done: number) => void): Promise<number> {
  let fh: FileHandle;
  try {
    fh = await fsp.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | (opts.overwrite ? 0 : constants.O_EXCL), 0o600);
  } catch (e) {
    if (errnoCode(e) === 'EEXIST') throw new DestinationExistsError(path);
    throw destinationCreateError(path, e);
  }
  let written = 0;
  let done = 0;
  try {
    await fh.truncate(disk.sizeBytes);
    for (const [seg, listHash] of disk.lists.entries()) {
      let entries: Buffer;
      try {
        entries = await repo.readBlob(listHash);
      } catch (e) {
        const from = seg * LIST_ENTRIES_PER_BLOB * disk.chunkBytes;
        const to = Math.min(disk.sizeBytes, from + LIST_ENTRIES_PER_BLOB * disk.chunkBytes);
        throw new IntegrityError(`the chunk list of disk ${disk.name} is unreadable (${(e as Error).message}): disk ${disk.name} bytes ${from}-${to} cannot be restored`,
          { cause: e, ...(e instanceof IntegrityError ? { hint: e.hint } : {}) });
      }
      // Planned a window at a time, so the plan's memory does not grow with the disk.
      for (let w = 0; w * HASH_BYTES < entries.length; w += PLAN_WINDOW_CHUNKS) {
        const window = entries.subarray(w * HASH_BYTES, (w + PLAN_WINDOW_CHUNKS) * HASH_BYTES);
        const runs = planRuns(repo, window, seg * LIST_ENTRIES_PER_BLOB + w);
        // Holes and zero chunks are "restored" by the truncate above: count them as done now.
        const dataChunks = runs.reduce((a, run) => a + run.reduce((b, x) => b + x.chunks.length, 0), 0);
        done += (window.length / HASH_BYTES - dataChunks) * disk.chunkBytes;
        const jobs = runs.map((run) => async () => {
          if (opts.signal?.aborted) throw new InterruptedError();
          const n = await fetchAndWrite(repo, disk, fh, run);
          written += n;
          done += run.reduce((a, x) => a + x.chunks.length, 0) * disk.chunkBytes;
          progress(Math.min(done, disk.sizeBytes));
        });
        await runBounded(jobs, PACK_RUNS_IN_FLIGHT, opts.signal);
        if (opts.signal?.aborted) throw new InterruptedError();
        // A full collection (~1 ms) per window: left to V8, old plans piled up on long restores.
        collectGarbage();
      }
    }
  } catch (e) {
    await fh.close().catch(() => undefined);
    // Never leave a half-restored disk that looks whole; say so when it cannot be removed either.
    const removed = await fsp.rm(path, { force: true }).then(() => true, () => false);
    throw asDestinationError(e, path, removed ? 'the partial image was removed' : 'the partial image could not be removed: delete it, it is not the whole disk');
  }
  await fh.close();
  progress(disk.sizeBytes);
  return written;
}

/** Group the non-zero chunks of one list segment into runs of nearby blobs in the same pack. */
function planRuns(repo: Repository, entries: Buffer, firstChunk: number): Want[][] {
  const byHash = new Map<string, Want>();
  const zero = Buffer.alloc(HASH_BYTES);
  for (let j = 0; j * HASH_BYTES < entries.length; j++) {
    const h = entries.subarray(j * HASH_BYTES, (j + 1) * HASH_BYTES);
    if (h.equals(zero)) continue;
    const hash = h.toString('hex');
    let w = byHash.get(hash);
    if (!w) {
      const loc = repo.index.get(hash);
      if (!loc) throw new IntegrityError(`chunk ${hash.slice(0, 12)} (chunk ${firstChunk + j}) is not in the index of ${repo.location}`, { hint: NOT_INDEXED_HINT });
      byHash.set(hash, (w = { hash, loc, chunks: [] }));
    }
    w.chunks.push(firstChunk + j);
  }
  const byPack = new Map<string, Want[]>();
  for (const w of byHash.values()) {
    let g = byPack.get(w.loc.pack);
    if (!g) byPack.set(w.loc.pack, (g = []));
    g.push(w);
  }
  const runs: Want[][] = [];
  for (const g of byPack.values()) {
    g.sort((a, b) => a.loc.offset - b.loc.offset);
    let run: Want[] = [];
    for (const w of g) {
      const last = run.at(-1);
      const runStart = run[0]?.loc.offset ?? w.loc.offset;
      if (last && (w.loc.offset - (last.loc.offset + last.loc.length) > MAX_GAP_BYTES || w.loc.offset + w.loc.length - runStart > MAX_RUN_BYTES)) {
        runs.push(run);
        run = [];
      }
      run.push(w);
    }
    if (run.length) runs.push(run);
  }
  return runs;
}

async function fetchAndWrite(repo: Repository, disk: DiskRecord, fh: FileHandle, run: Want[]): Promise<number> {
  const first = run[0] as Want;
  const last = run.at(-1) as Want;
  const start = first.loc.offset;
  const blobs = run.map((w) => ({
    offset: w.loc.offset - start, length: w.loc.length, codec: w.loc.codec, rawLength: w.loc.rawLength, hash: w.hash,
    at: w.chunks.map((c) => c * disk.chunkBytes),
  }));
  const missing = () => new IntegrityError(`pack ${first.loc.pack.slice(0, 12)} is missing: disk ${disk.name} bytes ${rangeOf(disk, first.chunks[0] ?? 0)} cannot be restored`);
  const length = last.loc.offset + last.loc.length - start;
  const key = Keys.pack(first.loc.pack);
  const local = repo.target.localPath?.(key);
  if (local) {
    // The worker reads the range itself into a buffer it keeps: nothing per run for the GC.
    const r = await repo.workerRead(key, codecPool().decodeAndWriteFromFile({ path: local, offset: start, length }, blobs, fh.fd, disk.sizeBytes));
    if (r.missing) throw missing();
    return judgeRun(disk, run, r);
  }
  let bytes: Buffer;
  try {
    bytes = await repo.target.get(key, { offset: start, length });
  } catch (e) {
    if (e instanceof BlobNotFoundError) throw missing();
    throw e;
  }
  return judgeRun(disk, run, await codecPool().decodeAndWrite(bytes, blobs, fh.fd, disk.sizeBytes));
}

function judgeRun(disk: DiskRecord, run: Want[], { results, written }: { results: { ok: boolean; error?: string }[]; written: number }): number {
  for (const [k, w] of run.entries()) {
    const r = results[k];
    if (!r?.ok) {
      throw new IntegrityError(`chunk ${w.hash.slice(0, 12)} in pack ${w.loc.pack.slice(0, 12)} ${r?.error ?? 'is missing'} (damaged pack): disk ${disk.name} bytes ${rangeOf(disk, w.chunks[0] ?? 0)} cannot be restored`);
    }
  }
  return written;
}

function rangeOf(disk: DiskRecord, chunk: number): string {
  const s = chunk * disk.chunkBytes;
  return `${s}-${Math.min(s + disk.chunkBytes, disk.sizeBytes)}`;
}
