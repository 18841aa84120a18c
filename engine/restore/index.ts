/**
 * Restore pipelines: read a point's data back (every chunk verified against its hash) into a
 * destination. File-level: a folder, or a .zip / .tar / .tar.gz archive. VM-level: an image
 * file, or a libvirt VM (a new one, or the original one rewritten in place).
 *
 * Everything that reads a point loads on first call, not with this index: the file restore
 * pulls in archiver and tar-stream (over 100 ms), the VM restore ssh2 (~60 ms), and `drctl ls`,
 * `check` or an image restore should pay for neither.
 */
export { normalizeInclude } from './safe-path.js';
export type { PlanItem } from './files-plan.js';
export type { RestoreFilesOptions, RestoreFilesResult } from './files-restore.js';
export type { ImageRestoreOptions, ImageRestoreResult } from './image-restore.js';
export type { NewVmOptions, OriginalVmOptions, VmRestoreResult } from './vm-restore.js';

export async function restoreFiles(...a: Parameters<typeof import('./files-restore.js').restoreFiles>): ReturnType<typeof import('./files-restore.js').restoreFiles> {
  return (await import('./files-restore.js')).restoreFiles(...a);
}

export async function restoreImage(...a: Parameters<typeof import('./image-restore.js').restoreImage>): ReturnType<typeof import('./image-restore.js').restoreImage> {
  return (await import('./image-restore.js')).restoreImage(...a);
}

export async function restoreAsNewVm(...a: Parameters<typeof import('./vm-restore.js').restoreAsNewVm>): ReturnType<typeof import('./vm-restore.js').restoreAsNewVm> {
  return (await import('./vm-restore.js')).restoreAsNewVm(...a);
}

export async function restoreToOriginalVm(...a: Parameters<typeof import('./vm-restore.js').restoreToOriginalVm>): ReturnType<typeof import('./vm-restore.js').restoreToOriginalVm> {
  return (await import('./vm-restore.js')).restoreToOriginalVm(...a);
}

/** What a file restore of `include` writes, in pre-order; reads only tree blobs. */
export async function planRestore(...a: Parameters<typeof import('./files-plan.js').planRestore>): ReturnType<typeof import('./files-plan.js').planRestore> {
  return (await import('./files-plan.js')).planRestore(...a);
}

/** For checkRepository's walkFiles: the paths of a file point that a damaged blob affects. */
export async function walkFilesForCheck(...a: Parameters<typeof import('./files-check.js').walkFilesForCheck>): ReturnType<typeof import('./files-check.js').walkFilesForCheck> {
  return (await import('./files-check.js')).walkFilesForCheck(...a);
}
