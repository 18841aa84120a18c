/**
 * A repository on a target: open/init, the blob index, reading verified blobs, and the
 * recovery points. Writers get a BlobWriter per session and commit a point last.
 */
import { randomBytes } from 'node:crypto';
import { BlobNotFoundError, type TargetDriver } from '../../targets/types.js';
import { FORMAT_VERSION, Keys, defaultConfig, type RepoConfig } from './format.js';
import { BlobIndex, decodeIndexFile } from './index-store.js';
import { BlobWriter } from './blob-writer.js';
import { decodeVerified, hashHex } from './codec.js';
import { decodeVerifiedSync } from './codec-sync.js';
import { WorkerReadError } from './codec-pool.js';
import { GcPacer, collectGarbage } from '../runtime/gc.js';
import { acquireLock, type Lock, type LockKind, type LockWait } from './locks.js';
import type { Point, PointManifest } from './point.js';
import type { Clock } from '../runtime/clock.js';
import { IntegrityError, NotARepositoryError, PointNotFoundError, RepoNotFoundError, RepoVersionError, UsageError } from '../errors.js';

/**
 * Blobs up to this size (tree blobs, small files) are decoded and verified right here: a
 * worker round trip costs ~50-100 µs of thread hand-offs on a 2-vCPU VM, more than decoding
 * and hashing 64 KiB, and a restore of a file tree then never starts the codec workers.
 */
const DECODE_HERE_BYTES = 64 * 1024;

export interface RepoDeps {
  clock: Clock;
}

export class Repository {
  readonly index = new BlobIndex();
  /** Index files whose content does not match their name or cannot be parsed (check reports them). */
  readonly damagedIndexFiles: string[] = [];

  private constructor(
    readonly target: TargetDriver,
    readonly config: RepoConfig,
    private readonly deps: RepoDeps,
  ) {}

  get location(): string {
    return this.target.location;
  }

  /** Create a new repository. Refuses when one (or anything) is already there. */
  static async init(target: TargetDriver, deps: RepoDeps, overrides: Partial<RepoConfig> = {}): Promise<Repository> {
    for await (const _ of target.list('')) {
      const isRepo = await target.get(Keys.config).then(() => true, () => false);
      throw new UsageError(isRepo
        ? `${target.location} already holds a drctl repository`
        : `${target.location} is not empty - refusing to create a repository over other files`,
      isRepo ? 'use it as it is, or choose a new --repo folder' : 'choose an empty or new folder for --repo');
    }
    const config = { ...defaultConfig(randomBytes(16).toString('hex'), deps.clock.now().toISOString()), ...overrides };
    await target.put(Keys.config, Buffer.from(JSON.stringify(config, null, 2) + '\n'));
    return new Repository(target, config, deps);
  }

  /** Open an existing repository and load its index. */
  static async open(target: TargetDriver, deps: RepoDeps, opts: { existsCheck?: () => Promise<boolean> } = {}): Promise<Repository> {
    let raw: Buffer;
    try {
      raw = await target.get(Keys.config);
    } catch (e) {
      if (!(e instanceof BlobNotFoundError)) throw e;
      if (opts.existsCheck && !(await opts.existsCheck())) throw new RepoNotFoundError(target.location);
      throw new NotARepositoryError(target.location, 'it has no config.json');
    }
    let config: RepoConfig;
    try {
      config = JSON.parse(raw.toString('utf8')) as RepoConfig;
    } catch {
      throw new NotARepositoryError(target.location, 'its config.json is not valid JSON');
    }
    if (typeof config.formatVersion !== 'number') throw new NotARepositoryError(target.location, 'config.json has no formatVersion');
    if (config.formatVersion > FORMAT_VERSION) throw new RepoVersionError(target.location, config.formatVersion, FORMAT_VERSION);
    const repo = new Repository(target, config, deps);
    await repo.loadIndex();
    return repo;
  }

  /**
   * Read every index file into the in-memory index. Each file's text and parsed entries are
   * garbage once indexed (~300 bytes per blob); collected every 4 MiB of index files and at
   * the end, they no longer stay in the heap under what the command does next (check
   * --read-data of the 8 GiB bench image's repository: 134–137 -> 127–129 MiB peak RSS; the
   * 2 GiB one's: 116–117).
   */
  private async loadIndex(): Promise<void> {
    this.index.clear();
    this.damagedIndexFiles.length = 0;
    const pacer = new GcPacer(4 * 1024 * 1024);
    let loaded = 0;
    for await (const info of this.target.list('index/')) {
      const id = info.key.slice('index/'.length);
      const bytes = await this.target.get(info.key);
      if (hashHex(bytes) !== id) {
        // A damaged index file only costs dedup and lookup of its entries; check reports it.
        this.damagedIndexFiles.push(id);
        continue;
      }
      const file = await decodeIndexFile(bytes).catch(() => undefined);
      if (!file) {
        this.damagedIndexFiles.push(id);
        continue;
      }
      for (const p of file.packs) this.index.addPack(p.id, p.blobs);
      this.index.files.add(id);
      pacer.moved(bytes.length);
      loaded += bytes.length;
    }
    if (loaded > 256 * 1024) collectGarbage();
  }


