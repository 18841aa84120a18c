/**
 * Restore a file-level point into one archive: .zip (archiver), .tar (tar-stream) or
 * .tar.gz / .tgz (tar-stream + gzip). Entries are written in plan order (a folder before
 * its contents) with names relative to the point's root, their mode and mtime; symlinks are
 * symlink entries; in tar, a hard link to a file already in the archive is a link entry.
 *
 * Streaming: chunks are fetched (and verified) a bounded window ahead of the writer, in
 * archive order, and flow through with backpressure; the archive is written to a temporary
 * name next to the destination and renamed into place only when complete.
 *
 * Failing or interrupted (Ctrl-C, SIGTERM, a damaged chunk, a full volume): every error ends up
 * in one place, which removes the temporary archive and rethrows. No error may reach a stream
 * without an 'error' listener or a promise nobody awaits: Node would end the process with a
 * stack trace and leave the temporary file behind. Only a kill -9 or a power cut leaves one;
 * the next restore to the same destination names it.
 */
import { once } from 'node:events';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ZipArchive } from 'archiver';
import { fsp, makeDirs, type FileHandle } from '../runtime/fs.js';
import type { Repository } from '../repo/repository.js';
import type { TreeEntry } from '../repo/tree.js';
import { DestinationExistsError, IntegrityError, InterruptedError, TargetIoError, UsageError, asDestinationError, destinationCreateError, errnoCode } from '../errors.js';
import type { PlanItem } from './files-plan.js';
import { Codec } from '../repo/codec.js';
import type { RestoreFilesOptions, RestoreFilesResult } from './files-restore.js';
import { archiveContent, classify, type Content, type Kind } from './archive-content.js';
import { writeTar } from './tar-writer.js';

export type ArchiveFormat = 'zip' | 'tar' | 'tgz';

export interface ArchiveRestoreOptions extends RestoreFilesOptions {
  /** A note for the operator, one line (stderr): a partial archive left by an earlier restore. */
  warn?: (line: string) => void;
}

/** The temporary name an archive is written to: DEST.partial-<12 hex digits>. */
const PARTIAL_SUFFIX = /\.partial-[0-9a-f]{12}$/;

const WRITE_BYTES = 1 << 20;

export function archiveFormat(dest: string): ArchiveFormat | undefined {
  if (dest.endsWith('/')) return undefined;
  const d = dest.toLowerCase();
  if (d.endsWith('.zip')) return 'zip';
  if (d.endsWith('.tar.gz') || d.endsWith('.tgz')) return 'tgz';
  if (d.endsWith('.tar')) return 'tar';
  const other = /(\.tar\.[a-z0-9]+|\.tbz2?|\.txz|\.tzst|\.7z|\.rar)$/.exec(d);
  if (other) {
    throw new UsageError(`restore destination ${dest} names a ${other[1]} archive, which drctl does not write`,
      'end --to in .tar, .tar.gz, .tgz or .zip for an archive, or in / for a folder of that name');
  }
  return undefined;
}

