/**
 * Restore pipelines: read a point's data back (every chunk verified against its hash) into a
 * destination. File-level: a folder, or a .zip / .tar / .tar.gz archive.
 */
export { restoreFiles, type RestoreFilesOptions, type RestoreFilesResult } from './files-restore.js';
