/**
 * A repository in a folder on a mounted filesystem (local disk, or an iSCSI LUN that is
 * already mounted). Objects are files; writes go through <root>/tmp and are renamed into place.
 */
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BlobNotFoundError, type BlobInfo, type ByteRange, type ObjectUpload, type TargetDriver, type TargetFactory } from '../types.js';
import { TargetFullError, TargetIoError, errnoCode } from '../../engine/errors.js';
import { WRITE_PIECE_BYTES, fsyncDir, makeDirs } from '../../engine/runtime/fs.js';

export interface LocalTargetConfig {
  path: string;
}

export const localTarget: TargetFactory<LocalTargetConfig> = {
  type: 'local',
  open: async (config) => new LocalTarget(config.path),
};

export class LocalTarget implements TargetDriver {
  readonly capabilities = { atomicReplace: true, maxConnections: 8 };
  private readonly dirsMade = new Set<string>();

  constructor(readonly location: string) {}

  /**
   * The folder of a configured target (targets/NAME.yaml), which must exist. Unlike `--repo DIR`
   * (made by `drctl init`), it is never created: a missing folder most often means the volume
   * it lives on is not mounted, and creating it would put backups on the disk below the
   * mountpoint (and fill it) while every job looks fine. Same words as `drctl target test`.
   */
  static async openFolder(path: string, targetName: string): Promise<LocalTarget> {
    const st = await fsp.stat(path).catch((e: unknown) => e as Error);
    if (st instanceof Error) {
      if (errnoCode(st) === 'ENOENT') {
        throw new TargetIoError(`target ${targetName}: ${path} does not exist`,
          `mount its volume if it lives on one, or create the repository with \`drctl init --target ${targetName}\``, { cause: st });
      }
      throw new TargetIoError(`target ${targetName}: ${path} cannot be read - ${st.message}`,
        'check that drctl may read it and that its volume is healthy', { cause: st });
    }
    if (!st.isDirectory()) {
      throw new TargetIoError(`target ${targetName}: ${path} is not a folder`, 'set path: to the folder that holds (or will hold) the repository');
    }
    return new LocalTarget(path);
  }

  put(key: string, data: Uint8Array | readonly Uint8Array[], opts: { replace?: boolean } = {}): Promise<void> {
    const upload = this.create(key);
    return upload.write(data instanceof Uint8Array ? [data] : data).then(() => upload.commit(key, opts), async (e: unknown) => {
      await upload.abort();
      throw e;
    });
  }

  create(what = 'a new object'): ObjectUpload {
    const tmp = join(this.location, 'tmp', `${what.replace(/[^\w.-]+/g, '_')}.${randomBytes(6).toString('hex')}`);
    return new LocalUpload(this, tmp, what);
  }