export async function restoreArchive(repo: Repository, planned: PlanItem[], dest: string, format: ArchiveFormat, opts: ArchiveRestoreOptions): Promise<Omit<RestoreFilesResult, 'durationMs'>> {
  const existing = await fsp.lstat(dest).catch((e: unknown) => (errnoCode(e) === 'ENOENT' ? undefined : Promise.reject(e)));
  if (existing?.isDirectory()) throw new UsageError(`restore destination ${dest} is a folder`, 'give an archive file name, or restore into the folder with a path not ending in .zip/.tar/.tar.gz');
  if (existing && !opts.overwrite) throw new DestinationExistsError(dest);
  await noteLeftovers(dest, opts.warn);

  const { kept: items, skipped } = format === 'zip' ? zipSafe(planned) : { kept: planned, skipped: [] };
  const kinds = classify(items, format);
  const { content, located, totalBytes, stop } = archiveContent(repo, items, kinds, opts); // a missing chunk fails before the archive is started

  const tmp = `${dest}.partial-${randomBytes(6).toString('hex')}`;
  const out = await makeDirs(dirname(dest)).then(() => fsp.open(tmp, 'wx', 0o644)).catch((e: unknown) => {
    throw destinationCreateError(dest, e);
  });
  try {
    const incompressible = (e: TreeEntry) => (e.content?.length ?? 0) > 0 && e.content!.every((h) => located.get(h)!.codec === Codec.raw);
    if (format === 'zip') await writeZip(out, items, kinds, content, incompressible);
    else await writeTar(coalesced(out), items, kinds, content, format === 'tgz');
    await fsp.rename(tmp, dest);
  } catch (e) {
    await out.close().catch(() => undefined);
    const removed = await fsp.rm(tmp, { force: true }).then(() => true, () => false);
    await stop();
    const left = removed ? 'the partial archive was removed' : `the partial archive ${tmp} could not be removed: delete it, it is not a whole archive`;
    if (e instanceof InterruptedError || opts.signal?.aborted) {
      throw new InterruptedError(`interrupted - restore destination ${dest} was not written (${left})`, 'run the restore again; the repository is unchanged');
    }
    throw withOutcome(e, dest, left);
  }
  opts.onProgress?.({ phase: 'restore', doneBytes: totalBytes, totalBytes });
  const dirs = kinds.filter((k) => k === 'dir').length;
  return { files: items.length - dirs, dirs, bytes: totalBytes, dest, ...(skipped.length > 0 ? { skipped } : {}) };
}

/**
 * The error of a failed archive restore, saying that `dest` was not written: errors of the
 * destination as DestinationWriteError; damaged or unreadable repository data keeps its own
 * class, message and hint, with the outcome added.
 */
function withOutcome(e: unknown, dest: string, left: string): unknown {
  const outcome = `; restore destination ${dest} was not written (${left})`;
  if (e instanceof IntegrityError) return new IntegrityError(e.message + outcome, { cause: e, hint: e.hint });
  if (e instanceof TargetIoError) return new TargetIoError(e.message + outcome, e.hint, { cause: e });
  return asDestinationError(e, dest, left);
}

/**
 * Name the temporary archives of earlier restores to `dest` that were killed (kill -9, a power
 * cut: nothing could remove them). One could also belong to a restore to `dest` running right
 * now, which nothing here can rule out (it may run on another host), so they are named, not
 * deleted.
 */
async function noteLeftovers(dest: string, warn: ((line: string) => void) | undefined): Promise<void> {
  if (!warn) return;
  const prefix = `${basename(dest)}.partial-`;
  const names = await fsp.readdir(dirname(dest)).catch(() => [] as string[]);
  const found = names.filter((n) => n.startsWith(prefix) && PARTIAL_SUFFIX.test(n)).sort();
  if (found.length === 0) return;
  const more = found.length > 1 ? ` (and ${found.length - 1} more ${prefix}* file${found.length > 2 ? 's' : ''})` : '';
  warn(`${join(dirname(dest), found[0] as string)}${more} is a partial archive left by an earlier restore that was killed (or by one still running): it is not a whole archive - delete it when no restore to ${dest} runs`);
}

/**
 * The items a zip holds as they are named. Zip names use '/' between folders, and archiver (as
 * unzip and Windows) reads a backslash as one and drops a leading `X:`: `a\..\..\x` would
 * become an entry that escapes the folder it is unpacked in, `x\y` would collide with x/y.
 * Such items (and everything in such a folder) are left out and listed instead.
 */
