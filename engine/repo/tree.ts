/**
 * Tree objects of file-level points: one JSON blob per directory, `{ "v": 1, "entries": [...] }`
 * with entries sorted by name (JS string order) and a fixed key order, so an unchanged
 * directory encodes to the same bytes and dedups.
 *
 * Metadata is what a restore needs (type, permission bits incl. setuid/setgid/sticky, owner,
 * mtime in ns) plus what change detection compares against the next backup (size, inode,
 * ctime). Hard links are stored once: the first path seen is a 'file', later paths are
 * 'hardlink' entries naming it (`linkTo`, relative to the backup root) and repeating its
 * `content`, so a restore of only the link still has the data.
 *
 * Names come from the repository, which may be damaged or crafted: decoding refuses a name
 * that could leave the directory ('', '.', '..', '/', NUL) or repeats in one directory.
 */
import type { Repository } from './repository.js';
import { IntegrityError, UnsafePathError } from '../errors.js';
import { isBlobHash } from './format.js';

export type TreeEntryType = 'file' | 'dir' | 'symlink' | 'hardlink';

export interface TreeEntry {
  name: string;
  type: TreeEntryType;
  /** Permission bits incl. setuid/setgid/sticky (st_mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Nanoseconds since the epoch, as a decimal string (lstat bigint). */
  mtimeNs: string;
  /** Bytes of content (files and hard links); 0 otherwise. */
  size: number;
  /** Inode number and ctime (ns) at backup time, for change detection only. */
  ino: string;
  ctimeNs: string;
  /** Chunk hashes, in order (files and hard links). */
  content?: string[];
  /** Tree hash of a directory. */
  subtree?: string;
  /** Symlink target, stored as is (may be absolute; restores never follow it). */
  target?: string;
  /** Hard link: '/'-separated path, relative to the backup root, of the first occurrence. */
  linkTo?: string;
}

export interface Tree {
  v: 1;
  entries: TreeEntry[];
}

const TYPES = new Set<string>(['file', 'dir', 'symlink', 'hardlink']);

/** Throws UnsafePathError unless `name` is one plain path component. */
export function validateName(name: unknown, where: string): string {
  if (typeof name !== 'string' || name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new UnsafePathError(`${where}/${String(name)}`, 'the name is not a plain file name');
  }
  return name;
}

/** Throws UnsafePathError unless `rel` is a relative '/'-separated path of plain names. */
export function validateRelPath(rel: unknown, where: string): string {
  if (typeof rel !== 'string' || rel === '') throw new UnsafePathError(`${where}`, 'an empty link path');
  for (const part of rel.split('/')) validateName(part, where);
  return rel;
}

/** Canonical bytes of a tree: entries sorted, keys in a fixed order. */
export function encodeTree(entries: TreeEntry[]): Buffer {
  const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const out = sorted.map((e) => {
    const o: TreeEntry = {
      name: e.name, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid,
      mtimeNs: e.mtimeNs, size: e.size, ino: e.ino, ctimeNs: e.ctimeNs,
    };
    if (e.content !== undefined) o.content = e.content;
    if (e.subtree !== undefined) o.subtree = e.subtree;
    if (e.target !== undefined) o.target = e.target;
    if (e.linkTo !== undefined) o.linkTo = e.linkTo;
    return o;
  });
  return Buffer.from(JSON.stringify({ v: 1, entries: out } satisfies Tree));
}

/** Parse and validate a tree blob; `path` ('' for the root) is only used in messages. */
export function decodeTree(raw: Buffer, hash: string, path: string): Tree {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw new IntegrityError(`tree ${hash.slice(0, 12)} (${path || '/'}) is not valid JSON`, { cause: e });
  }
  const t = parsed as Partial<Tree> | null;
  if (!t || t.v !== 1 || !Array.isArray(t.entries)) throw new IntegrityError(`tree ${hash.slice(0, 12)} (${path || '/'}) is not a drctl v1 tree`);
  const seen = new Set<string>();
  const where = path ? `/${path}` : '';
  for (const e of t.entries as unknown[]) {
    const x = e as Partial<TreeEntry> | null;
    if (!x || typeof x !== 'object') throw bad(hash, path, 'an entry is not an object');
    const name = validateName(x.name, where);
    if (seen.has(name)) throw new UnsafePathError(`${where}/${name}`, 'the name appears twice in one directory');
    seen.add(name);
    if (typeof x.type !== 'string' || !TYPES.has(x.type)) throw bad(hash, path, `${name} has an unknown type`);
    if (!isUint(x.mode) || !isUint(x.uid) || !isUint(x.gid) || !isUint(x.size) || typeof x.mtimeNs !== 'string' || !/^-?\d+$/.test(x.mtimeNs)) {
      throw bad(hash, path, `${name} has malformed metadata`);
    }
    if ((x.type === 'file' || x.type === 'hardlink') && !isHashList(x.content)) throw bad(hash, path, `${name} has no chunk list`);
    if (x.type === 'dir' && !isBlobHash(x.subtree)) throw bad(hash, path, `${name} has no subtree`);
    if (x.type === 'symlink' && (typeof x.target !== 'string' || x.target === '' || x.target.includes('\0'))) {
      throw new UnsafePathError(`${where}/${name}`, 'the symbolic link target is empty or holds a NUL byte');
    }
    if (x.type === 'hardlink') validateRelPath(x.linkTo, `${where}/${name}`);
  }
  return t as Tree;
}

function bad(hash: string, path: string, why: string): IntegrityError {
  return new IntegrityError(`tree ${hash.slice(0, 12)} (${path || '/'}) is malformed - ${why}`);
}

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function isHashList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every(isBlobHash);
}

/** Read, verify and validate one tree blob. */
export async function readTree(repo: Repository, hash: string, path = ''): Promise<Tree> {
  return decodeTree(await repo.readBlob(hash), hash, path);
}

/**
 * Depth-first walk of a point's trees. Yields `{ path, treeHash }` for each tree blob visited
 * (path of its directory, '' for the root) and `{ path, entry }` for each entry (path relative
 * to the root, '/'-separated). Throws IntegrityError / UnsafePathError on a damaged tree.
 */
export async function* walkTree(repo: Repository, root: string, prefix = ''): AsyncIterable<{ path: string; entry?: TreeEntry; treeHash?: string }> {
  yield { path: prefix, treeHash: root };
  const tree = await readTree(repo, root, prefix);
  for (const entry of tree.entries) {
    const path = prefix ? `${prefix}/${entry.name}` : entry.name;
    yield { path, entry };
    if (entry.type === 'dir' && entry.subtree) yield* walkTree(repo, entry.subtree, path);
  }
}
