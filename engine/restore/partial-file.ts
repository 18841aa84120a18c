/**
 * Giving a restored file its name only once it is complete. A file written for a while (in
 * several chunks, or large), and every file that replaces an existing one, is written under a
 * temporary name beside its final one, `.NAME.drctl-partial-RUN`, and renamed (or linked) to
 * NAME after its last byte and its metadata: a failed or interrupted restore removes it, and
 * one killed with `kill -9` leaves it under that name, never as a file that looks restored.
 * Used by the main thread and the writer threads, synchronously.
 */
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { linkSync, lstatSync, renameSync, unlinkSync } from '../runtime/fs.js';
import { errnoCode } from '../errors.js';

/** What every temporary name contains: `find DEST -name '.*.drctl-partial-*'` lists what a killed restore left. */
export const PARTIAL_MARK = '.drctl-partial-';

/** Names longer than this (in bytes) are cut in their temporary name, which must stay within NAME_MAX (255). */
const MAX_KEPT_NAME_BYTES = 200;

/** Temporary names of one restore run: its own random tag, so two runs never share one. */
export class PartialNames {
  private readonly run = randomBytes(3).toString('hex');
  private seq = 0;

  /** The temporary name for the final path `abs`. */
  of(abs: string): string {
    const name = basename(abs);
    const kept = Buffer.byteLength(name) <= MAX_KEPT_NAME_BYTES
      ? name
      // Cut names of one folder could be equal: the number keeps them apart.
      : `${Buffer.from(name).subarray(0, MAX_KEPT_NAME_BYTES).toString()}~${++this.seq}`;
    return join(dirname(abs), `.${kept}${PARTIAL_MARK}${this.run}`);
  }
}

/** Errors of link(2) on file systems without hard links (vfat, exFAT, some FUSE and network mounts). */
const NO_HARD_LINKS = new Set(['EPERM', 'EOPNOTSUPP', 'ENOTSUP', 'ENOSYS']);

/**
 * Give the complete file `tmp` its final name. `replace`: something is there to be replaced
 * (rename(2) swaps it in one step: the old file stays whole until then). Otherwise nothing may
 * be there: link(2) fails with EEXIST when something appeared since the destination was
 * scanned (another restore writing to the same folder), where rename(2) would replace it.
 */
export function publishSync(tmp: string, final: string, replace: boolean): void {
  if (replace) {
    renameSync(tmp, final);
    return;
  }
  try {
    linkSync(tmp, final);
  } catch (e) {
    if (!NO_HARD_LINKS.has(errnoCode(e) ?? '')) throw e;
    // No hard links here: check, then rename (something made between the two would be replaced).
    if (lstatSync(final, { throwIfNoEntry: false })) {
      throw Object.assign(new Error(`EEXIST: file already exists, rename '${tmp}' -> '${final}'`), { code: 'EEXIST', path: tmp, dest: final });
    }
    renameSync(tmp, final);
    return;
  }
  unlinkSync(tmp);
}

/** Remove a file this restore created and did not finish; a failure to do so must not hide the error that brought us here. */
export function removeQuietSync(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // ENOENT: never created, or already gone. Anything else (EIO): the error reported is the one that brought us here.
  }
}
