/**
 * The file-level half of `drctl check`: which paths of a 'files' point could not be restored
 * given the blobs check found unreadable. A folder whose tree blob is unreadable (or fails
 * validation) is reported once, without descending; a file is reported when any of its
 * chunks is unreadable.
 */
import type { Repository } from '../repo/repository.js';
import type { Point } from '../repo/point.js';
import { readTree } from '../repo/tree.js';

export async function walkFilesForCheck(repo: Repository, point: Point, damaged: (hash: string) => boolean): Promise<string[]> {
  const items: string[] = [];
  if (point.tree) await walk(repo, point.tree, '', damaged, items);
  return items;
}

async function walk(repo: Repository, hash: string, rel: string, damaged: (hash: string) => boolean, items: string[]): Promise<void> {
  const where = `/${rel}`;
  if (damaged(hash)) {
    items.push(`folder ${where} (its listing is unreadable)`);
    return;
  }
  let tree;
  try {
    tree = await readTree(repo, hash, rel);
  } catch (e) {
    items.push(`folder ${where} (${(e as Error).message})`);
    return;
  }
  for (const e of tree.entries) {
    const path = rel ? `${rel}/${e.name}` : e.name;
    if (e.type === 'dir' && e.subtree) await walk(repo, e.subtree, path, damaged, items);
    else if (e.content?.some(damaged)) items.push(`/${path}`);
  }
}
