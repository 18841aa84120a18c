/**
 * Owner, mode and mtime of a restored file, set on its open descriptor: by the main thread
 * (files written chunk by chunk) and by the writer threads (small files created whole).
 */
import { fchownSync, fchmodSync, futimesSync } from '../runtime/fs.js';
import { errnoCode } from '../errors.js';

export interface FileMeta {
  uid: number;
  gid: number;
  /** Permission bits incl. setuid/setgid/sticky. */
  mode: number;
  /** Seconds since the epoch as utimeArg() gives them. */
  mtime: string;
}

/**
 * A point's mtime (ns since the epoch) as a time for utimes/futimes/lutimes: a numeric string
 * of seconds, which Node passes on as it is. A number below 0 (before 1970) Node would take as
 * "now", and a Date would keep only milliseconds. Precision ends at the double Node converts to
 * (~0.1 µs today); nanoseconds are not kept.
 */
export function utimeArg(ns: string): string {
  const n = BigInt(ns);
  const abs = n < 0n ? -n : n;
  return `${n < 0n ? '-' : ''}${abs / 1_000_000_000n}.${(abs % 1_000_000_000n).toString().padStart(9, '0')}`;
}

/** A chown refused because we are not root: files end up owned by whoever restores, as with tar and restic. */
export function ignoreNotPermitted(e: unknown): void {
  if (errnoCode(e) !== 'EPERM' && errnoCode(e) !== 'EINVAL') throw e;
}

/**
 * Owner first (chown clears setuid/setgid, chmod then sets them back), then mode and mtime.
 * `given`: what creating the file already set, so that call is skipped.
 */
export function setMetaSync(fd: number, m: FileMeta, given: { owner?: boolean; mode?: boolean } = {}): void {
  if (!given.owner) {
    try {
      fchownSync(fd, m.uid, m.gid);
    } catch (e) {
      ignoreNotPermitted(e);
    }
  }
  if (!given.mode) fchmodSync(fd, m.mode);
  futimesSync(fd, m.mtime, m.mtime);
}
