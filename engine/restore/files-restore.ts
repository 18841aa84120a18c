/**
 * Restore a file-level point to a folder, or to a .zip / .tar / .tar.gz archive.
 *
 * Folder restores run in phases, and nothing is written before the first three are done:
 *   1. plan: read the trees, apply --include (unknown paths and unsafe names fail here);
 *   2. scan: what already exists at the destination (DestinationExistsError unless
 *      --overwrite; a symlink where a folder goes is refused);
 *   3. locate every chunk in the index (a missing one fails here);
 *   4. folders (mode 0700 while being filled), then file content in pack order, each chunk
 *      verified against its hash by a writer thread (folder-content.ts);
 *   5. hard links, then symlinks (only once all regular content exists, so no write can go
 *      through a link created by this restore), then folder metadata, deepest first.
 * Existing entries are never written through (an existing file may be a hard link to
 * something outside the destination): the new file, link or symlink is made under a temporary
 * name and renamed over the old one once complete, so a restore that fails leaves the old one
 * as it was. A restore that fails or is interrupted leaves only complete files under their
 * final names, and says which were not restored (folder-failure.ts).
 */
import { resolve } from 'node:path';
import pLimit from 'p-limit';
import { fsp, constants, type FileHandle } from '../runtime/fs.js';
import { ignoreNotPermitted, utimeArg } from './file-meta.js';
import type { Repository } from '../repo/repository.js';
import type { Point, RootMeta } from '../repo/point.js';
import type { TreeEntry } from '../repo/tree.js';
import type { ProgressFn } from '../progress.js';
import { InterruptedError, UsageError, asDestinationError, destinationCreateError, errnoCode } from '../errors.js';
import { planRestore, type PlanItem } from './files-plan.js';
import { destPath, makeDir, makeRoot, scanDestination, type DestScan } from './safe-path.js';
import { archiveFormat, restoreArchive } from './archive-restore.js';
import { collectGarbage } from '../runtime/gc.js';
import { chunkUses, createEmptySync, writeContent, type CreateRules, type FileTask } from './folder-content.js';
import { PartialNames } from './partial-file.js';
import { folderRestoreError, type Outcome } from './folder-failure.js';

export interface RestoreFilesOptions {
  /** Paths relative to the backed-up folder (a leading '/' is fine); a folder brings its subtree. */
  include?: string[];
  overwrite?: boolean;
  signal?: AbortSignal;
  onProgress?: ProgressFn;
  /** Says a non-fatal finding (a partial archive left beside DEST by a killed restore). */
  warn?: (line: string) => void;
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
    : await restoreFolder(repo, items, resolve(dest), opts, point.source.root);
  return { ...r, durationMs: Math.round(performance.now() - t0) };
}

