/**
 * Restore pipelines: read a point's data back (every chunk verified against its hash) into a
 * destination. File-level: a folder, a .zip / .tar / .tar.gz archive, or a stream (dump).
 * VM-level: an image file, or a libvirt VM (a new one, or the original one rewritten in place).
 *
 * Everything that reads a point loads on first call, not with this index: the file restore
 * pulls in archiver and tar-stream (over 100 ms), the VM restore ssh2 (~60 ms), and `drctl ls`,
 * `check` or an image restore should pay for neither.
 */
import { loadOnCall } from '../runtime/lazy.js';

export { normalizeInclude } from './safe-path.js';
export type { PlanItem } from './files-plan.js';
export type { RestoreFilesOptions, RestoreFilesResult } from './files-restore.js';
export type { ImageRestoreOptions, ImageRestoreResult } from './image-restore.js';
export type { NewVmOptions, OriginalVmOptions, VmRestoreResult } from './vm-restore.js';
export type { DumpOptions, DumpResult } from './dump.js';

export const restoreFiles = loadOnCall(() => import('./files-restore.js'), 'restoreFiles');
export const restoreImage = loadOnCall(() => import('./image-restore.js'), 'restoreImage');
export const restoreAsNewVm = loadOnCall(() => import('./vm-restore.js'), 'restoreAsNewVm');
export const restoreToOriginalVm = loadOnCall(() => import('./vm-restore.js'), 'restoreToOriginalVm');

/** `drctl dump`: one file of a file-level point (or a folder, as a tar stream) into a stream. */
export const dumpPath = loadOnCall(() => import('./dump.js'), 'dumpPath');

/** What a file restore of `include` writes, in pre-order; reads only tree blobs. */
export const planRestore = loadOnCall(() => import('./files-plan.js'), 'planRestore');

/** For checkRepository's walkFiles: the paths of a file point that a damaged blob affects. */
export const walkFilesForCheck = loadOnCall(() => import('./files-check.js'), 'walkFilesForCheck');
