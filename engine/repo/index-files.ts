/**
 * Replacing the index files with whole new ones for a set of packs: prune's consolidated index
 * (the packs it keeps) and `drctl repair index` (every pack whose header reads). Each file
 * lists ~INDEX_BLOBS_PER_FILE blobs; a file is named by its hash, so writing one that exists
 * already changes nothing. The new files are written before any old one is deleted, so a kill
 * leaves extra index files, never missing ones.
 */
import type { Repository } from './repository.js';
import { Keys } from './format.js';
import { encodeIndexFile, type CompactEntries } from './index-codec.js';
import { BlobNotFoundError } from '../../targets/types.js';

/** A pack as an index file lists it. */
export interface IndexedPack {
  id: string;
  blobs: CompactEntries;
}

/** Blobs per index file written here (4.5 MB of 45-byte entries before zstd). */
const INDEX_BLOBS_PER_FILE = 100_000;

/**
 * Index files listing `packs`, then `oldFiles` deleted (those not written again); the
 * repository's list of index files is the new one. Returns how many index files there are now.
 */
export async function replaceIndexFiles(repo: Repository, oldFiles: string[], packs: IndexedPack[]): Promise<number> {
  const newFiles = await writeIndexFiles(repo, packs);
  for (const id of oldFiles) if (!newFiles.has(id)) await removeIfThere(repo, Keys.index(id));
  repo.index.files.clear();
  for (const id of newFiles) repo.index.files.add(id);
  return newFiles.size;
}

/** Delete an object of the repository; one that is gone already is fine. */
export async function removeIfThere(repo: Repository, key: string): Promise<void> {
  try {
    await repo.target.remove(key);
  } catch (e) {
    if (!(e instanceof BlobNotFoundError)) throw e;
  }
}

/** Index files listing `packs`; returns their ids. */
async function writeIndexFiles(repo: Repository, packs: IndexedPack[]): Promise<Set<string>> {
  const ids = new Set<string>();
  let group: IndexedPack[] = [];
  let blobs = 0;
  const flush = async (): Promise<void> => {
    if (group.length === 0) return;
    const { id, bytes } = await encodeIndexFile(group);
    if (!repo.index.files.has(id)) await repo.target.put(Keys.index(id), bytes, { replace: true });
    ids.add(id);
    group = [];
    blobs = 0;
  };
  for (const p of packs) {
    group.push(p);
    blobs += p.blobs.length;
    if (blobs >= INDEX_BLOBS_PER_FILE) await flush();
  }
  await flush();
  return ids;
}
