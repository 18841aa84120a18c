/**
 * Restore a file-level point to a folder, or to a .zip / .tar / .tar.gz archive.
 *
 * Folder restores run in phases, and nothing is written before the first three are done:
 *   1. plan: read the trees, apply --include (unknown paths and unsafe names fail here);
 *   2. scan: what already exists at the destination (DestinationExistsError unless
 *      --overwrite; a symlink where a folder goes is refused);
 *   3. locate every chunk in the index (a missing one fails here);
 *   4. folders (mode 0700 while being filled), then file content in pack order, each chunk
 *      verified against its hash by a writer thread (file-writer-pool.ts), one batch per range
 *      read from a pack. Files of one chunk (most of them) are created, written and given
 *      owner, mode and mtime there; chunks of larger files are written at their offsets into
 *      descriptors opened here (OpenFiles), which sets the metadata after the last chunk;
 *   5. hard links, then symlinks (only once all regular content exists, so no write can go
 *      through a link created by this restore), then folder metadata, deepest first.
 * Existing files are replaced by unlink + create with O_EXCL|O_NOFOLLOW, never by writing
 * through them (an existing file may be a hard link to something outside the destination).
 */
import { resolve } from 'node:path';
import pLimit from 'p-limit';
import { fsp, constants, openSync, closeSync, ftruncateSync, unlinkSync, type FileHandle } from '../runtime/fs.js';
import { ignoreNotPermitted, setMetaSync, utimeArg } from './file-meta.js';
import type { Repository } from '../repo/repository.js';
import type { Point, RootMeta } from '../repo/point.js';
import type { TreeEntry } from '../repo/tree.js';
import type { ProgressFn } from '../progress.js';
import { IntegrityError, InterruptedError, UsageError, asDestinationError, destinationCreateError, errnoCode } from '../errors.js';
import { planRestore, type PlanItem } from './files-plan.js';
import { forEachRange, locateBlobs, readRange, type PackRange } from './pack-fetch.js';
import type { BlobLocation } from '../repo/index-store.js';
import { Keys } from '../repo/format.js';
import { FileWriters, type BatchBlob } from './file-writer-pool.js';
import { destPath, makeDir, makeRoot, scanDestination, type DestScan } from './safe-path.js';
import { archiveFormat, restoreArchive } from './archive-restore.js';
import { collectGarbage } from '../runtime/gc.js';

export interface RestoreFilesOptions {
  /** Paths relative to the backed-up folder (a leading '/' is fine); a folder brings its subtree. */
  include?: string[];
  overwrite?: boolean;
  signal?: AbortSignal;
  onProgress?: ProgressFn;
  /** Descriptors kept open for files written chunk by chunk (default 128); idle ones above it are closed and reopened. */
  maxOpenFiles?: number;
}

export interface RestoreFilesResult {
  /** Non-folder entries restored (files, hard links, symlinks). */
  files: number;
  dirs: number;
  /** Bytes of file content written. */
  bytes: number;
  durationMs: number;
  /** The folder or archive written. */
  dest: string;
  /** Items the archive cannot hold under their own names (zip), left out; the command exits 3. */
  skipped?: { path: string; why: string }[];
}

/** Symlinks / folders whose metadata is set at once (after the content phase). */
const META_IN_FLIGHT = 16;

export async function restoreFiles(repo: Repository, point: Point, dest: string, opts: RestoreFilesOptions = {}): Promise<RestoreFilesResult> {
  const t0 = performance.now();
  const items = await planRestore(repo, point, opts.include);
  const format = archiveFormat(dest);
  // A file in the way of DEST's folder (ENOTDIR) or a symlink loop: nothing can be written there.
  await fsp.lstat(resolve(dest)).catch((e: unknown) => {
    if (errnoCode(e) !== 'ENOENT') throw destinationCreateError(resolve(dest), e);
  });
  const r = format
    ? await restoreArchive(repo, items, resolve(dest), format, opts)
    : await restoreFolder(repo, items, resolve(dest), opts, point.source.root).catch((e: unknown) => {
      throw asDestinationError(e, resolve(dest), 'the files restored so far are left there');
    });
  return { ...r, durationMs: Math.round(performance.now() - t0) };
}

