/**
 * The engine's only door to the local filesystem (lint-style rule from STYLE.md: engine code
 * imports fs from here), plus the few helpers writers need.
 */
import { promises as fsp, constants, readSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export { fsp, constants };

/**
 * How a backup opens a source file. O_NOFOLLOW: a file swapped for a symlink since lstat is
 * not followed. O_NONBLOCK: a file swapped for a FIFO does not block the open (no effect on
 * regular files).
 */
export const SOURCE_OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
export type { FileHandle } from 'node:fs/promises';
export type { Stats, BigIntStats, Dirent } from 'node:fs';

/**
 * The most one write system call carries. On this project's 2-vCPU VMs (Linux 6.18, ext4 with
 * large folios, free page reporting to the host) filling fresh page-cache pages is what a big
 * write costs, and it depends on the state of free memory: writing 737 MiB to a new file took
 * 0.11 s of system time in 1 MiB writes and 0.5–2.2 s in 2, 4, 8 or 16 MiB writes in one state,
 * 0.11 vs 0.20 s in another, and ~1 s for every size in a third (`dd bs=…`). 1 MiB pieces were
 * never slower. An image backup that wrote its 16 MiB packs in one writev spent 1.2 s more
 * system time than with 1 MiB pieces (2.7–3.0 vs 1.5 s, wall 4.6–4.9 vs 4.0–4.5 s).
 */
export const WRITE_PIECE_BYTES = 1 << 20;

/** Write `length` bytes of `buf` from `offset` at file position `position`, in pieces of at most WRITE_PIECE_BYTES. */
export function writeFullSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): void {
  for (let done = 0; done < length;) {
    done += writeSync(fd, buf, offset + done, Math.min(length - done, WRITE_PIECE_BYTES), position + done);
  }
}

/**
 * Read `length` bytes at file position `position` into `buf` from `offset`, going on after
 * short reads; stops early only at the end of the file. Returns the bytes read.
 */
export function readFullSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number {
  let n = 0;
  while (n < length) {
    const got = readSync(fd, buf, offset + n, length - n, position + n);
    if (got === 0) break;
    n += got;
  }
  return n;
}

/**
 * `mkdir -p`: the missing folders of `path`, from the nearest one that exists down. Not Node's
 * `mkdir(path, { recursive: true })`, which never returns where a parent exists but creating
 * the child fails with ENOENT (a path in /proc or /sys: `drctl init --repo /proc/x` and a
 * restore to /proc/x spun forever). Errors are those of the mkdir that failed, naming its folder.
 */
export async function makeDirs(path: string, mode?: number): Promise<void> {
  const missing: string[] = [];
  for (let dir = resolve(path); ; dir = dirname(dir)) {
    const st = await fsp.stat(dir).catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
    if (st) break; // not a folder: the mkdir below it fails with ENOTDIR
    missing.push(dir);
    if (dirname(dir) === dir) break;
  }
  for (const dir of missing.reverse()) {
    // EEXIST: made meanwhile by someone else, or a dangling symlink (the next mkdir says ENOENT).
    await fsp.mkdir(dir, mode === undefined ? undefined : { mode }).catch((e: NodeJS.ErrnoException) => (e.code === 'EEXIST' ? undefined : Promise.reject(e)));
  }
}

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
  linkSync, renameSync,
} from 'node:fs';

