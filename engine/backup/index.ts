/**
 * Backup pipelines: read a source, store its data and metadata through a BlobWriter, commit a
 * recovery point last. File-level: a folder walked into per-directory tree blobs, unchanged
 * files reused from the parent point. VM-level: a disk image, or the disks of a libvirt VM.
 *
 * Each pipeline loads on first call, not with this index: start-up time matters for short
 * incremental runs, and one pipeline should not pay for the others' dependencies (the VM
 * backup loads ssh2, ~60 ms).
 */
export type { BackupFolderOptions } from './files-backup.js';
export type { ImageBackupOptions } from './image-backup.js';
export type { VmBackupOptions } from './vm-backup.js';

export async function backupFolder(...a: Parameters<typeof import('./files-backup.js').backupFolder>): ReturnType<typeof import('./files-backup.js').backupFolder> {
  return (await import('./files-backup.js')).backupFolder(...a);
}

export async function backupImage(...a: Parameters<typeof import('./image-backup.js').backupImage>): ReturnType<typeof import('./image-backup.js').backupImage> {
  return (await import('./image-backup.js')).backupImage(...a);
}

export async function backupVm(...a: Parameters<typeof import('./vm-backup.js').backupVm>): ReturnType<typeof import('./vm-backup.js').backupVm> {
  return (await import('./vm-backup.js')).backupVm(...a);
}
