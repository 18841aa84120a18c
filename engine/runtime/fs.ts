/**
 * The engine's only door to the local filesystem (lint-style rule from STYLE.md: engine code
 * imports fs from here), plus the few helpers writers need.
 */
import { promises as fsp, constants } from 'node:fs';

export { fsp, constants };

/**
 * How a backup opens a source file. O_NOFOLLOW: a file swapped for a symlink since lstat is
 * not followed. O_NONBLOCK: a file swapped for a FIFO does not block the open (no effect on
 * regular files).
 */
export const SOURCE_OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
export type { FileHandle } from 'node:fs/promises';
export type { Stats, BigIntStats, Dirent } from 'node:fs';

/** fsync a directory so a rename inside it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const h = await fsp.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * Synchronous calls, for small page-cached files on hot paths only (file-level backup and
 * restore of many small files). Measured on a 2-vCPU VM: each libuv pool round trip costs
 * 50–100 µs of thread wake-ups, so open/read/close of a 16 KiB file takes ~80 µs through
 * fs.promises and ~15 µs synchronously. Callers bound how long they block the event loop.
 */
export {
  openSync, readSync, writeSync, closeSync, fchownSync, fchmodSync, futimesSync, ftruncateSync, fstatSync, lstatSync, unlinkSync,
} from 'node:fs';