async function restoreFolder(repo: Repository, items: PlanItem[], dest: string, opts: RestoreFilesOptions, rootMeta?: RootMeta): Promise<Omit<RestoreFilesResult, 'durationMs'>> {
  const { exists, root: planned, scan } = await inspectDestination(dest, items, !!opts.overwrite).catch((e: unknown) => {
    throw asDestinationError(e, dest, 'nothing was written');
  });
  const tree = sortEntries(items, planned, scan);
  const content = chunkUses(repo, tree.files);
  // The plan's garbage (tree JSON, decoded blobs) goes before the writer threads start: the
  // main thread's heap at the peak of the 30k-file bench restore went 70 -> 59 MiB.
  collectGarbage();
  if (opts.signal?.aborted) throw new InterruptedError(`interrupted - nothing was written to ${dest}`, 'run the command again');

  const root = exists ? planned : await makeRoot(dest).catch((e: unknown) => {
    throw asDestinationError(e, dest, 'nothing was written');
  });
  const names = new PartialNames();
  try {
    // Phase 4: folders, then content.
    const create = await createRules(root, exists);
    for (const { rel } of tree.dirs) {
      const abs = destPath(root, rel);
      if (scan.replace.has(rel)) await replaceByDir(abs, names);
      else await makeDir(abs, scan.existingDirs.has(rel));
    }
    for (const f of tree.files) if (f.remaining === 0) createEmptySync(f, names);
    await writeContent(repo, content, tree.files, create, names, opts);

    // Phase 5: links, symlinks, folder metadata.
    if (opts.signal?.aborted) throw new InterruptedError();
    const limit = pLimit(META_IN_FLIGHT);
    for (const l of tree.links) await makeLink(l, names);
    await settleAll(tree.symlinks.map((s) => limit(() => makeSymlink(s, names))));
    await applyDirMeta(root, tree.dirs, limit);
    // DEST itself gets the backed-up folder's owner, mode and mtime when the restore made it, or
    // may replace what is there; an existing folder restored into without --overwrite keeps its own.
    if (rootMeta && (!exists || opts.overwrite)) await applyDirMeta(root, [{ rel: '', entry: { name: '', type: 'dir', size: 0, ino: '0', ctimeNs: '0', ...rootMeta } }], limit);
  } catch (e) {
    throw folderRestoreError(e, dest, outcomes(tree));
  }
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

/** A hard link or symlink of the restore. */
interface LinkTask extends Outcome {
  abs: string;
  replace: boolean;
}

interface SortedTree {
  dirs: PlanItem[];
  /** Regular files, and hard links whose target this restore does not write (they get their own copy). */
  files: FileTask[];
  links: (LinkTask & { to: string })[];
  symlinks: (LinkTask & { entry: TreeEntry })[];
}

/** The plan's entries by what the restore does with them, files as tasks under `root`. */
function sortEntries(items: PlanItem[], root: string, scan: DestScan): SortedTree {
  const tree: SortedTree = { dirs: [], files: [], links: [], symlinks: [] };
  const byRel = new Map<string, FileTask>();
  const task = (rel: string, entry: TreeEntry): FileTask => ({ rel, abs: destPath(root, rel), entry, replace: scan.replace.has(rel), remaining: entry.content?.length ?? 0, busy: 0 });
  for (const item of items) {
    const { rel, entry } = item;
    if (entry.type === 'dir') tree.dirs.push(item);
    else if (entry.type === 'symlink') tree.symlinks.push({ rel, entry, abs: destPath(root, rel), replace: scan.replace.has(rel) });
    else if (entry.type === 'file') {
      const f = task(rel, entry);
      tree.files.push(f);
      byRel.set(rel, f);
    }
  }
  for (const { rel, entry } of items) {
    if (entry.type !== 'hardlink') continue;
    // Linked only to a file this restore writes itself; otherwise the link gets its own copy.
    if (byRel.has(entry.linkTo as string)) tree.links.push({ rel, abs: destPath(root, rel), to: destPath(root, entry.linkTo as string), replace: scan.replace.has(rel) });
    else tree.files.push(task(rel, entry));
  }
  return tree;
}

function* outcomes(tree: SortedTree): Iterable<Outcome> {
  yield* tree.files;
  yield* tree.links;
  yield* tree.symlinks;
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

async function applyMeta(h: FileHandle, e: TreeEntry): Promise<void> {
  // Owner first: chown clears setuid/setgid, chmod then sets them back.
  await h.chown(e.uid, e.gid).catch(ignoreNotPermitted);
  await h.chmod(e.mode);
  const t = utimeArg(e.mtimeNs);
  await h.utimes(t, t);
}

/** A hard link to a file of this restore; one that replaces an entry is made beside it and renamed over it. */
async function makeLink(l: LinkTask & { to: string }, names: PartialNames): Promise<void> {
  if (!l.replace) await fsp.link(l.to, l.abs);
  else await replaceWith(l.abs, names, (tmp) => fsp.link(l.to, tmp));
  l.done = true;
}

async function makeSymlink(s: LinkTask & { entry: TreeEntry }, names: PartialNames): Promise<void> {
  const make = async (at: string) => {
    await fsp.symlink(s.entry.target as string, at);
    await fsp.lchown(at, s.entry.uid, s.entry.gid).catch(ignoreNotPermitted);
    const t = utimeArg(s.entry.mtimeNs);
    await fsp.lutimes(at, t, t);
  };
  if (!s.replace) {
    // Made with its final name (symlink(2) fails if the name is taken); not left behind half done.
    await make(s.abs).catch(async (e: unknown) => {
      if (errnoCode(e) !== 'EEXIST') await removeIfThere(s.abs);
      throw e;
    });
  } else {
    await replaceWith(s.abs, names, make);
  }
  s.done = true;
}

/** Make the new entry under a temporary name with `make`, then rename it over `abs`; on failure the old one stays. */
async function replaceWith(abs: string, names: PartialNames, make: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = names.of(abs);
  try {
    await make(tmp);
    await fsp.rename(tmp, abs);
    // rename(2) does nothing when both names are links to one file (a hard link made again over itself).
    await removeIfThere(tmp);
  } catch (e) {
    await removeIfThere(tmp).catch(() => undefined);
    throw e;
  }
}

/**
 * A folder where the destination has a file (overwrite): the file is moved aside first and
 * removed only once the folder exists, so a folder that cannot be made leaves it as it was.
 */
async function replaceByDir(abs: string, names: PartialNames): Promise<void> {
  const aside = names.of(abs);
  const moved = await fsp.rename(abs, aside).then(() => true, (e: unknown) => (errnoCode(e) === 'ENOENT' ? false : Promise.reject(e)));
  try {
    await makeDir(abs, false);
  } catch (e) {
    if (moved) await fsp.rename(aside, abs).catch(() => undefined);
    throw e;
  }
  if (moved) await removeIfThere(aside);
}

/** Like Promise.all, but settles every task before throwing the first failure: nothing is still running when it is reported. */
async function settleAll(tasks: Promise<void>[]): Promise<void> {
  const failed = (await Promise.allSettled(tasks)).find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
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
