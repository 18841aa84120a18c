/**
 * `drctl dump`: one path of a file-level point written to a stream (standard output) without
 * restoring it to disk: a regular file as its bytes, a folder as a tar stream (the entries a
 * `restore --include PATH --to x.tar` writes). The content comes through the same read path
 * as an archive restore (archive-content.ts): every chunk located before the first byte is
 * written, fetched a bounded window ahead, verified against its hash, and written with
 * backpressure, so memory does not grow with the file.
 *
 * Unlike an archive restore nothing can be taken back: a failure part-way leaves the reader
 * with part of the data, and the error says so.
 */
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Repository } from '../repo/repository.js';
import type { Point } from '../repo/point.js';
import { IntegrityError, InterruptedError, TargetIoError, UsageError } from '../errors.js';
import { printable } from '../runtime/text.js';
import { planRestore, type PlanItem } from './files-plan.js';
import { normalizeInclude } from './safe-path.js';
import { archiveContent, classify } from './archive-content.js';
import { writeTar } from './tar-writer.js';

export interface DumpOptions {
  /** Write a tar stream (required for a folder; a file then goes into a one-file tar). */
  archive?: 'tar';
  signal?: AbortSignal;
}

export interface DumpResult {
  /** What was written: a file's bytes or a tar stream. */
  kind: 'file' | 'tar';
  /** Bytes of file content written (without tar headers). */
  bytes: number;
}

/**
 * Write PATH of `point` into `out`, which is ended when done. Usage errors (a VM-level point,
 * no such path, a symlink, a folder without `archive`) are thrown before anything is written,
 * and so is a chunk missing from the index.
 */
export async function dumpPath(repo: Repository, point: Point, path: string, out: Writable, opts: DumpOptions = {}): Promise<DumpResult> {
  const id = point.id.slice(0, 12);
  if (point.kind !== 'files') {
    throw new UsageError(`point ${id} is a VM-level point: it holds disks, not files`, 'restore a disk with `drctl restore POINT --to FILE`, then mount it');
  }
  const rel = normalizeInclude(path);
  const shown = rel === '' ? `point ${id}` : `${printable(rel)} in point ${id}`;
  const planned = await planRestore(repo, point, rel === '' ? [] : [path]);
  const target = rel === '' ? undefined : planned.find((i) => i.rel === rel);
  if (target?.entry.type === 'symlink') {
    throw new UsageError(`${shown} is a symlink to ${printable(target.entry.target ?? '')}: there is no file content to write`, 'dump the path it points to, if that is in the point');
  }
  const isFile = target !== undefined && target.entry.type !== 'dir';
  if (!isFile && opts.archive !== 'tar') {
    throw new UsageError(`${shown} is a folder: add --archive tar to write it as a tar stream`, 'or restore it with `drctl restore POINT --include PATH --to DIR`');
  }
  if (opts.archive === 'tar') {
    const kinds = classify(planned, 'tar');
    const { content, totalBytes, stop } = archiveContent(repo, planned, kinds, { signal: opts.signal });
    await writeTar(out, planned, kinds, content, false).catch(async (e: unknown) => {
      await stop();
      throw failed(e, shown, opts.signal);
    });
    return { kind: 'tar', bytes: totalBytes };
  }
  // A regular file, or a hard link (which carries its content like the file it shares it with).
  const file = target as PlanItem;
  const { content, totalBytes, stop } = archiveContent(repo, [file], ['data'], { signal: opts.signal });
  await pipeline(Readable.from(content(file.entry, file.rel), { objectMode: false }), out).catch(async (e: unknown) => {
    await stop();
    throw failed(e, shown, opts.signal);
  });
  return { kind: 'file', bytes: totalBytes };
}

/** A failure part-way: what the reader got is incomplete. Damaged data keeps its class and hint. */
function failed(e: unknown, shown: string, signal: AbortSignal | undefined): unknown {
  const outcome = `; the output of ${shown} is incomplete`;
  if (e instanceof InterruptedError || signal?.aborted) return new InterruptedError(`interrupted - the output of ${shown} is incomplete`, 'run the command again; the repository is unchanged');
  if (e instanceof IntegrityError) return new IntegrityError(e.message + outcome, { cause: e, hint: e.hint });
  if (e instanceof TargetIoError) return new TargetIoError(e.message + outcome, e.hint, { cause: e });
  return e;
}
