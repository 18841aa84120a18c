/**
 * VM-level backup of one disk: fixed-size chunks aligned to the disk, holes and all-zero
 * chunks recorded (all-zero hash) but never stored, only new chunks written. With a
 * changed-extent list (RCT, dirty bitmaps) and a parent point, only chunks touching a changed
 * range are read; the others take the parent's entry, so the point is still a synthetic full.
 */
import type { Repository, BlobWriter, DiskRecord, Point } from '../repo/index.js';
import type { Placement } from '../repo/point.js';
import { HASH_BYTES, LIST_ENTRIES_PER_BLOB, hashOwned } from '../repo/index.js';
import type { DiskSource, Extent } from '../hosts/types.js';
import type { ProgressFn } from '../progress.js';
import { runBounded } from '../runtime/concurrency.js';
import { InterruptedError, SourceError } from '../errors.js';
import type { Clock } from '../runtime/clock.js';
import { openImageSource } from '../hosts/local/image-source.js';
import { codecPool, countdown, once, WorkerReadError } from '../repo/codec-pool.js';
import type { ChunkToRead } from '../repo/chunk-read.js';
import { resolve } from 'node:path';

export interface DiskBackupOptions {
  /** Guest ranges changed since `parentDisk` was taken; without it every data extent is read. */
  changedExtents?: Extent[];
  parentDisk?: DiskRecord;
  /** Why there is no `parentDisk`, when the caller knows better than "no parent point". */
  noParentReason?: string;
  signal?: AbortSignal;
  onProgress?: ProgressFn;
}

export interface DiskBackupResult {
  disk: DiskRecord;
  readBytes: number;
  /** Why a changed-extent list could not be used (then the whole disk was read). */
  fullReadReason?: string;
}

const CHUNKS_IN_FLIGHT = 16;
const COARSE_GROWTH_MAX = 1 << 30;

export async function backupDisk(repo: Repository, writer: BlobWriter, src: DiskSource, opts: DiskBackupOptions = {}): Promise<DiskBackupResult> {
  const chunkBytes = repo.config.imageChunkBytes;
  const nChunks = Math.ceil(src.sizeBytes / chunkBytes);
  const incremental = planIncremental(opts, chunkBytes, src);
  // With a changed-extent list only its chunks and any growth of the disk are read: a source
  // may then skip looking up its holes, unless the disk grew by much (holes read as zeros).
  const grownBytes = src.sizeBytes - (opts.parentDisk?.sizeBytes ?? 0);
  const extents = new ExtentCursor(await src.dataExtents({ coarse: !!incremental.plan && grownBytes <= COARSE_GROWTH_MAX }));
  const run: DiskRun = {
    src, writer, chunkBytes, zero: Buffer.alloc(chunkBytes), readBytes: 0, doneBytes: 0,
    // A file on this machine: worker threads read, hash and compress its chunks themselves.
    reader: src.localPath && src.fileOffset ? new ChunkReader(src.localPath, repo.config.compression.level) : undefined,
    // Compress along with hashing when most chunks are expected to be new.
    compressFirst: !opts.parentDisk || !!incremental.plan,
    progress: () => opts.onProgress?.({ phase: 'backup', doneBytes: run.doneBytes, totalBytes: src.sizeBytes, item: src.name }),
  };
  const lists: string[] = [];
  for (let seg = 0; seg * LIST_ENTRIES_PER_BLOB < nChunks; seg++) {
    const first = seg * LIST_ENTRIES_PER_BLOB;
    const count = Math.min(LIST_ENTRIES_PER_BLOB, nChunks - first);
    const entries = Buffer.alloc(count * HASH_BYTES); // all-zero entry = zero chunk
    const parentEntries = incremental.plan ? await parentSegment(repo, opts.parentDisk, seg) : undefined;

    function* jobs(): Iterable<() => Promise<void>> {
      for (let i = first; i < first + count; i++) {
        if (opts.signal?.aborted) throw new InterruptedError();
        const start = i * chunkBytes;
        const len = Math.min(chunkBytes, src.sizeBytes - start);
        const pieces = extents.within(start, len);
        const slot = (i - first) * HASH_BYTES;
        if (pieces.length === 0) {
          run.doneBytes += len; // a hole: zero entry, nothing read
        } else if (parentEntries && incremental.plan && !incremental.plan.needsRead(i, start, len)) {
          parentEntries.copy(entries, slot, slot, slot + HASH_BYTES);
          run.doneBytes += len;
        } else {
          yield () => storeChunk(run, { entries, slot, start, len, pieces });
        }
      }
    }
    await runBounded(jobs(), CHUNKS_IN_FLIGHT, opts.signal);
    if (opts.signal?.aborted) throw new InterruptedError();
    lists.push(await writer.putRaw(entries));
    run.progress();
  }
  return {
    disk: { name: src.name, sizeBytes: src.sizeBytes, chunkBytes, lists, sourceFormat: src.format },
    readBytes: run.readBytes,
    fullReadReason: incremental.reason,
  };
}

