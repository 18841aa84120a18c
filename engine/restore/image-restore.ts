/**
 * Restore the disks of a VM-level point. Chunks are fetched pack by pack with one ranged read
 * per run of nearby blobs; each blob is decompressed and hash-verified on the worker pool, which
 * writes its non-zero 4 KiB blocks straight into the destination. Where a disk goes decides
 * the rest:
 *
 * - A regular file, new or (with --overwrite) existing: a raw, sparse image (zero chunks and
 *   zero blocks stay holes) is written to `DEST.partial-<random>` beside it (fsynced when it
 *   replaces an existing file), and renamed
 *   over DEST only once every chunk is written and verified. A failure or an interrupt removes
 *   that temporary file and leaves DEST as it was; a kill -9 leaves the temporary file (its name
 *   says it is partial), never a DEST that looks whole. Without --overwrite the rename is a
 *   link(), so a DEST that appeared meanwhile is not replaced either. Replacing a file needs
 *   room for both until the rename; the new file gets the old one's mode and owner, and through
 *   a symlink DEST the file it points to is replaced (the symlink stays).
 * - A name ending in .qcow2: the same raw temporary file, then `qemu-img convert` into a second
 *   one beside it, which is renamed. Other image and archive names (.vmdk, .zip …) are refused
 *   before anything is written: drctl writes raw.
 * - A block device (an LV, a loop or iSCSI disk, or a symlink to one), with --overwrite and at
 *   least the disk's size: written in place, opened O_EXCL so a mounted device is refused. It
 *   holds old data where a file has holes, so the disk's range is zeroed first (BLKZEROOUT via
 *   `blkdiscard --zeroout`: thin and SSD storage do it without writing; written zeros where
 *   blkdiscard is missing), then written as a file is, then fsynced. It is never truncated,
 *   renamed or removed; after a failure it holds part of the disk, and the error says so.
 * - Anything else (a character device, FIFO or socket) is refused before anything is written.
 *
 * Over 300 lines: the three kinds of destination share the chunk pipeline below them, and
 * splitting them out would spread one restore's write path over several files.
 */
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Repository, DiskRecord, Point, BlobLocation } from '../repo/index.js';
import { HASH_BYTES, Keys, LIST_ENTRIES_PER_BLOB } from '../repo/index.js';
import { fsp, constants, fsyncDir, makeDirs, WRITE_PIECE_BYTES, type FileHandle, type Stats } from '../runtime/fs.js';
import { execFile } from '../runtime/exec.js';
import { blockDeviceBytes } from '../runtime/block-device.js';
import { runBounded } from '../runtime/concurrency.js';
import { collectGarbage } from '../runtime/gc.js';
import { codecPool } from '../repo/codec-pool.js';
import type { ProgressFn } from '../progress.js';
import {
  DestinationExistsError, DestinationWriteError, IntegrityError, InterruptedError, NOT_INDEXED_HINT, UsageError, asDestinationError, destinationCreateError, errnoCode,
} from '../errors.js';
import { BlobNotFoundError } from '../../targets/types.js';

export interface ImageRestoreOptions {
  overwrite?: boolean;
  signal?: AbortSignal;
  onProgress?: ProgressFn;
}

export interface ImageRestoreResult {
  files: string[];
  /** Those of `files` that are block devices, written in place: what a file keeps as holes was zeroed there. */
  devices: string[];
  bytesWritten: number;
  logicalBytes: number;
  durationMs: number;
}

/** Where each disk of `point` goes for `dest`: a file for a one-disk point, or files in a folder. */
export async function imageDestinations(point: Point, dest: string): Promise<string[]> {
  const disks = point.disks ?? [];
  const st = await fsp.stat(dest).catch(() => undefined);
  const isDir = dest.endsWith('/') || st?.isDirectory() === true;
  // A folder named as one (DEST/) must exist; a file name's missing folders are created.
  if (dest.endsWith('/') && !st?.isDirectory()) {
    throw new UsageError(`restore destination folder ${dest} ${st ? 'is not a folder' : 'does not exist'} - nothing was written`,
      'create the folder first, or give --to a file name: the missing folders above an image file are created');
  }
  if (!isDir && disks.length > 1) {
    throw new UsageError(`point ${point.id.slice(0, 8)} has ${disks.length} disks - --to must be a folder`, 'give --to an existing folder');
  }
  return disks.map((d) => (isDir ? join(dest, rawName(d)) : dest));
}

