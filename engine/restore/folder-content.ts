/**
 * Phase 4 of a folder restore (files-restore.ts): the content of regular files, in pack order,
 * each chunk verified by a writer thread (file-writer-pool.ts), one batch per range read from
 * a pack. Files of one chunk (most of them) are created, written and given owner, mode and
 * mtime there; chunks of larger files are written at their offsets into descriptors opened
 * here (OpenFiles), which sets the metadata after the last chunk.
 *
 * A file is `done` once it is complete under its final name. Files written over many batches
 * (OpenFiles), files of TEMP_NAME_FROM_BYTES and more, and files that replace an existing one
 * are written under a temporary name and named when complete (partial-file.ts); when the
 * restore fails, the temporary files of unfinished ones are removed here, and a writer thread
 * removes a file it could not finish itself.
 */
import { constants, openSync, closeSync, ftruncateSync } from '../runtime/fs.js';
import { setMetaSync, utimeArg } from './file-meta.js';
import type { Repository } from '../repo/repository.js';
import type { TreeEntry } from '../repo/tree.js';
import type { ProgressFn } from '../progress.js';
import { IntegrityError, InterruptedError } from '../errors.js';
import { forEachRange, locateBlobs, readRange, type PackRange } from './pack-fetch.js';
import type { BlobLocation } from '../repo/index-store.js';
import { Keys } from '../repo/format.js';
import { FileWriters, type BatchBlob } from './file-writer-pool.js';
import { publishSync, removeQuietSync, type PartialNames } from './partial-file.js';

export interface FileTask {
  /** Relative to DEST, for messages. */
  rel: string;
  abs: string;
  entry: TreeEntry;
  replace: boolean;
  /** Chunks not yet written; the writer of the last one sets the metadata. */
  remaining: number;
  /** The temporary name it is written under, when it has one. */
  tmp?: string;
  /** Created on disk by OpenFiles (whole files are created by a writer thread). */
  created?: boolean;
  /** Complete under its final name. */
  done?: boolean;
  /** Open descriptor while chunks are being written, and how many batches in flight use it. */
  fd?: number;
  busy: number;
}

/**
 * Single-chunk files from this size on are written under a temporary name too (a link(2) and
 * an unlink(2) more). A smaller file is created, written in one call, given its metadata and
 * closed within microseconds, and a writer thread that fails on it removes it at once: only a
 * `kill -9` inside that window leaves one (per writer thread) short under its own name. On the
 * 30k-file bench tree, 96% of whose files are smaller, temporary names for every file meant
 * 24% more system calls and +7.5% restore time (median of 11 paired runs on a shared 2-vCPU
 * VM); from 64 KiB on (1,141 files, 1% more calls) +4%, within the noise of those runs.
 * 0 here gives every file a temporary name.
 */
const TEMP_NAME_FROM_BYTES = 64 * 1024;

/** Where each chunk of the files is (phase 3) and which files, at which offsets, use it. */
export interface ChunkUses {
  located: Map<string, BlobLocation>;
  uses: Map<string, { file: FileTask; offset: number }[]>;
  totalBytes: number;
}

export function chunkUses(repo: Repository, files: FileTask[]): ChunkUses {
  const located = locateBlobs(repo, files.flatMap((f) => f.entry.content ?? []));
  const uses = new Map<string, { file: FileTask; offset: number }[]>();
  let totalBytes = 0;
  for (const f of files) {
    let offset = 0;
    for (const h of f.entry.content ?? []) {
      let u = uses.get(h);
      if (!u) uses.set(h, (u = []));
      u.push({ file: f, offset });
      offset += located.get(h)!.rawLength;
    }
    if (offset !== f.entry.size) throw new IntegrityError(`${f.abs}: the point records ${f.entry.size} bytes but its chunks hold ${offset}`);
    totalBytes += offset;
  }
  return { located, uses, totalBytes };
}

/** Whether a file's owner and mode come right from creating it, so fchown / fchmod are skipped. */
export interface CreateRules {
  ownerByCreate: (e: TreeEntry) => boolean;
  modeByCreate: (e: TreeEntry) => boolean;
}

export interface ContentOptions {
  signal?: AbortSignal;
  onProgress?: ProgressFn;
  maxOpenFiles?: number;
}

/** Every range read from a pack goes to a writer thread with where each blob lands. On failure, unfinished files of `files` are removed. */
export async function writeContent(repo: Repository, content: ChunkUses, files: FileTask[], create: CreateRules, names: PartialNames, opts: ContentOptions): Promise<void> {
  const { located, uses, totalBytes } = content;
  let doneBytes = 0;
  let reported = 0;
  const progress = (bytes: number, item: string) => {
    doneBytes += bytes;
    if (opts.onProgress && doneBytes - reported >= 4 << 20) {
      reported = doneBytes;
      opts.onProgress({ phase: 'restore', doneBytes, totalBytes, item });
    }
  };
  const open = new OpenFiles(opts.maxOpenFiles ?? MAX_OPEN_FILES, names);
  const writers = uses.size > 0 ? new FileWriters((h) => located.get(h)?.pack ?? '?') : undefined;
  try {
    const localPath = repo.target.localPath?.bind(repo.target);
    await forEachRange(located, async (range) => {
      if (opts.signal?.aborted) throw new InterruptedError();
      const parts: FileTask[] = [];
      const whole: FileTask[] = [];
      const batch = range.blobs.map((b) => batchBlob(b, uses, open, parts, whole, create, names));
      const onDone = (n: number) => {
        for (let i = 0; i < n; i++) (whole[i] as FileTask).done = true;
      };
      let bytes: number;
      try {
        // A local pack is read by the writer thread itself (nothing on this thread's heap).
        const key = Keys.pack(range.pack);
        bytes = localPath
          ? await repo.workerRead(key, writers!.writeFromFile(range.pack, localPath(key), range.start, range.length, batch, onDone))
          : await writers!.write(await readRange(repo, range), batch, onDone);
      } finally {
        for (const f of parts) f.busy--;
      }
      // Every chunk of these files in this batch is on disk: the last one sets the metadata.
      for (const f of parts) if (--f.remaining === 0) open.finish(f);
      open.closeIdle();
      progress(bytes, batch.at(-1)?.files[0]?.path ?? parts.at(-1)?.abs ?? '');
    }, opts.signal);
  } catch (e) {
    // forEachRange has awaited every batch in flight: no writer thread uses these files now.
    open.closeAll();
    for (const f of files) if (f.created && !f.done) removeQuietSync(f.tmp as string);
    throw e;
  } finally {
    open.closeAll();
    await writers?.close();
  }
}