  /**
   * The error to report for a failed write: a full filesystem does not always say ENOSPC (a
   * recursive mkdir can report ENOENT), so when the volume has no room left (measured before
   * the temp file is freed), say so.
   */
  async writeFailure(e: unknown, what: string): Promise<Error> {
    if (e instanceof TargetFullError || e instanceof TargetIoError) return e;
    if (errnoCode(e) !== 'ENOSPC' && (await this.isFull())) return new TargetFullError(this.location, { cause: e });
    return this.wrap(e, `writing ${what}`);
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    let h;
    try {
      h = await fsp.open(this.path(key), 'r');
    } catch (e) {
      // ENOTDIR: a file where a folder of the key should be (--repo naming a file): not there either.
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') throw new BlobNotFoundError(key, this.location);
      throw this.wrap(e, `reading ${key}`);
    }
    try {
      if (!range) return await h.readFile();
      const buf = Buffer.allocUnsafe(range.length);
      let done = 0;
      while (done < range.length) {
        const { bytesRead } = await h.read(buf, done, range.length - done, range.offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return done === range.length ? buf : buf.subarray(0, done);
    } catch (e) {
      throw this.wrap(e, `reading ${key}`);
    } finally {
      await h.close();
    }
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    // Keys are at most two levels deep ("data/ab/<id>"); walk from the prefix's folder.
    const slash = prefix.lastIndexOf('/');
    const base = slash >= 0 ? prefix.slice(0, slash) : '';
    yield* this.walk(base, prefix);
  }

  private async *walk(dirKey: string, prefix: string): AsyncIterable<BlobInfo> {
    let entries;
    try {
      entries = await fsp.readdir(this.path(dirKey), { withFileTypes: true });
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return;
      throw this.wrap(e, `listing ${dirKey || '/'}`);
    }
    for (const ent of entries) {
      const key = dirKey ? `${dirKey}/${ent.name}` : ent.name;
      if (key === 'tmp') continue; // temp files of writes in progress
      if (key === 'lost+found') continue; // ext4's, at the root of a volume that holds the repository
      if (ent.isDirectory()) {
        if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* this.walk(key, prefix);
      } else if (ent.isFile() && key.startsWith(prefix)) {
        const st = await fsp.stat(this.path(key)).catch(() => undefined);
        if (st) yield { key, sizeBytes: st.size };
      }
    }
  }

  async remove(key: string): Promise<void> {
    try {
      await fsp.unlink(this.path(key));
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new BlobNotFoundError(key, this.location);
      throw this.wrap(e, `removing ${key}`);
    }
  }

  async sweepTemp(olderThanMs: number): Promise<{ files: number; bytes: number }> {
    const dir = join(this.location, 'tmp');
    const out = { files: 0, bytes: 0 };
    let names: string[];
    try {
      names = await fsp.readdir(dir);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return out;
      throw this.wrap(e, 'listing tmp');
    }
    const cutoff = Date.now() - olderThanMs;
    for (const name of names) {
      const st = await fsp.lstat(join(dir, name)).catch(() => undefined);
      if (!st?.isFile() || st.mtimeMs > cutoff) continue;
      await fsp.unlink(join(dir, name)).then(() => {
        out.files++;
        out.bytes += st.size;
      }, () => undefined);
    }
    return out;
  }

  async close(): Promise<void> {}

  /** Bytes an unprivileged writer can still use on the volume. */
  async freeBytes(): Promise<number> {
    const st = await fsp.statfs(this.location);
    return st.bavail * st.bsize;
  }

  private async isFull(): Promise<boolean> {
    try {
      const st = await fsp.statfs(this.location);
      return st.bavail * st.bsize < 1024 * 1024;
    } catch {
      return false;
    }
  }

  localPath(key: string): string {
    return this.path(key);
  }

  readError(key: string, e: unknown): Error {
    return this.wrap(e, `reading ${key}`);
  }

  private path(key: string): string {
    return key ? join(this.location, key) : this.location;
  }

  async mkdirOnce(dir: string): Promise<void> {
    if (this.dirsMade.has(dir)) return;
    await makeDirs(dir);
    this.dirsMade.add(dir);
  }

  private wrap(e: unknown, what: string): Error {
    const code = errnoCode(e);
    if (code === 'ENOSPC' || code === 'EDQUOT') return new TargetFullError(this.location, { cause: e });
    if (code === 'EROFS') {
      return new TargetIoError(`target ${this.location} is read-only while ${what}`,
        'the filesystem was remounted read-only (often after I/O errors): check the volume, then re-attach it', { cause: e });
    }
    const msg = e instanceof Error ? e.message : String(e);
    if (code === 'EIO') {
      return new TargetIoError(`target ${this.location}: ${what} failed - ${msg}`,
        'the volume returned an I/O error: check the disk (kernel log, dmesg), then run `drctl check --read-data`, which names any points it affects', { cause: e });
    }
    return new TargetIoError(`target ${this.location}: ${what} failed - ${msg}`,
      'check that the volume is mounted and healthy', { cause: e });
  }
}

/**
 * A temp file in <root>/tmp that becomes the object on commit: written at positions handed out
 * in call order (writes may overlap), then fsync, a hard link (or a rename to replace) into
 * place and an fsync of the folder.
 */
class LocalUpload implements ObjectUpload {
  private readonly handle: Promise<FileHandle>;
  private position = 0;
  private readonly writes = new Set<Promise<void>>();
  private failure: Error | undefined;
  private closed = false;

  constructor(private readonly t: LocalTarget, private readonly tmp: string, private readonly what: string) {
    this.handle = t.mkdirOnce(dirname(tmp)).then(() => fsp.open(tmp, 'wx'));
    this.handle.catch(() => undefined); // reported by write and commit
  }

  write(parts: readonly Uint8Array[]): Promise<void> {
    const at = this.position;
    this.position += parts.reduce((a, p) => a + p.byteLength, 0);
    const w = this.handle.then((h) => writeAll(h, parts, at)).catch(async (e: unknown) => {
      this.failure ??= await this.t.writeFailure(e, this.what);
      throw this.failure;
    });
    const tracked = w.catch(() => undefined);
    this.writes.add(tracked);
    void tracked.then(() => this.writes.delete(tracked));
    return w;
  }

  async commit(key: string, opts: { replace?: boolean } = {}): Promise<void> {
    const dest = join(this.t.location, key);
    try {
      await Promise.all(this.writes);
      if (this.failure) throw this.failure;
      const h = await this.handle;
      await h.sync();
      this.closed = true;
      await h.close();
      await this.t.mkdirOnce(dirname(dest));
      if (!opts.replace) {
        // Content-addressed objects: an existing one already holds these exact bytes.
        try {
          await fsp.link(this.tmp, dest);
        } catch (e) {
          if (errnoCode(e) !== 'EEXIST') throw e;
          await fsp.unlink(this.tmp);
          return;
        }
        await fsp.unlink(this.tmp);
      } else {
        await fsp.rename(this.tmp, dest);
      }
      await fsyncDir(dirname(dest));
    } catch (e) {
      const err = await this.t.writeFailure(e, key);
      await this.abort();
      throw err;
    }
  }

  async abort(): Promise<void> {
    await Promise.all(this.writes);
    if (!this.closed) {
      this.closed = true;
      await this.handle.then((h) => h.close(), () => undefined).catch(() => undefined);
    }
    await fsp.rm(this.tmp, { force: true }).catch(() => undefined);
  }
}

/**
 * Write `parts` at `position` with writev in batches of at most WRITE_PIECE_BYTES (and IOV_MAX
 * 1024 parts), continuing after short writes. Larger writes are much slower on some kernels
 * (see WRITE_PIECE_BYTES).
 */
async function writeAll(h: FileHandle, parts: readonly Uint8Array[], position: number): Promise<void> {
  let batch: Uint8Array[] = [];
  let bytes = 0;
  const flush = async (): Promise<void> => {
    let { bytesWritten } = await h.writev(batch, position);
    if (bytesWritten < bytes) {
      // A short write: the rest from one copy of the batch, until it is all written.
      const all = Buffer.concat(batch);
      while (bytesWritten < bytes) bytesWritten += (await h.write(all, bytesWritten, bytes - bytesWritten, position + bytesWritten)).bytesWritten;
    }
    position += bytes;
    batch = [];
    bytes = 0;
  };
  for (const part of parts) {
    for (let at = 0; at < part.byteLength;) {
      const n = Math.min(part.byteLength - at, WRITE_PIECE_BYTES - bytes);
      batch.push(at === 0 && n === part.byteLength ? part : part.subarray(at, at + n));
      bytes += n;
      at += n;
      if (bytes === WRITE_PIECE_BYTES || batch.length === 1024) await flush();
    }
  }
  if (bytes > 0) await flush();
}