/** What the chunks of one disk backup share. */
interface DiskRun {
  src: DiskSource;
  writer: BlobWriter;
  chunkBytes: number;
  zero: Buffer;
  reader: ChunkReader | undefined;
  compressFirst: boolean;
  readBytes: number;
  doneBytes: number;
  progress: () => void;
}

/** One chunk to read: where its hash goes in the segment's list, its guest range and data pieces. */
interface ChunkJob {
  entries: Buffer;
  slot: number;
  start: number;
  len: number;
  pieces: Extent[];
}

/** Read, hash and store one chunk (all-zero: nothing stored, its entry stays zero). */
async function storeChunk(run: DiskRun, c: ChunkJob): Promise<void> {
  const { src, writer, reader } = run;
  const covered = c.pieces.reduce((a, p) => a + p.length, 0);
  if (reader) {
    const chunk = { length: c.len, pieces: c.pieces.map((p) => ({ fileOffset: src.fileOffset!(p.offset, p.length), length: p.length, at: p.offset - c.start })) };
    let r = await reader.read(chunk, run.compressFirst);
    // Hashed only (most chunks of a full re-read are unchanged) and new: read again to store it.
    if (!r.zero && !r.stored && !writer.has(r.hash)) r = await reader.read(chunk, true);
    run.readBytes += covered;
    if (!r.zero) {
      c.entries.write(r.hash, c.slot, 'hex');
      try {
        await writer.putEncoded(r.hash, c.len, r.stored?.data ?? EMPTY, r.stored?.codec ?? 0);
      } finally {
        r.stored?.done(); // copied into the pack, or not needed
      }
    }
  } else {
    // Zero-filled only when holes inside the chunk must read as zeros.
    const buf = covered === c.len ? Buffer.allocUnsafeSlow(c.len) : Buffer.alloc(c.len);
    for (const p of c.pieces) await src.read(p.offset, p.length, buf, p.offset - c.start);
    run.readBytes += covered;
    if (!buf.equals(c.len === run.chunkBytes ? run.zero : run.zero.subarray(0, c.len))) {
      const { hash, data: owned } = await hashOwned(buf);
      c.entries.write(hash, c.slot, 'hex');
      await writer.putHashed(hash, owned);
    }
  }
  run.doneBytes += c.len;
  run.progress();
}

/** The data extents overlapping each chunk in turn (extents are sorted; chunks come in order). */
class ExtentCursor {
  private at = 0;

  constructor(private readonly extents: Extent[]) {}

  within(start: number, len: number): Extent[] {
    const ext = this.extents;
    while (this.at < ext.length && end(ext[this.at] as Extent) <= start) this.at++;
    const pieces: Extent[] = [];
    for (let k = this.at; k < ext.length && (ext[k] as Extent).offset < start + len; k++) {
      const e = ext[k] as Extent;
      const s = Math.max(e.offset, start);
      pieces.push({ offset: s, length: Math.min(end(e), start + len) - s });
    }
    return pieces;
  }
}

const EMPTY = Buffer.alloc(0);