function zipSafe(items: PlanItem[]): { kept: PlanItem[]; skipped: { path: string; why: string }[] } {
  const kept: PlanItem[] = [];
  const skipped: { path: string; why: string }[] = [];
  const skippedDirs: string[] = [];
  for (const it of items) {
    if (skippedDirs.some((d) => it.rel.startsWith(`${d}/`))) continue;
    const why = it.rel.includes('\\') ? 'its name holds a backslash, which zip tools read as a folder separator'
      : /^\w+:/.test(it.rel) ? 'its name starts like a Windows drive (X:), which zip tools drop'
        : it.entry.type === 'symlink' && it.entry.target?.includes('\\') ? 'its target holds a backslash, which zip tools read as a folder separator'
          : undefined;
    if (why === undefined) {
      kept.push(it);
      continue;
    }
    skipped.push({ path: it.rel, why: `${why}${it.entry.type === 'dir' ? ' (with everything in it)' : ''}; restore it to a folder or a .tar` });
    if (it.entry.type === 'dir') skippedDirs.push(it.rel);
  }
  return { kept, skipped };
}

async function writeZip(out: FileHandle, items: PlanItem[], kinds: Kind[], content: Content, incompressible: (e: TreeEntry) => boolean): Promise<void> {
  // zlib level 1: a restore is about time-to-data. Files whose chunks did not compress in the
  // repository either (media, archives, random data) are stored as they are.
  const archive = new ZipArchive({ zlib: { level: 1, chunkSize: 256 << 10 } });
  const done = pipeline(archive, coalesced(out));
  // The first failure of an entry's content (archiver does not listen to its sources' errors),
  // an archiver warning, or the archive file failing: stops the wait for the entry in progress.
  const stop = new AbortController();
  const fail = (e: unknown): void => {
    if (!stop.signal.aborted) stop.abort(e);
  };
  done.catch(fail); // and awaited below
  archive.on('warning', fail);
  try {
    for (let i = 0; i < items.length; i++) {
      const { rel, entry } = items[i] as PlanItem;
      const kind = kinds[i] as Kind;
      const date = new Date(Number(BigInt(entry.mtimeNs) / 1_000_000n));
      const added = once(archive, 'entry', { signal: stop.signal });
      added.catch(() => undefined); // awaited below, unless the content fails before
      if (kind === 'dir') archive.append(Buffer.alloc(0), { name: `${rel}/`, type: 'directory', mode: entry.mode, date });
      else if (kind === 'symlink') archive.symlink(rel, entry.target as string, entry.mode);
      else {
        const data = { name: rel, mode: entry.mode, date, store: incompressible(entry) };
        // One chunk (most files): a buffer entry, which archiver handles with less overhead.
        if ((entry.content?.length ?? 0) <= 1) archive.append(Buffer.concat(await collect(content(entry, rel))), data);
        else archive.append(Readable.from(content(entry, rel), { objectMode: false }).on('error', fail), data);
      }
      // One entry at a time: the prefetch window is the only read-ahead.
      await added.catch((e: unknown) => Promise.reject(stop.signal.aborted ? stop.signal.reason : e));
    }
    await Promise.race([archive.finalize(), done]);
  } catch (e) {
    archive.destroy(e as Error);
    await done.catch(() => undefined);
    throw e;
  }
  await done;
}

async function collect(src: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const b of src) out.push(b);
  return out;
}

/**
 * The archive file as a stream that writes in blocks of WRITE_BYTES: tar and zip emit a small
 * header per entry, and each write through the libuv pool costs ~50 µs of hand-offs.
 */
function coalesced(out: FileHandle): Writable {
  const file = out.createWriteStream();
  let parts: Buffer[] = [];
  let size = 0;
  const flush = (cb: (e?: Error | null) => void) => {
    const data = Buffer.concat(parts, size);
    parts = [];
    size = 0;
    if (data.length === 0) return cb();
    if (file.write(data)) return cb();
    file.once('drain', () => cb());
  };
  const w = new Writable({
    highWaterMark: WRITE_BYTES,
    write(chunk: Buffer, _enc, cb) {
      parts.push(chunk);
      size += chunk.length;
      if (size >= WRITE_BYTES) flush(cb);
      else cb();
    },
    final(cb) {
      flush((e) => (e ? cb(e) : file.end(() => cb())));
    },
    destroy(err, cb) {
      file.destroy(err ?? undefined);
      cb(err);
    },
  });
  file.on('error', (e) => w.destroy(e));
  return w;
}
