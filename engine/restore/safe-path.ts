/**
 * Keeping a restore inside its destination. Names from a point are validated when trees are
 * decoded (no '/', '..', NUL, duplicates); this module covers the other half: what already
 * exists in the destination. Nothing here ever follows a symbolic link found in the
 * destination: existing entries are inspected with lstat / readdir types, and a symlink where
 * a folder has to go is refused, whatever `overwrite` says.
 */
import { join, sep } from 'node:path';
import { fsp, makeDirs, type Dirent } from '../runtime/fs.js';
import { DestinationExistsError, UnsafePathError, UsageError, destinationCreateError, errnoCode } from '../errors.js';
import type { TreeEntry } from '../repo/tree.js';

/** Normalize an --include path: '/a//b/' → 'a/b'; '' means the whole point. */
/** The thing in the way is in the destination, not in the point. */
const IN_DEST_HINT = 'it is in the destination, not in the point: move it away, or give --to an empty or new folder';

export function normalizeInclude(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..') || path.includes('\0')) {
    throw new UsageError(`${path} is not a path inside the point`, 'give a path relative to the backed-up folder, e.g. etc/nginx');
  }
  return parts.join('/');
}

/** Absolute destination path of a '/'-separated relative path (already validated). */
export function destPath(root: string, rel: string): string {
  return rel === '' ? root : join(root, ...rel.split('/'));
}

export interface DestItem {
  rel: string;
  entry: TreeEntry;
}

export interface DestScan {
  /** Relative paths (files, links) that exist and will be replaced (overwrite only). */
  replace: Set<string>;
  /** Relative paths of folders that already exist (lstat-checked again when restoring). */
  existingDirs: Set<string>;
}

/**
 * Look at what already exists under `root` for every item (pre-order: a folder before its
 * contents) without writing anything. Throws DestinationExistsError listing the first
 * existing path unless `overwrite`, UnsafePathError for a symlink where a folder goes.
 */
export async function scanDestination(root: string, items: DestItem[], overwrite: boolean): Promise<DestScan> {
  const scan: DestScan = { replace: new Set(), existingDirs: new Set(['']) };
  const listings = new Map<string, Map<string, Dirent> | undefined>([['', await list(root)]]);
  const conflicts: string[] = [];
  for (const { rel, entry } of items) {
    const slash = rel.lastIndexOf('/');
    const parentRel = slash < 0 ? '' : rel.slice(0, slash);
    const name = slash < 0 ? rel : rel.slice(slash + 1);
    const found = listings.get(parentRel)?.get(name);
    if (entry.type === 'dir') {
      if (!found) {
        listings.set(rel, undefined);
      } else if (found.isDirectory()) {
        scan.existingDirs.add(rel);
        listings.set(rel, await list(destPath(root, rel)));
      } else if (found.isSymbolicLink()) {
        throw new UnsafePathError(destPath(root, rel), 'a symbolic link is in the way of a folder (it is never followed or replaced)', IN_DEST_HINT);
      } else {
        conflicts.push(rel);
        scan.replace.add(rel);
        listings.set(rel, undefined);
      }
      continue;
    }
    if (!found) continue;
    if (found.isDirectory()) {
      throw new UsageError(`cannot restore ${destPath(root, rel)} - a folder with that name exists there`,
        'move the folder away, or restore to another --to');
    }
    conflicts.push(rel);
    scan.replace.add(rel);
  }
  if (conflicts.length > 0 && !overwrite) throw new DestinationExistsError(destPath(root, conflicts[0] as string), conflicts.length - 1);
  return scan;
}

async function list(dir: string): Promise<Map<string, Dirent> | undefined> {
  try {
    const ents = await fsp.readdir(dir, { withFileTypes: true });
    return new Map(ents.map((d) => [d.name, d]));
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  }
}

/**
 * Create one folder of the restore. A folder that already existed is lstat-ed again (it may
 * have been swapped for a symlink since the scan). A file in its way is the caller's
 * (files-restore.ts replaceByDir keeps it until the folder exists).
 */
export async function makeDir(abs: string, existed: boolean): Promise<void> {
  if (!existed) {
    try {
      await fsp.mkdir(abs, { mode: 0o700 });
      return;
    } catch (e) {
      if (errnoCode(e) !== 'EEXIST') throw e;
    }
  }
  const st = await fsp.lstat(abs);
  if (!st.isDirectory()) throw new UnsafePathError(abs, st.isSymbolicLink() ? 'a symbolic link appeared in the way of a folder' : 'something other than a folder is in the way', IN_DEST_HINT);
}

/** Create the destination root (and its parents); a symlink given as the root itself is the operator's choice. */
export async function makeRoot(root: string): Promise<string> {
  await makeDirs(root).catch((e: unknown) => {
    throw destinationCreateError(root, e);
  });
  const real = await fsp.realpath(root);
  const st = await fsp.stat(real);
  if (!st.isDirectory()) throw new UsageError(`restore destination ${root} is not a folder`, 'give a folder, or a path ending in .zip, .tar or .tar.gz');
  return real.endsWith(sep) ? real.slice(0, -1) || sep : real;
}
