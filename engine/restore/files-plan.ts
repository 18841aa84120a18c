/**
 * What a file restore will write: the entries of a point selected by --include, in pre-order
 * (a folder before its contents, names sorted), with the folders leading to an included path.
 * Building the plan reads only tree blobs, so an unknown --include or a damaged / unsafe tree
 * is reported before anything is written.
 */
import type { Repository } from '../repo/repository.js';
import type { Point } from '../repo/point.js';
import { readTree, type Tree, type TreeEntry } from '../repo/tree.js';
import { UsageError } from '../errors.js';
import { normalizeInclude } from './safe-path.js';

export interface PlanItem {
  /** '/'-separated path relative to the point's root. */
  rel: string;
  entry: TreeEntry;
}

/** Subtrees fetched ahead of the walk: tree reads are small and latency-bound. */
const TREE_PREFETCH = 16;

/** A selection trie over path components; `all` marks an included subtree. */
interface Sel {
  all: boolean;
  children: Map<string, Sel>;
}

export async function planRestore(repo: Repository, point: Point, include: string[] = []): Promise<PlanItem[]> {
  if (point.kind !== 'files' || !point.tree) {
    throw new UsageError(`point ${point.id.slice(0, 12)} is a ${point.kind}-level point without a file tree`, 'restore it as a disk image, or pick a file-level point');
  }
  const sel: Sel = { all: include.length === 0, children: new Map() };
  const wanted = include.map((raw) => ({ raw, path: normalizeInclude(raw) }));
  for (const w of wanted) {
    let node = sel;
    if (w.path === '') node.all = true;
    else {
      for (const part of w.path.split('/')) {
        let next = node.children.get(part);
        if (!next) node.children.set(part, (next = { all: false, children: new Map() }));
        node = next;
      }
      node.all = true;
    }
  }
  const trees = new TreeCache(repo);
  const out: PlanItem[] = [];
  await walk(trees, point.tree, '', sel, out);
  const restored = new Set(wanted.length ? out.map((i) => i.rel) : []);
  const missing = wanted.filter((w) => w.path !== '' && !restored.has(w.path));
  if (missing.length > 0) {
    throw new UsageError(`${missing.map((m) => m.raw).join(', ')}: no such path in point ${point.id.slice(0, 12)}`,
      'paths are relative to the backed-up folder; list them with `drctl ls POINT`');
  }
  return out;
}

async function walk(trees: TreeCache, hash: string, rel: string, sel: Sel, out: PlanItem[]): Promise<void> {
  const tree = await trees.get(hash, rel);
  for (const e of tree.entries) {
    if (e.type === 'dir' && (sel.all || sel.children.has(e.name))) trees.prefetch(e.subtree as string, rel ? `${rel}/${e.name}` : e.name);
  }
  for (const entry of tree.entries) {
    const child = sel.all ? sel : sel.children.get(entry.name);
    if (!child) continue;
    const path = rel ? `${rel}/${entry.name}` : entry.name;
    out.push({ rel: path, entry });
    // --include a/b/c where a/b is a file: c stays unmatched and is reported.
    if (entry.type === 'dir') await walk(trees, entry.subtree as string, path, child, out);
  }
}

class TreeCache {
  private readonly pending = new Map<string, Promise<Tree>>();
  private active = 0;
  private readonly queue: (() => void)[] = [];

  constructor(private readonly repo: Repository) {}

  prefetch(hash: string, rel: string): void {
    if (this.pending.has(hash)) return;
    const p = this.load(hash, rel);
    p.catch(() => undefined); // reported by get()
    this.pending.set(hash, p);
  }

  async get(hash: string, rel: string): Promise<Tree> {
    const p = this.pending.get(hash) ?? this.load(hash, rel);
    this.pending.delete(hash);
    return p;
  }

  private async load(hash: string, rel: string): Promise<Tree> {
    if (this.active < TREE_PREFETCH) this.active++;
    else await new Promise<void>((r) => this.queue.push(r)); // the slot is handed over as is
    try {
      return await readTree(this.repo, hash, rel);
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.active--;
    }
  }
}
