/**
 * What a folder restore that failed or was interrupted says about what it left. Every file
 * left under its final name is complete (content verified, owner, mode and mtime set; see
 * folder-content.ts): the message says how many were not restored, names the first few, and
 * the hint says how to finish: the same restore again with --overwrite replaces what is there.
 */
import {
  DestinationWriteError, IntegrityError, InterruptedError, TargetIoError, asDestinationError, errnoCode, isDrError,
} from '../errors.js';
import { printable } from '../runtime/text.js';

/** An entry of the restore (not a folder) and whether it is complete under its final name. */
export interface Outcome {
  rel: string;
  done?: boolean;
}

/** Paths named in the message; the rest are counted. */
const NAMED = 3;

const FINISH_HINT = 'run the same restore again with --overwrite to finish it - it replaces the files already there';

/** `e` as the error a folder restore to `dest` fails with, saying what of `entries` it left. */
export function folderRestoreError(e: unknown, dest: string, entries: Iterable<Outcome>): unknown {
  const { total, done, missing } = tally(entries);
  const notRestored = `${total - done} ${total - done === 1 ? 'file was' : 'files were'} not restored (${missing.join(', ')}${total - done > missing.length ? ', …' : ''})`;
  if (e instanceof InterruptedError) {
    return new InterruptedError(`interrupted - the restore to ${dest} is incomplete: ${done} of ${total} files restored, ${done < total ? notRestored : 'not every folder got its owner, mode and mtime'}`, FINISH_HINT);
  }
  const left = done < total
    ? `${notRestored}; the files restored so far are left there, complete (${done} of ${total})`
    : `every file was restored, but not every folder got its owner, mode and mtime`;
  // Reading the repository failed: still say what the destination holds.
  if (e instanceof IntegrityError) return new IntegrityError(`${e.message}; ${left}`, { hint: e.hint, cause: e });
  if (e instanceof TargetIoError) return new TargetIoError(`${e.message}; ${left}`, e.hint, { cause: e });
  if (errnoCode(e) === 'EEXIST' && !isDrError(e)) {
    // Created since the destination was scanned, by someone else: the restore creates every name with O_EXCL or link(2).
    const err = e as { dest?: string; path?: string };
    return new DestinationWriteError(
      `cannot write restore destination ${dest} - ${err.dest ?? err.path ?? 'a file'} was created meanwhile by another process (is another restore writing to ${dest}?); ${left}`,
      'wait for the other restore to end, then run this one again with --overwrite, or give --to another folder; the repository is unchanged', { cause: e });
  }
  const d = asDestinationError(e, dest, left);
  if (!(d instanceof DestinationWriteError)) return d;
  return new DestinationWriteError(d.message, `${d.hint ?? ''}; to finish it there, run the same restore again with --overwrite`, { cause: e });
}

function tally(entries: Iterable<Outcome>): { total: number; done: number; missing: string[] } {
  let total = 0;
  let done = 0;
  const missing: string[] = [];
  for (const o of entries) {
    total++;
    if (o.done) done++;
    else if (missing.length < NAMED) missing.push(printable(o.rel));
  }
  return { total, done, missing };
}