interface FileTask {
  abs: string;
  entry: TreeEntry;
  replace: boolean;
  /** Chunks not yet written; the writer of the last one sets the metadata. */
  remaining: number;
  /** Created on disk (by OpenFiles; whole files are created by a writer thread). */
  created?: boolean;
  /** Open descriptor while chunks are being written, and how many batches in flight use it. */
  fd?: number;
  busy: number;
}

async function restoreFolder(repo: Repository, items: PlanItem[], dest: string, opts: RestoreFilesOptions, rootMeta?: RootMeta): Promise<Omit<RestoreFilesResult, 'durationMs'>> {
  const { exists, root: planned, scan } = await inspectDestination(dest, items, !!opts.overwrite);
  const tree = sortEntries(items, planned, scan);
  const content = chunkUses(repo, tree.files);
  // The plan's garbage (tree JSON, decoded blobs) goes before the writer threads start: the
  // main thread's heap at the peak of the 30k-file bench restore went 70 -> 59 MiB.
  collectGarbage();

  // Phase 4: folders, then content.
  const root = exists ? planned : await makeRoot(dest);
  const create = await createRules(root, exists);
  for (const { rel } of tree.dirs) await makeDir(destPath(root, rel), scan.existingDirs.has(rel), scan.replace.has(rel));
  for (const f of tree.files) if (f.remaining === 0) createEmptySync(f);
  await writeContent(repo, content, create, opts);

  // Phase 5: links, symlinks, folder metadata.
  const limit = pLimit(META_IN_FLIGHT);
  for (const l of tree.links) {
    if (l.replace) await removeIfThere(l.abs);
    await fsp.link(l.to, l.abs);
  }
  await Promise.all(tree.symlinks.map((s) => limit(() => makeSymlink(destPath(root, s.rel), s.entry, scan.replace.has(s.rel)))));
  await applyDirMeta(root, tree.dirs, limit);
  // DEST itself gets the backed-up folder's owner, mode and mtime when the restore made it, or
  // may replace what is there; an existing folder restored into without --overwrite keeps its own.
  if (rootMeta && (!exists || opts.overwrite)) await applyDirMeta(root, [{ rel: '', entry: { name: '', type: 'dir', size: 0, ino: '0', ctimeNs: '0', ...rootMeta } }], limit);
  opts.onProgress?.({ phase: 'restore', doneBytes: content.totalBytes, totalBytes: content.totalBytes });
  return { files: items.length - tree.dirs.length, dirs: tree.dirs.length, bytes: content.totalBytes, dest: root };
}

/** Phase 2: whether DEST exists (then as a folder, by its real path) and what in it the restore meets. */
async function inspectDestination(dest: string, items: PlanItem[], overwrite: boolean): Promise<{ exists: boolean; root: string; scan: DestScan }> {
  const st = await fsp.stat(dest).catch((e: unknown) => (errnoCode(e) === 'ENOENT' ? undefined : Promise.reject(e)));
  if (!st) return { exists: false, root: dest, scan: { replace: new Set(), existingDirs: new Set() } };
  if (!st.isDirectory()) {
    throw new UsageError(`restore destination ${dest} exists and is not a folder`, 'give a folder, or a path ending in .zip, .tar or .tar.gz');
  }
  const root = await fsp.realpath(dest);
  return { exists: true, root, scan: await scanDestination(root, items, overwrite) };
}

interface SortedTree {
  dirs: PlanItem[];
  /** Regular files, and hard links whose target this restore does not write (they get their own copy). */
  files: FileTask[];
  links: { abs: string; to: string; replace: boolean }[];
  symlinks: PlanItem[];
}