  /**
   * Take a lock. Shared and prune locks then reload the index if its files changed since it
   * was loaded: a prune that finished between open and lock may have deleted packs the old
   * index still pointed to, and a backup must not dedup against them.
   */
  async lock(kind: LockKind, command: string, wait?: LockWait): Promise<Lock> {
    const lock = await acquireLock(this.target, kind, command, this.deps.clock, wait);
    if (kind === 'exclusive') return lock;
    try {
      if (await this.indexChanged()) await this.loadIndex();
    } catch (e) {
      await lock.release();
      throw e;
    }
    return lock;
  }

  private async indexChanged(): Promise<boolean> {
    const known = new Set([...this.index.files, ...this.damagedIndexFiles]);
    let n = 0;
    for await (const info of this.target.list('index/')) {
      if (!known.has(info.key.slice('index/'.length))) return true;
      n++;
    }
    return n !== known.size;
  }

  newWriter(): BlobWriter {
    return new BlobWriter(this.target, this.index, this.config);
  }

  /** Read one blob, decompress it and verify its hash. */
  async readBlob(hash: string): Promise<Buffer> {
    const loc = this.index.get(hash);
    if (!loc) throw new IntegrityError(`blob ${hash.slice(0, 12)} is not in the index of ${this.location}`);
    let stored: Buffer;
    try {
      stored = await this.target.get(Keys.pack(loc.pack), { offset: loc.offset, length: loc.length });
    } catch (e) {
      if (e instanceof BlobNotFoundError) throw new IntegrityError(`pack ${loc.pack.slice(0, 12)} holding blob ${hash.slice(0, 12)} is missing from ${this.location}`);
      throw e;
    }
    return this.verifyStored(hash, stored, loc.pack, loc.codec, loc.rawLength);
  }

  /** Decode bytes read from a pack and check them against the expected hash. */
  async verifyStored(hash: string, stored: Buffer, pack: string, codec: number, rawLength: number): Promise<Buffer> {
    const damaged = (why: string, cause?: unknown) => new IntegrityError(`blob ${hash.slice(0, 12)} in pack ${pack.slice(0, 12)} ${why} (damaged pack)`, cause === undefined ? undefined : { cause });
    if (rawLength <= DECODE_HERE_BYTES) {
      const r = decodeVerifiedSync(stored, codec, rawLength, hash);
      if (typeof r === 'string') throw damaged(r);
      return r;
    }
    try {
      return await decodeVerified(stored, codec, rawLength, hash);
    } catch (e) {
      throw damaged((e as Error).message, e);
    }
  }

  /**
   * `work` in which a worker thread reads the object `key` itself (at target.localPath): its
   * failed read (WorkerReadError) is reported as the target reports its own read failures.
   */
  workerRead<T>(key: string, work: Promise<T>): Promise<T> {
    return work.catch((e: unknown) => {
      throw e instanceof WorkerReadError ? (this.target.readError?.(key, e) ?? e) : e;
    });
  }

  /** Write the point manifest: the commit of a backup. Must come after BlobWriter.finish(). */
  async commitPoint(manifest: PointManifest): Promise<Point> {
    const bytes = Buffer.from(JSON.stringify(manifest, null, 1) + '\n');
    const id = hashHex(bytes);
    await this.target.put(Keys.point(id), bytes);
    return { id, ...manifest };
  }

  /** Forget a point: remove its manifest. Its data stays until prune finds it unreferenced. */
  async removePoint(id: string): Promise<void> {
    await this.target.remove(Keys.point(id));
  }

  /** Every pack on the target (indexed or not), by id, with its size in bytes. */
  async packSizes(): Promise<Map<string, number>> {
    const sizes = new Map<string, number>();
    for await (const info of this.target.list('data/')) sizes.set(info.key.slice(info.key.lastIndexOf('/') + 1), info.sizeBytes);
    return sizes;
  }

  /** Every point, oldest first. Points whose file does not match its hash are reported, not returned. */
  async listPoints(): Promise<{ points: Point[]; damaged: string[] }> {
    const points: Point[] = [];
    const damaged: string[] = [];
    for await (const info of this.target.list('points/')) {
      if (!info.key.endsWith('.json')) continue;
      const id = info.key.slice('points/'.length, -'.json'.length);
      try {
        const bytes = await this.target.get(info.key);
        if (hashHex(bytes) !== id) throw new Error('hash mismatch');
        points.push({ id, ...(JSON.parse(bytes.toString('utf8')) as PointManifest) });
      } catch {
        damaged.push(id);
      }
    }
    points.sort((a, b) => a.time.localeCompare(b.time) || a.id.localeCompare(b.id));
    return { points, damaged };
  }

  /** Resolve `latest`, a full id or a unique id prefix (optionally among points named `name`). */
  async resolvePoint(spec: string, name?: string): Promise<Point> {
    const { points } = await this.listPoints();
    const pool = name ? points.filter((p) => p.name === name) : points;
    if (spec === 'latest') {
      const p = pool.at(-1);
      if (!p) throw new PointNotFoundError(`no recovery point${name ? ` named ${name}` : ''} in ${this.location}`, 'list them with `drctl points`');
      return p;
    }
    const matches = pool.filter((p) => p.id.startsWith(spec.toLowerCase()));
    if (matches.length === 1) return matches[0] as Point;
    if (matches.length === 0) {
      throw new PointNotFoundError(`no recovery point ${spec}${name ? ` named ${name}` : ''} in ${this.location}`, 'list them with `drctl points`');
    }
    throw new PointNotFoundError(`point id prefix ${spec} is ambiguous (${matches.length} points)`, 'give more characters of the id');
  }
}