/**
 * One blob of a range for the writer thread: a file it makes whole (created, written and given
 * its metadata there; added to `whole`) or writes at offsets into descriptors held open here
 * (added to `parts`).
 */
function batchBlob(b: PackRange['blobs'][number], uses: ChunkUses['uses'], open: OpenFiles, parts: FileTask[], whole: FileTask[], create: CreateRules, names: PartialNames): BatchBlob {
  const out: BatchBlob = { offset: b.at, length: b.loc.length, codec: b.loc.codec, rawLength: b.loc.rawLength, hash: b.hash, files: [], writes: [] };
  const users = uses.get(b.hash)!;
  const isWhole = users.every((u) => u.file.entry.content?.length === 1 && u.file.remaining === 1);
  for (const { file, offset } of users) {
    if (isWhole) {
      file.remaining = 0;
      const e = file.entry;
      if (file.replace || e.size >= TEMP_NAME_FROM_BYTES) file.tmp = names.of(file.abs);
      out.files.push({
        path: file.abs, tmp: file.tmp, uid: e.uid, gid: e.gid, mode: e.mode, mtime: utimeArg(e.mtimeNs), replace: file.replace,
        ownerByCreate: create.ownerByCreate(e), modeByCreate: create.modeByCreate(e),
      });
      whole.push(file);
    } else {
      out.writes.push({ fd: open.fd(file), path: file.abs, at: offset, limit: file.entry.size });
      parts.push(file);
    }
  }
  return out;
}

/** Descriptors of files written chunk by chunk stay open this side of the limit. */
const MAX_OPEN_FILES = 128;
const CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/**
 * Files whose chunks are written at their offsets by the writer threads: created under their
 * temporary name (and sized, so skipped zero blocks read back as zeros) on first use, kept
 * open while batches use them, given their metadata, closed and named after the last chunk.
 * When more than MAX_OPEN_FILES are open (chunks of many files spread over many packs), idle
 * ones are closed and reopened later. A descriptor is never closed while a batch in flight
 * holds it (its number could be reused by the next open while a writer thread still writes to it).
 */
class OpenFiles {
  private readonly open = new Set<FileTask>();
  constructor(private readonly max: number, private readonly names: PartialNames) {}

  fd(f: FileTask): number {
    f.busy++;
    if (f.fd !== undefined) return f.fd;
    if (!f.created) {
      f.tmp = this.names.of(f.abs);
      f.fd = openSync(f.tmp, CREATE, 0o600);
      f.created = true;
      this.open.add(f);
      ftruncateSync(f.fd, f.entry.size);
    } else {
      f.fd = openSync(f.tmp as string, constants.O_WRONLY | constants.O_NOFOLLOW);
      this.open.add(f);
    }
    return f.fd;
  }

  finish(f: FileTask): void {
    const fd = f.fd as number;
    this.forget(f);
    try {
      applyMetaSync(fd, f.entry);
    } finally {
      closeSync(fd);
    }
    publishSync(f.tmp as string, f.abs, f.replace);
    f.done = true;
  }

  closeIdle(): void {
    if (this.open.size <= this.max) return;
    for (const f of this.open) {
      if (f.busy > 0) continue;
      const fd = f.fd as number;
      this.forget(f);
      closeSync(fd);
    }
  }

  /** After a failure, once nothing is in flight. */
  closeAll(): void {
    for (const f of this.open) closeSync(f.fd as number);
    this.open.clear();
  }

  private forget(f: FileTask): void {
    this.open.delete(f);
    f.fd = undefined;
  }
}

/** An empty file: create it and set its metadata, synchronously (a few cheap syscalls); one that replaces a file goes in by rename. */
export function createEmptySync(f: FileTask, names: PartialNames): void {
  const at = f.replace ? (f.tmp = names.of(f.abs)) : f.abs;
  const fd = openSync(at, CREATE, 0o600);
  try {
    try {
      applyMetaSync(fd, f.entry);
    } finally {
      closeSync(fd);
    }
    if (f.replace) publishSync(at, f.abs, true);
  } catch (e) {
    removeQuietSync(at);
    throw e;
  }
  f.done = true;
}

function applyMetaSync(fd: number, e: TreeEntry): void {
  setMetaSync(fd, { uid: e.uid, gid: e.gid, mode: e.mode, mtime: utimeArg(e.mtimeNs) });
}