function rawName(d: DiskRecord): string {
  return d.sourceFormat === 'raw' ? d.name : `${d.name.replace(/\.[^.]+$/, '')}.raw`;
}

export async function restoreImage(repo: Repository, point: Point, dest: string, opts: ImageRestoreOptions = {}): Promise<ImageRestoreResult> {
  const t0 = performance.now();
  const files = await imageDestinations(point, dest);
  const disks = point.disks ?? [];
  // Every destination is checked before the first is written.
  const plans: Dest[] = [];
  for (const [k, disk] of disks.entries()) plans.push(await planDestination(files[k] as string, disk, opts.overwrite === true));
  const qcow2 = plans.find((p) => p.kind === 'file' && p.format === 'qcow2');
  if (qcow2) await requireQemuImg(qcow2.path);
  let bytesWritten = 0;
  let logical = 0;
  const total = disks.reduce((a, d) => a + d.sizeBytes, 0);
  const done: string[] = [];
  for (const [k, disk] of disks.entries()) {
    const plan = plans[k] as Dest;
    const progress = (n: number) => opts.onProgress?.({ phase: 'restore', doneBytes: logical + n, totalBytes: total, item: disk.name });
    // With several disks, a failure says which were restored before it.
    const before = done.length ? `; ${done.join(', ')} ${done.length > 1 ? 'were' : 'was'} restored before` : '';
    bytesWritten += plan.kind === 'device'
      ? await restoreToDevice(repo, disk, plan, opts, progress, before)
      : await restoreToFile(repo, disk, plan, opts, progress, before);
    logical += disk.sizeBytes;
    done.push(plan.path);
  }
  return {
    files, devices: plans.filter((p) => p.kind === 'device').map((p) => p.path), bytesWritten, logicalBytes: logical, durationMs: Math.round(performance.now() - t0),
  };
}

/** Where one disk goes: `path` as given, `file` the regular file that is created or replaced. */
type Dest =
  | { kind: 'file'; path: string; file: string; format: 'raw' | 'qcow2'; replaces?: Stats }
  | { kind: 'device'; path: string };

/** What is at `path` and how the disk goes there; throws (nothing written) when it cannot. */
async function planDestination(path: string, disk: DiskRecord, overwrite: boolean): Promise<Dest> {
  const missing = (e: unknown) => (errnoCode(e) === 'ENOENT' ? undefined : Promise.reject(destinationCreateError(path, e)));
  const lst = await fsp.lstat(path).catch(missing);
  const st = lst?.isSymbolicLink() ? await fsp.stat(path).catch(missing) : lst;
  if (st?.isBlockDevice()) {
    if (!overwrite) throw new UsageError(`restore destination ${path} is a block device - nothing was written`, 'add --overwrite to write the disk over everything on it');
    const sizeBytes = await deviceBytes(path, st.rdev);
    if (sizeBytes < disk.sizeBytes) {
      throw new UsageError(`block device ${path} holds ${sizeBytes} bytes, less than the ${disk.sizeBytes} bytes of disk ${disk.name} - nothing was written`,
        'give a device at least as large as the disk (extend the LV or the LUN), or restore to an image file');
    }
    return { kind: 'device', path };
  }
  if (st && !st.isFile()) {
    throw new UsageError(`restore destination ${path} is ${kindOf(st)}, not an image file or a block device - nothing was written`, 'give --to an image file, a folder or a block device');
  }
  const format = imageFormat(path, disk);
  if (!lst) return { kind: 'file', path, file: path, format };
  if (!overwrite) throw new DestinationExistsError(path);
  if (!st) {
    throw new UsageError(`restore destination ${path} is a symlink to ${await fsp.readlink(path)}, which does not exist - nothing was written`, 'give --to the image file itself, or remove the symlink');
  }
  return { kind: 'file', path, file: lst.isSymbolicLink() ? await fsp.realpath(path) : path, format, replaces: st };
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'a special file';
}

/** qemu-img's names of the image formats a name may ask for, which drctl does not write. */
const OTHER_IMAGE_FORMATS: Record<string, string> = { vmdk: 'vmdk', vhdx: 'vhdx', vhd: 'vpc', vdi: 'vdi', qed: 'qed', qcow: 'qcow' };
const ARCHIVE_NAME = /\.(zip|tar|tgz|tar\.\w+|tbz2?|txz|gz|bz2|xz|zst|7z|rar)$/i;