interface ChunkRead {
  zero: boolean;
  hash: string;
  /** Stored bytes in a buffer lent by a worker: call done() once they are in a pack or dropped. */
  stored?: { data: Buffer; codec: number; done: () => void };
}

/**
 * Reads chunks of a local image file on the codec workers, a few per request (each thread
 * hand-off costs the main thread ~50 µs): a request leaves when BATCH chunks wait or at the
 * next turn of the event loop.
 */
class ChunkReader {
  private static readonly BATCH = 4;
  private readonly queues = new Map<boolean, { chunk: ChunkToRead; resolve: (r: ChunkRead) => void; reject: (e: unknown) => void }[]>([[true, []], [false, []]]);
  private scheduled = false;

  constructor(private readonly path: string, private readonly level: number) {}

  read(chunk: ChunkToRead, compress: boolean): Promise<ChunkRead> {
    return new Promise((resolve, reject) => {
      const q = this.queues.get(compress)!;
      q.push({ chunk, resolve, reject });
      if (q.length >= ChunkReader.BATCH) this.flush(compress);
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.flush(true);
          this.flush(false);
        });
      }
    });
  }

  private flush(compress: boolean): void {
    const batch = this.queues.get(compress)!.splice(0);
    if (batch.length === 0) return;
    codecPool().readChunks({ path: this.path, chunks: batch.map((b) => b.chunk), compress, level: this.level }).then(({ results, data, release }) => {
      // The buffer goes back to its worker when every chunk stored in it is done with.
      const done = countdown(results.filter((r) => !r.zero && r.stored).length, release);
      let at = 0;
      batch.forEach((b, k) => {
        const r = results[k]!;
        if (r.zero) return b.resolve({ zero: true, hash: '' });
        let stored: ChunkRead['stored'];
        if (r.stored) {
          stored = { data: data.subarray(at, at + r.stored[0]), codec: r.stored[1], done: once(done) };
          at += r.stored[0];
        }
        b.resolve({ zero: false, hash: r.hash, stored });
      });
    }, (e: unknown) => {
      const err = e instanceof WorkerReadError ? new SourceError(this.path, e.message, { cause: e }) : e;
      batch.forEach((b) => b.reject(err));
    });
  }
}

function end(e: Extent): number {
  return e.offset + e.length;
}

interface IncrementalPlan {
  needsRead(chunk: number, start: number, len: number): boolean;
}

/** Decide whether the changed-extent list can be trusted against the parent disk. */
function planIncremental(opts: DiskBackupOptions, chunkBytes: number, src: DiskSource): { plan?: IncrementalPlan; reason?: string } {
  if (!opts.changedExtents) return {};
  const parent = opts.parentDisk;
  if (!parent) return { reason: opts.noParentReason ?? 'no parent point of this name to apply the changed-extent list to' };
  if (parent.chunkBytes !== chunkBytes) return { reason: `parent point uses ${parent.chunkBytes}-byte chunks` };
  // A range past the end of both the disk and its parent fits neither: the list is most likely
  // another disk's, and its other ranges cannot be trusted to cover this disk's changes.
  const diskEnd = Math.max(src.sizeBytes, parent.sizeBytes);
  const outside = opts.changedExtents.filter((e) => e.offset >= diskEnd);
  if (outside.length) {
    const first = outside.reduce((a, b) => (b.offset < a.offset ? b : a));
    return { reason: `${outside.length} of its ${opts.changedExtents.length} range(s) start past the end of disk ${src.name} (${src.sizeBytes} bytes), the first at offset ${first.offset}: the list may belong to another disk` };
  }
  const changed = [...opts.changedExtents].sort((a, b) => a.offset - b.offset);
  const parentSize = parent.sizeBytes;
  return {
    plan: {
      needsRead(_chunk, start, len) {
        // Chunks the parent did not fully cover (disk grew, last partial chunk) are read.
        if (start + len > parentSize || (start + chunkBytes > parentSize && parentSize % chunkBytes !== 0)) return true;
        return overlaps(changed, start, len);
      },
    },
  };
}

