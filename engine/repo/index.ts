/**
 * The repository: a content-addressed, deduplicating, compressed store on a target volume.
 *
 *   blob   — one chunk of data or one metadata object (tree, chunk list), named by SHA-256
 *            of its plaintext; stored zstd-compressed (or raw when that does not pay).
 *   pack   — ~16 MiB of blobs plus a header listing them, named by the SHA-256 of its bytes.
 *   index  — blob → (pack, offset, length), written after the packs it lists.
 *   point  — a recovery point manifest, written last: the commit of a backup.
 *
 * Write order packs → index → point means a crash leaves only unreferenced data. See FORMAT.md.
 */
import { loadOnCall } from '../runtime/lazy.js';

export { Repository, type RepoDeps } from './repository.js';
export { BlobWriter, type WriteStats } from './blob-writer.js';
export { BlobIndex, type BlobLocation } from './index-store.js';
export { FORMAT_VERSION, LIST_ENTRIES_PER_BLOB, Keys, type RepoConfig } from './format.js';
export { type Point, type PointManifest, type DiskRecord, type ItemError, type PointKind, type VmRecord } from './point.js';
export { type Lock, type LockKind, type LockWait } from './locks.js';
export { HASH_BYTES, hashOwned, hashHex } from './codec.js';
export { readPackHeader } from './pack.js';
export { shutdownCodecPool, startCodecPool } from './codec-pool.js';
export type { TreeEntry } from './tree.js';
export type { CheckReport } from './check.js';
export type { PruneOptions, PruneReport } from './prune.js';
export type { RepairIndexOptions, RepairIndexReport } from './repair.js';

// Check, prune and repair load on first call: most commands load this index, and they would
// add ~7 ms to each.
export const checkRepository = loadOnCall(() => import('./check.js'), 'checkRepository');
export const pruneRepository = loadOnCall(() => import('./prune.js'), 'pruneRepository');
export const repairIndex = loadOnCall(() => import('./repair.js'), 'repairIndex');
