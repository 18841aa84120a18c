/**
 * Backup pipelines: read a source, store its data and metadata through a BlobWriter, commit a
 * recovery point last. File-level: a folder walked into per-directory tree blobs, unchanged
 * files reused from the parent point.
 */
export { backupFolder, type BackupFolderOptions } from './files-backup.js';
