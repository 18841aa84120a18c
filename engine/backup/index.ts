/**
 * Backup pipelines: read a source, store its data and metadata through a BlobWriter, commit a
 * recovery point last. File-level: a folder walked into per-directory tree blobs, unchanged
 * files reused from the parent point. VM-level: a disk image, or the disks of a libvirt VM.
 *
 * Each pipeline loads on first call, not with this index: start-up time matters for short
 * incremental runs, and one pipeline should not pay for the others' dependencies (the VM
 * backup loads ssh2, ~60 ms).
 */
import { loadOnCall } from '../runtime/lazy.js';

export type { BackupFolderOptions } from './files-backup.js';
export type { ImageBackupOptions } from './image-backup.js';
export type { VmBackupOptions } from './vm-backup.js';

export const backupFolder = loadOnCall(() => import('./files-backup.js'), 'backupFolder');
export const backupImage = loadOnCall(() => import('./image-backup.js'), 'backupImage');
export const backupVm = loadOnCall(() => import('./vm-backup.js'), 'backupVm');