/**
 * The format `path` asks for: a VM restored to the path in its domain XML must get the format
 * that XML says, so a .qcow2 becomes qcow2, and a name of a format drctl does not write is
 * refused instead of getting raw bytes that will not boot.
 */
function imageFormat(path: string, disk: DiskRecord): 'raw' | 'qcow2' {
  const ext = /\.([a-z0-9]+)$/i.exec(path)?.[1]?.toLowerCase();
  if (ext === 'qcow2') return 'qcow2';
  const archive = ARCHIVE_NAME.exec(path);
  const raw = `${path.slice(0, path.length - (archive?.[0].length ?? (ext ? ext.length + 1 : 0)))}.raw`;
  if (archive) {
    throw new UsageError(`cannot restore disk ${disk.name} to ${path} - drctl writes a disk as a raw image, not a ${archive[1]} archive; nothing was written`,
      `restore to ${raw}; archives are for file-level points`);
  }
  const other = ext === undefined ? undefined : OTHER_IMAGE_FORMATS[ext];
  if (other) {
    throw new UsageError(`cannot restore disk ${disk.name} to ${path} - drctl writes raw images (and qcow2), not ${ext}; nothing was written`,
      `restore to ${raw}, then \`qemu-img convert -f raw -O ${other} ${raw} ${path}\``);
  }
  return 'raw';
}

async function requireQemuImg(path: string): Promise<void> {
  const r = await execFile('qemu-img', ['--version']).catch((e: unknown) => (errnoCode(e) === 'ENOENT' ? undefined : Promise.reject(e)));
  if (r?.code !== 0) {
    throw new UsageError(`cannot write ${path} as a qcow2 image - qemu-img is not installed; nothing was written`,
      `install qemu-utils (scripts/setup.sh does), or restore to ${path.replace(/\.qcow2$/i, '')}.raw`);
  }
}