/** The plan's entries by what the restore does with them, files as tasks under `root`. */
function sortEntries(items: PlanItem[], root: string, scan: DestScan): SortedTree {
  const tree: SortedTree = { dirs: [], files: [], links: [], symlinks: [] };
  const byRel = new Map<string, FileTask>();
  const task = (rel: string, entry: TreeEntry): FileTask => ({ abs: destPath(root, rel), entry, replace: scan.replace.has(rel), remaining: entry.content?.length ?? 0, busy: 0 });
  for (const item of items) {
    const { rel, entry } = item;
    if (entry.type === 'dir') tree.dirs.push(item);
    else if (entry.type === 'symlink') tree.symlinks.push(item);
    else if (entry.type === 'file') {
      const f = task(rel, entry);
      tree.files.push(f);
      byRel.set(rel, f);
    }
  }
  for (const { rel, entry } of items) {
    if (entry.type !== 'hardlink') continue;
    // Linked only to a file this restore writes itself; otherwise the link gets its own copy.
    if (byRel.has(entry.linkTo as string)) tree.links.push({ abs: destPath(root, rel), to: destPath(root, entry.linkTo as string), replace: scan.replace.has(rel) });
    else tree.files.push(task(rel, entry));
  }
  return tree;
}

/** Where each chunk of the files is (phase 3) and which files, at which offsets, use it. */
interface ChunkUses {
  located: Map<string, BlobLocation>;
  uses: Map<string, { file: FileTask; offset: number }[]>;
  totalBytes: number;
}

