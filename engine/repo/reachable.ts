/**
 * Which blobs a point references: for a VM point its chunk-list blobs and every non-zero chunk
 * they name; for a file point every tree blob and every file chunk. Marks go into the index's
 * mark bits (no second set of hashes), and a subtree already marked is not walked again — an
 * unchanged folder shared by a hundred points is read once.
 */
import type { Repository } from './repository.js';
import type { Point } from './point.js';
import { HASH_BYTES } from './codec.js';
import { readTree } from './tree.js';
import { IntegrityError, NOT_INDEXED_HINT } from '../errors.js';

/** Called for each blob this walk marked first (prune uses it to rescue packs it meant to drop). */
export type OnMarked = (hash: string) => void;

export async function markPoint(repo: Repository, point: Point, onMarked: OnMarked = () => undefined): Promise<void> {
  const mark = (hash: string, what: string): boolean => {
    if (!repo.index.has(hash)) {
      throw new IntegrityError(`point ${point.id.slice(0, 12)} (${point.name}, ${point.time}) references ${what} ${hash.slice(0, 12)}, which is not in the index`, { hint: NOT_INDEXED_HINT });
    }
    const first = repo.index.mark(hash);
    if (first) onMarked(hash);
    return first;
  };
  const read = async (hash: string, what: string): Promise<Buffer> => {
    try {
      return await repo.readBlob(hash);
    } catch (e) {
      throw new IntegrityError(`cannot read ${what} ${hash.slice(0, 12)} of point ${point.id.slice(0, 12)} (${point.name}, ${point.time}): ${(e as Error).message}`, { cause: e });
    }
  };
  for (const disk of point.disks ?? []) {
    for (const list of disk.lists) {
      // A list blob marked before was walked before: its chunks are marked too.
      if (!mark(list, 'chunk list')) continue;
      const entries = await read(list, 'chunk list');
      for (let j = 0; j + HASH_BYTES <= entries.length; j += HASH_BYTES) {
        const h = entries.subarray(j, j + HASH_BYTES);
        if (h.every((b) => b === 0)) continue;
        mark(h.toString('hex'), `chunk of ${disk.name} at ${(j / HASH_BYTES) * disk.chunkBytes}`);
      }
    }
  }
  if (point.tree) await markTree(repo, point.tree, '', mark);
}

async function markTree(repo: Repository, hash: string, rel: string, mark: (hash: string, what: string) => boolean): Promise<void> {
  if (!mark(hash, `folder listing /${rel}`)) return;
  let tree;
  try {
    tree = await readTree(repo, hash, rel);
  } catch (e) {
    throw new IntegrityError(`cannot read folder listing /${rel} (${hash.slice(0, 12)}): ${(e as Error).message}`, { cause: e });
  }
  for (const e of tree.entries) {
    const path = rel ? `${rel}/${e.name}` : e.name;
    if (e.type === 'dir' && e.subtree) await markTree(repo, e.subtree, path, mark);
    for (const c of e.content ?? []) mark(c, `chunk of /${path}`);
  }
}