function overlaps(sorted: Extent[], start: number, len: number): boolean {
  let lo = 0;
  let hi = sorted.length - 1;
  // first extent whose end > start
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (end(sorted[mid] as Extent) > start) hi = mid;
    else lo = mid + 1;
  }
  const e = sorted[lo];
  return e !== undefined && end(e) > start && e.offset < start + len;
}

async function parentSegment(repo: Repository, parent: DiskRecord | undefined, seg: number): Promise<Buffer | undefined> {
  const hash = parent?.lists[seg];
  return hash ? repo.readBlob(hash) : undefined;
}

/** The newest point of `name` that has a disk called `diskName`. */
export function findParentDisk(points: Point[], name: string, diskName: string): { point: Point; disk: DiskRecord } | undefined {
  for (let i = points.length - 1; i >= 0; i--) {
    const p = points[i] as Point;
    if (p.name !== name || p.kind !== 'vm') continue;
    const disk = p.disks?.find((d) => d.name === diskName);
    if (disk) return { point: p, disk };
  }
  return undefined;
}

/** Why no point of `name` can be the parent of disk `diskName`, when points of that name exist. */
function noParentReason(points: Point[], name: string, diskName: string): string | undefined {
  const newest = points.filter((p) => p.name === name).at(-1);
  if (!newest) return undefined;
  if (newest.kind !== 'vm') return `the newest point of ${name} is a file-level point, which holds no disk`;
  const disks = (newest.disks ?? []).map((d) => d.name);
  return `the newest point of ${name} holds disk${disks.length === 1 ? '' : 's'} ${disks.join(', ') || 'none'}, not ${diskName} (a changed-extent list applies only to the disk it was taken of)`;
}

export interface ImageBackupOptions {
  name: string;
  /** Policy that runs this backup (recorded on the point). */
  policy?: string;
  /** Which target the policy run wrote to (recorded on the point). */
  placement?: Placement;
  clock: Clock;
  hostname: string;
  /** Changed guest ranges since the newest point of `name` (what RCT / dirty bitmaps give). */
  changedExtents?: Extent[];
  signal?: AbortSignal;
  onProgress?: ProgressFn;
}

/** VM-level backup of a local disk image file: read, store, commit a point. */
export async function backupImage(repo: Repository, path: string, opts: ImageBackupOptions): Promise<Point> {
  const started = opts.clock.now();
  const src = await openImageSource(path);
  try {
    const { points } = await repo.listPoints();
    const parent = findParentDisk(points, opts.name, src.name);
    const writer = repo.newWriter();
    const r = await writer.complete(backupDisk(repo, writer, src, {
      changedExtents: opts.changedExtents,
      parentDisk: parent?.disk,
      noParentReason: parent ? undefined : noParentReason(points, opts.name, src.name),
      signal: opts.signal,
      onProgress: opts.onProgress,
    }));
    const warnings = [...src.warnings];
    if (r.fullReadReason) warnings.push(`changed-extent list not used: ${r.fullReadReason}; the whole disk was read`);
    return await repo.commitPoint({
      formatVersion: 1,
      name: opts.name,
      ...(opts.policy ? { policy: opts.policy } : {}),
      kind: 'vm',
      time: started.toISOString(),
      hostname: opts.hostname,
      source: { type: 'image', path: resolve(path) },
      ...(parent ? { parent: parent.point.id } : {}),
      disks: [r.disk],
      stats: {
        logicalBytes: src.sizeBytes,
        readBytes: r.readBytes,
        newBytes: writer.stats.rawBytesNew,
        storedNewBytes: writer.stats.storedBytesNew,
        durationMs: opts.clock.now().getTime() - started.getTime(),
      },
      errors: [],
      changeTracking: opts.changedExtents && !r.fullReadReason
        ? { mode: 'changed-extents' }
        : { mode: 'full-read', ...(r.fullReadReason ? { reason: r.fullReadReason } : {}) },
      ...(warnings.length ? { warnings } : {}),
      ...(opts.placement ? { placement: opts.placement } : {}),
    });
  } finally {
    await src.close();
  }
}