/** A disk into a temporary file beside its destination, renamed into place when whole. Returns the bytes written. */
async function restoreToFile(repo: Repository, disk: DiskRecord, dest: Dest & { kind: 'file' }, opts: ImageRestoreOptions, progress: (done: number) => void, before: string): Promise<number> {
  const temps = [partialName(dest.file)];
  let fh: FileHandle | undefined;
  let written = 0;
  try {
    try {
      await makeDirs(dirname(dest.file));
      fh = await fsp.open(temps[0] as string, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    } catch (e) {
      // Beside an existing DEST that is a failure to write it (a /proc file); else DEST cannot be created.
      throw dest.replaces ? asDestinationError(e, dest.path, `${dest.path} was not changed${before}`) : destinationCreateError(dest.path, e);
    }
    await fh.truncate(disk.sizeBytes);
    written = await writeChunks(repo, disk, fh, opts, progress);
    // An image that replaces one is on disk before the rename, so a power cut cannot leave
    // neither; a new one is not (~1 s for the 2 GiB bench image, as restic and borg do not).
    if (dest.replaces) await fh.sync();
    await fh.close();
    fh = undefined;
    if (dest.format === 'qcow2') {
      temps.push(partialName(dest.file));
      await convertToQcow2(temps[0] as string, temps[1] as string, opts.signal);
      await fsp.rm(temps[0] as string);
    }
    const whole = temps.at(-1) as string;
    await takeOwnerAndMode(whole, dest.replaces);
    if (opts.signal?.aborted) throw new InterruptedError();
    await publish(whole, dest, opts.overwrite === true);
  } catch (e) {
    await fh?.close().catch(() => undefined);
    const left = await Promise.all(temps.map((f) => fsp.rm(f, { force: true }).then(() => [], () => [f])));
    const what = `${dest.path} was ${dest.replaces ? 'not changed' : 'not created'}`;
    throw failure(e, dest.path, left.flat().length
      ? `${what}; delete the partial image ${left.flat().join(' and ')}, it is not the whole disk${before}`
      : `${what} (the partial image was removed)${before}`, opts.signal);
  }
  // A folder that refuses fsync (some FUSE and network filesystems) must not turn a restored
  // disk into a failure.
  await fsyncDir(dirname(dest.file)).catch(() => undefined);
  progress(disk.sizeBytes);
  return written;
}

function partialName(file: string): string {
  return `${file}.partial-${randomBytes(6).toString('hex')}`;
}

/**
 * Put the whole image `tmp` at DEST. With --overwrite a rename (atomic: DEST is the old image or
 * the new one). Without, link() + unlink(): unlike rename it fails if DEST appeared since it was
 * checked; where the filesystem has no hard links, check again and rename.
 */
async function publish(tmp: string, dest: Dest & { kind: 'file' }, overwrite: boolean): Promise<void> {
  if (overwrite) return fsp.rename(tmp, dest.file);
  try {
    await fsp.link(tmp, dest.file);
  } catch (e) {
    if (errnoCode(e) === 'EEXIST') throw new DestinationExistsError(dest.path);
    if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK'].includes(errnoCode(e) ?? '')) throw e;
    if (await fsp.lstat(dest.file).then(() => true, () => false)) throw new DestinationExistsError(dest.path);
    return fsp.rename(tmp, dest.file);
  }
  await fsp.unlink(tmp);
}

/** A replaced image keeps its mode and owner (libvirt's, a group's); a new one is private: disks hold private data. */
async function takeOwnerAndMode(file: string, replaces: Stats | undefined): Promise<void> {
  // EPERM: not root (chown), or a filesystem without Unix modes (vfat): the image is still whole.
  const unless = (e: unknown) => (errnoCode(e) === 'EPERM' || errnoCode(e) === 'ENOTSUP' ? undefined : Promise.reject(e));
  await fsp.chmod(file, replaces ? replaces.mode & 0o7777 : 0o600).catch(unless);
  if (replaces) await fsp.chown(file, replaces.uid, replaces.gid).catch(unless);
}

/** `qemu-img convert` of the raw image into a qcow2 (holes and zero blocks stay unallocated), fsynced. */
async function convertToQcow2(raw: string, qcow2: string, signal?: AbortSignal): Promise<void> {
  const r = await execFile('qemu-img', ['convert', '-q', '-W', '-f', 'raw', '-O', 'qcow2', raw, qcow2], { signal });
  if (r.code !== 0) {
    const why = r.stderr.trim().split('\n').at(-1) ?? `exit ${r.code}`;
    // ENOSPC is said as the raw image's would be; anything else as qemu-img says it.
    throw /No space left on device/i.test(why) ? Object.assign(new Error(why), { code: 'ENOSPC' }) : new QemuImgError(why);
  }
  const fh = await fsp.open(qcow2, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

class QemuImgError extends Error {}

/** A failed or interrupted restore of DEST as the operator reads it; `left` says what is at DEST now. */
function failure(e: unknown, path: string, left: string, signal?: AbortSignal): unknown {
  if (signal?.aborted || e instanceof InterruptedError) return new InterruptedError(`interrupted - ${left}`, 'run the restore again');
  if (e instanceof QemuImgError) {
    return new DestinationWriteError(`cannot write restore destination ${path} - qemu-img convert to qcow2 failed: ${e.message}; ${left}`,
      `check the volume there, or restore to ${path.replace(/\.qcow2$/i, '')}.raw; the repository is unchanged`, { cause: e });
  }
  return asDestinationError(e, path, left);
}

/** A disk written in place onto a block device of at least its size. Returns the bytes of data written. */
async function restoreToDevice(repo: Repository, disk: DiskRecord, dest: Dest & { kind: 'device' }, opts: ImageRestoreOptions, progress: (done: number) => void, before: string): Promise<number> {
  let fh: FileHandle;
  try {
    // O_EXCL on a block device: EBUSY while it is mounted or held by LVM, md or another exclusive user.
    fh = await fsp.open(dest.path, constants.O_WRONLY | constants.O_EXCL);
  } catch (e) {
    if (errnoCode(e) === 'EBUSY') {
      throw new UsageError(`block device ${dest.path} is in use (mounted, or held by LVM, md or another program) - nothing was written${before}`,
        'unmount it or stop what holds it, then run the restore again');
    }
    throw failure(e, dest.path, `nothing was written to it${before}`, opts.signal);
  }
  try {
    await zeroDevice(fh, dest.path, disk.sizeBytes, opts.signal);
    const written = await writeChunks(repo, disk, fh, opts, progress);
    await fh.sync();
    progress(disk.sizeBytes);
    return written;
  } catch (e) {
    throw failure(e, dest.path, `${dest.path} was partly overwritten and does not hold the whole disk${before}`, opts.signal);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/**
 * Zero bytes [0, sizeBytes) of the device open as `fh`, so that what the sparse writes skip reads
 * as zeros. BLKZEROOUT (blkdiscard --zeroout) lets the kernel use the device's write-zeroes
 * command or unmap thin storage instead of sending every zero; --force because we hold the device
 * O_EXCL, which blkdiscard wants for itself; 1 GiB steps so an interrupt stops it soon. The tail
 * past the last 4 KiB (4Kn disks refuse a smaller range), and everything when blkdiscard is
 * missing or fails, is zeroed by writing.
 */
async function zeroDevice(fh: FileHandle, path: string, sizeBytes: number, signal?: AbortSignal): Promise<void> {
  const aligned = sizeBytes - (sizeBytes % 4096);
  let zeroed = 0;
  if (aligned > 0) {
    const r = await execFile('blkdiscard', ['--zeroout', '--force', '--step', String(1 << 30), '--offset', '0', '--length', String(aligned), path], { signal })
      .catch(() => undefined);
    if (r?.code === 0) zeroed = aligned;
  }
  const zeros = Buffer.alloc(Math.min(WRITE_PIECE_BYTES, sizeBytes - zeroed));
  for (let at = zeroed; at < sizeBytes;) {
    if (signal?.aborted) throw new InterruptedError();
    at += (await fh.write(zeros, 0, Math.min(zeros.length, sizeBytes - at), at)).bytesWritten;
  }
  if (signal?.aborted) throw new InterruptedError();
}

/** The size of a block device, which stat gives as 0. */
async function deviceBytes(path: string, rdev: number): Promise<number> {
  const size = await blockDeviceBytes(path, rdev);
  if ('bytes' in size) return size.bytes;
  throw new UsageError(`cannot read the size of block device ${path} - ${size.why}; nothing was written`,
    'mount sysfs on /sys or install util-linux (blockdev), then run the restore again');
}

/** Write the disk's chunks into `fh`, sized (a file) or zeroed (a device) before. Returns the bytes written. */
async function writeChunks(repo: Repository, disk: DiskRecord, fh: FileHandle, opts: ImageRestoreOptions, progress: (done: number) => void): Promise<number> {
  let written = 0;
  let done = 0;
  for (const [seg, listHash] of disk.lists.entries()) {
    let entries: Buffer;
    try {
      entries = await repo.readBlob(listHash);
    } catch (e) {
      const from = seg * LIST_ENTRIES_PER_BLOB * disk.chunkBytes;
      const to = Math.min(disk.sizeBytes, from + LIST_ENTRIES_PER_BLOB * disk.chunkBytes);
      throw new IntegrityError(`the chunk list of disk ${disk.name} is unreadable (${(e as Error).message}): disk ${disk.name} bytes ${from}-${to} cannot be restored`,
        { cause: e, ...(e instanceof IntegrityError ? { hint: e.hint } : {}) });
    }
    // Planned a window at a time, so the plan's memory does not grow with the disk.
    for (let w = 0; w * HASH_BYTES < entries.length; w += PLAN_WINDOW_CHUNKS) {
      const window = entries.subarray(w * HASH_BYTES, (w + PLAN_WINDOW_CHUNKS) * HASH_BYTES);
      const runs = planRuns(repo, window, seg * LIST_ENTRIES_PER_BLOB + w);
      // Holes and zero chunks are already zeros (the truncate, or the device's zeroing): done now.
      const dataChunks = runs.reduce((a, run) => a + run.reduce((b, x) => b + x.chunks.length, 0), 0);
      done += (window.length / HASH_BYTES - dataChunks) * disk.chunkBytes;
      const jobs = runs.map((run) => async () => {
        if (opts.signal?.aborted) throw new InterruptedError();
        const n = await fetchAndWrite(repo, disk, fh, run);
        written += n;
        done += run.reduce((a, x) => a + x.chunks.length, 0) * disk.chunkBytes;
        progress(Math.min(done, disk.sizeBytes));
      });
      await runBounded(jobs, PACK_RUNS_IN_FLIGHT, opts.signal);
      if (opts.signal?.aborted) throw new InterruptedError();
      // A full collection (~1 ms) per window: left to V8, old plans piled up on long restores.
      collectGarbage();
    }
  }
  return written;
}

const PACK_RUNS_IN_FLIGHT = 4;
/**
 * Chunks planned at once (1 GiB of disk at 256 KiB): a whole chunk-list segment is 4 GiB, and
 * planning it at once made the 8 GiB bench image peak 16 MiB above the 2 GiB one.
 */
const PLAN_WINDOW_CHUNKS = 4096;
/** Blobs closer than this in one pack are fetched with one read. */
const MAX_GAP_BYTES = 1024 * 1024;
/** Bounds one read (and the memory of one run in flight): 4 MiB stored is ~7 MiB raw. */
const MAX_RUN_BYTES = 4 * 1024 * 1024;

interface Want {
  hash: string;
  loc: BlobLocation;
  chunks: number[];
}

/** Group the non-zero chunks of one list segment into runs of nearby blobs in the same pack. */
function planRuns(repo: Repository, entries: Buffer, firstChunk: number): Want[][] {
  const byHash = new Map<string, Want>();
  const zero = Buffer.alloc(HASH_BYTES);
  for (let j = 0; j * HASH_BYTES < entries.length; j++) {
    const h = entries.subarray(j * HASH_BYTES, (j + 1) * HASH_BYTES);
    if (h.equals(zero)) continue;
    const hash = h.toString('hex');
    let w = byHash.get(hash);
    if (!w) {
      const loc = repo.index.get(hash);
      if (!loc) throw new IntegrityError(`chunk ${hash.slice(0, 12)} (chunk ${firstChunk + j}) is not in the index of ${repo.location}`, { hint: NOT_INDEXED_HINT });
      byHash.set(hash, (w = { hash, loc, chunks: [] }));
    }
    w.chunks.push(firstChunk + j);
  }
  const byPack = new Map<string, Want[]>();
  for (const w of byHash.values()) {
    let g = byPack.get(w.loc.pack);
    if (!g) byPack.set(w.loc.pack, (g = []));
    g.push(w);
  }
  const runs: Want[][] = [];
  for (const g of byPack.values()) {
    g.sort((a, b) => a.loc.offset - b.loc.offset);
    let run: Want[] = [];
    for (const w of g) {
      const last = run.at(-1);
      const runStart = run[0]?.loc.offset ?? w.loc.offset;
      if (last && (w.loc.offset - (last.loc.offset + last.loc.length) > MAX_GAP_BYTES || w.loc.offset + w.loc.length - runStart > MAX_RUN_BYTES)) {
        runs.push(run);
        run = [];
      }
      run.push(w);
    }
    if (run.length) runs.push(run);
  }
  return runs;
}

async function fetchAndWrite(repo: Repository, disk: DiskRecord, fh: FileHandle, run: Want[]): Promise<number> {
  const first = run[0] as Want;
  const last = run.at(-1) as Want;
  const start = first.loc.offset;
  const blobs = run.map((w) => ({
    offset: w.loc.offset - start, length: w.loc.length, codec: w.loc.codec, rawLength: w.loc.rawLength, hash: w.hash,
    at: w.chunks.map((c) => c * disk.chunkBytes),
  }));
  const missing = () => new IntegrityError(`pack ${first.loc.pack.slice(0, 12)} is missing: disk ${disk.name} bytes ${rangeOf(disk, first.chunks[0] ?? 0)} cannot be restored`);
  const length = last.loc.offset + last.loc.length - start;
  const key = Keys.pack(first.loc.pack);
  const local = repo.target.localPath?.(key);
  if (local) {
    // The worker reads the range itself into a buffer it keeps: nothing per run for the GC.
    const r = await repo.workerRead(key, codecPool().decodeAndWriteFromFile({ path: local, offset: start, length }, blobs, fh.fd, disk.sizeBytes));
    if (r.missing) throw missing();
    return judgeRun(disk, run, r);
  }
  let bytes: Buffer;
  try {
    bytes = await repo.target.get(key, { offset: start, length });
  } catch (e) {
    if (e instanceof BlobNotFoundError) throw missing();
    throw e;
  }
  return judgeRun(disk, run, await codecPool().decodeAndWrite(bytes, blobs, fh.fd, disk.sizeBytes));
}

function judgeRun(disk: DiskRecord, run: Want[], { results, written }: { results: { ok: boolean; error?: string }[]; written: number }): number {
  for (const [k, w] of run.entries()) {
    const r = results[k];
    if (!r?.ok) {
      throw new IntegrityError(`chunk ${w.hash.slice(0, 12)} in pack ${w.loc.pack.slice(0, 12)} ${r?.error ?? 'is missing'} (damaged pack): disk ${disk.name} bytes ${rangeOf(disk, w.chunks[0] ?? 0)} cannot be restored`);
    }
  }
  return written;
}

function rangeOf(disk: DiskRecord, chunk: number): string {
  const s = chunk * disk.chunkBytes;
  return `${s}-${Math.min(s + disk.chunkBytes, disk.sizeBytes)}`;
}