function chunkUses(repo: Repository, files: FileTask[]): ChunkUses {
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
interface CreateRules {
  ownerByCreate: (e: TreeEntry) => boolean;
  modeByCreate: (e: TreeEntry) => boolean;
}

/**
 * Files created in folders this restore made get the process's user and group (unless the
 * new root inherited a setgid bit); a create mode is taken as is unless the umask or special
 * bits (setuid, setgid, sticky) get in the way.
 */
async function createRules(root: string, existed: boolean): Promise<CreateRules> {
  const umask = process.umask();
  const euid = process.geteuid?.() ?? -1;
  const egid = process.getegid?.() ?? -1;
  const freshTree = !existed && ((await fsp.stat(root)).mode & 0o2000) === 0;
  return {
    ownerByCreate: (e) => freshTree && e.uid === euid && e.gid === egid,
    modeByCreate: (e) => (e.mode & ~0o777) === 0 && (e.mode & umask) === 0,
  };
}

/** Phase 4's content: every range read from a pack goes to a writer thread with where each blob lands. */
async function writeContent(repo: Repository, content: ChunkUses, create: CreateRules, opts: RestoreFilesOptions): Promise<void> {
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
  const open = new OpenFiles(opts.maxOpenFiles ?? MAX_OPEN_FILES);
  const writers = uses.size > 0 ? new FileWriters((h) => located.get(h)?.pack ?? '?') : undefined;
  try {
    const localPath = repo.target.localPath?.bind(repo.target);
    await forEachRange(located, async (range) => {
      if (opts.signal?.aborted) throw new InterruptedError();
      const parts: FileTask[] = [];
      const batch = range.blobs.map((b) => batchBlob(b, uses, open, parts, create));
      let bytes: number;
      try {
        // A local pack is read by the writer thread itself (nothing on this thread's heap).
        const key = Keys.pack(range.pack);
        bytes = localPath
          ? await repo.workerRead(key, writers!.writeFromFile(range.pack, localPath(key), range.start, range.length, batch))
          : await writers!.write(await readRange(repo, range), batch);
      } finally {
        for (const f of parts) f.busy--;
      }
      // Every chunk of these files in this batch is on disk: the last one sets the metadata.
      for (const f of parts) if (--f.remaining === 0) open.finish(f);
      open.closeIdle();
      progress(bytes, batch.at(-1)?.files[0]?.path ?? parts.at(-1)?.abs ?? '');
    }, opts.signal);
  } finally {
    open.closeAll();
    await writers?.close();
  }
}

/**
 * One blob of a range for the writer thread: a file it makes whole (created, written and given
 * its metadata there) or writes at offsets into descriptors held open here (added to `parts`).
 */
function batchBlob(b: PackRange['blobs'][number], uses: ChunkUses['uses'], open: OpenFiles, parts: FileTask[], create: CreateRules): BatchBlob {
  const out: BatchBlob = { offset: b.at, length: b.loc.length, codec: b.loc.codec, rawLength: b.loc.rawLength, hash: b.hash, files: [], writes: [] };
  const users = uses.get(b.hash)!;
  const whole = users.every((u) => u.file.entry.content?.length === 1 && u.file.remaining === 1);
  for (const { file, offset } of users) {
    if (whole) {
      file.remaining = 0;
      const e = file.entry;
      out.files.push({
        path: file.abs, uid: e.uid, gid: e.gid, mode: e.mode, mtime: utimeArg(e.mtimeNs), replace: file.replace,
        ownerByCreate: create.ownerByCreate(e), modeByCreate: create.modeByCreate(e),
      });
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
 * Files whose chunks are written at their offsets by the writer threads: created (and sized,
 * so skipped zero blocks read back as zeros) on first use, kept open while batches use them,
 * given their metadata and closed after the last chunk. When more than MAX_OPEN_FILES are
 * open (chunks of many files spread over many packs), idle ones are closed and reopened
 * later. A descriptor is never closed while a batch in flight holds it (its number could be
 * reused by the next open while a writer thread still writes to it).
 */
class OpenFiles {
  private readonly open = new Set<FileTask>();
  constructor(private readonly max: number) {}

  fd(f: FileTask): number {
    f.busy++;
    if (f.fd !== undefined) return f.fd;
    if (!f.created) {
      if (f.replace) removeIfThereSync(f.abs);
      f.fd = openSync(f.abs, CREATE, 0o600);
      f.created = true;
      ftruncateSync(f.fd, f.entry.size);
    } else {
      f.fd = openSync(f.abs, constants.O_WRONLY | constants.O_NOFOLLOW);
    }
    this.open.add(f);
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

/** An empty file: create it and set its metadata, synchronously (a few cheap syscalls). */
function createEmptySync(f: FileTask): void {
  if (f.replace) removeIfThereSync(f.abs);
  const fd = openSync(f.abs, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    applyMetaSync(fd, f.entry);
  } finally {
    closeSync(fd);
  }
}

function applyMetaSync(fd: number, e: TreeEntry): void {
  setMetaSync(fd, { uid: e.uid, gid: e.gid, mode: e.mode, mtime: utimeArg(e.mtimeNs) });
}

function removeIfThereSync(abs: string): void {
  try {
    unlinkSync(abs);
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
}

async function applyMeta(h: FileHandle, e: TreeEntry): Promise<void> {
  // Owner first: chown clears setuid/setgid, chmod then sets them back.
  await h.chown(e.uid, e.gid).catch(ignoreNotPermitted);
  await h.chmod(e.mode);
  const t = utimeArg(e.mtimeNs);
  await h.utimes(t, t);
}

async function makeSymlink(abs: string, e: TreeEntry, replace: boolean): Promise<void> {
  if (replace) await removeIfThere(abs);
  await fsp.symlink(e.target as string, abs);
  await fsp.lchown(abs, e.uid, e.gid).catch(ignoreNotPermitted);
  const t = utimeArg(e.mtimeNs);
  await fsp.lutimes(abs, t, t);
}

/** Deepest folders first, so a read-only folder is closed only after everything inside it. */
async function applyDirMeta(root: string, dirs: PlanItem[], limit: ReturnType<typeof pLimit>): Promise<void> {
  const byDepth = new Map<number, PlanItem[]>();
  for (const d of dirs) {
    const depth = d.rel.split('/').length;
    let l = byDepth.get(depth);
    if (!l) byDepth.set(depth, (l = []));
    l.push(d);
  }
  for (const depth of [...byDepth.keys()].sort((a, b) => b - a)) {
    await Promise.all(byDepth.get(depth)!.map((d) => limit(async () => {
      const h = await fsp.open(destPath(root, d.rel), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      try {
        await applyMeta(h, d.entry);
      } finally {
        await h.close();
      }
    })));
  }
}

async function removeIfThere(abs: string): Promise<void> {
  await fsp.unlink(abs).catch((e: unknown) => (errnoCode(e) === 'ENOENT' ? undefined : Promise.reject(e)));
}
