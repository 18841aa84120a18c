/**
 * The file content of a streamed restore (an archive, `drctl dump`), in the order it is
 * written: every chunk located first (a missing one fails before anything is written), then
 * fetched and verified (readBlobs) in groups of consecutive chunks a bounded window ahead of
 * the writer, so memory stays at about GROUPS_AHEAD × GROUP_BYTES whatever the file sizes.
 */
import type { Repository } from '../repo/repository.js';
import type { TreeEntry } from '../repo/tree.js';
import type { BlobLocation } from '../repo/index-store.js';
import type { ProgressFn } from '../progress.js';
import { InterruptedError } from '../errors.js';
import type { PlanItem } from './files-plan.js';
import { locateBlobs, readBlobs } from './pack-fetch.js';

/** How an item goes into an archive. */
export type Kind = 'dir' | 'symlink' | 'link' | 'data';

/** The content of one 'data' item; called once per such item, in archive order. */
export type Content = (e: TreeEntry, rel: string) => AsyncIterable<Buffer>;

export interface ArchiveContent {
  content: Content;
  located: Map<string, BlobLocation>;
  /** Bytes of the 'data' items. */
  totalBytes: number;
  /** Stops the read-ahead (after a failure); never throws. */
  stop(): Promise<void>;
}

/** Chunks are fetched in groups of consecutive chunks (few ranged reads), a few groups ahead. */
const GROUP_CHUNKS = 256;
const GROUP_BYTES = 16 << 20;
const GROUPS_AHEAD = 4;

/** How each item goes into an archive of `format`: a hard link is a link entry only in tar, once its file is in. */
export function classify(items: PlanItem[], format: 'zip' | 'tar' | 'tgz'): Kind[] {
  const files = new Set<string>();
  return items.map(({ rel, entry }) => {
    if (entry.type === 'dir') return 'dir';
    if (entry.type === 'symlink') return 'symlink';
    if (entry.type === 'hardlink' && format !== 'zip' && files.has(entry.linkTo as string)) return 'link';
    if (entry.type === 'file') files.add(rel);
    return 'data';
  });
}

/** The content of the 'data' items of `items`, to be consumed in item order. */
export function archiveContent(repo: Repository, items: PlanItem[], kinds: Kind[], opts: { signal?: AbortSignal; onProgress?: ProgressFn } = {}): ArchiveContent {
  const hashes = items.flatMap((it, i) => (kinds[i] === 'data' ? it.entry.content ?? [] : []));
  const located = locateBlobs(repo, hashes);
  const totalBytes = items.reduce((n, it, i) => n + (kinds[i] === 'data' ? it.entry.size : 0), 0);
  const fetched = prefetch(groups(hashes, located), async (g) => ({ g, blobs: await readBlobs(repo, g, located) }), GROUPS_AHEAD);
  const chunks = inOrder(fetched)[Symbol.asyncIterator]();
  let doneBytes = 0;
  let reported = 0;
  const content = async function* (e: TreeEntry, rel: string): AsyncIterable<Buffer> {
    for (let i = 0; i < (e.content?.length ?? 0); i++) {
      if (opts.signal?.aborted) throw new InterruptedError();
      const next = await chunks.next();
      if (next.done) throw new Error('internal: chunk stream ended early');
      doneBytes += next.value.length;
      if (opts.onProgress && doneBytes - reported >= 4 << 20) {
        reported = doneBytes;
        opts.onProgress({ phase: 'restore', doneBytes, totalBytes, item: rel });
      }
      yield next.value;
    }
  };
  return {
    content,
    located,
    totalBytes,
    stop: async () => {
      await chunks.return?.().catch(() => undefined);
    },
  };
}

/** Consecutive runs of chunk hashes, bounded in count and bytes. */
function groups(hashes: string[], located: Map<string, BlobLocation>): string[][] {
  const out: string[][] = [];
  let cur: string[] = [];
  let bytes = 0;
  for (const h of hashes) {
    const n = located.get(h)!.rawLength;
    if (cur.length > 0 && (cur.length >= GROUP_CHUNKS || bytes + n > GROUP_BYTES)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(h);
    bytes += n;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/** The chunks of each group, in the group's order (a chunk may repeat). */
async function* inOrder(fetched: AsyncIterable<{ g: string[]; blobs: Map<string, Buffer> }>): AsyncIterable<Buffer> {
  for await (const { g, blobs } of fetched) for (const h of g) yield blobs.get(h)!;
}

/** Map `items` through `fn` with up to `limit` in flight, yielding results in input order. */
async function* prefetch<T, R>(items: T[], fn: (t: T) => Promise<R>, limit: number): AsyncIterable<R> {
  const queue: Promise<R>[] = [];
  let next = 0;
  const fill = () => {
    while (queue.length < limit && next < items.length) {
      const p = fn(items[next++] as T);
      p.catch(() => undefined); // rethrown when its turn comes
      queue.push(p);
    }
  };
  fill();
  while (queue.length > 0) {
    const r = await (queue.shift() as Promise<R>);
    fill();
    yield r;
  }
}
