/**
 * A repository on a target: open/init, the blob index, reading verified blobs, and the
 * recovery points. Writers get a BlobWriter per session and commit a point last.
 */
import { randomBytes } from 'node:crypto';
import { BlobNotFoundError, type TargetDriver } from '../../targets/types.js';
import { FORMAT_VERSION, Keys, defaultConfig, isRecord, repoConfigProblems, type RepoConfig } from './format.js';
import { BlobIndex } from './index-store.js';
import { decodeIndexFile } from './index-codec.js';
import { BlobWriter } from './blob-writer.js';
import { decodeVerified, hashHex } from './codec.js';
import { decodeVerifiedSync } from './codec-sync.js';
import { WorkerReadError } from './codec-pool.js';
import { GcPacer, collectGarbage } from '../runtime/gc.js';
import { acquireLock, type Lock, type LockKind, type LockWait } from './locks.js';
import type { Point, PointManifest } from './point.js';
import type { Clock } from '../runtime/clock.js';
import { IntegrityError, NOT_INDEXED_HINT, NotARepositoryError, PointNotFoundError, RepoNotFoundError, RepoVersionError, UsageError, WorkerThreadError } from '../errors.js';

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

  /** Open an existing repository (its config.json checked by readConfig) and load its index. */
  static async open(target: TargetDriver, deps: RepoDeps, opts: { existsCheck?: () => Promise<boolean> } = {}): Promise<Repository> {
    const repo = new Repository(target, await Repository.readConfig(target, opts), deps);
    await repo.loadIndex();
    return repo;
  }

  /**
   * The repository's config.json, checked field by field before anything uses it: a damaged
   * value (a chunk size of 0, an unknown codec, an encryption this drctl does not know) fails
   * here, exit 2, naming the field. Reads nothing else (`drctl target test` checks a target
   * with it without loading the index).
   */
  static async readConfig(target: TargetDriver, opts: { existsCheck?: () => Promise<boolean> } = {}): Promise<RepoConfig> {
    let raw: Buffer;
    try {
      raw = await target.get(Keys.config);
    } catch (e) {
      if (!(e instanceof BlobNotFoundError)) throw e;
      if (opts.existsCheck && !(await opts.existsCheck())) throw new RepoNotFoundError(target.location);
      if (await hasRepositoryObjects(target)) throw damagedConfig(target, 'is missing', true);
      throw new NotARepositoryError(target.location, 'it has no config.json');
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw.toString('utf8'));
    } catch {
      if (await hasRepositoryObjects(target)) throw damagedConfig(target, 'is not valid JSON', true);
      throw new NotARepositoryError(target.location, 'its config.json is not valid JSON');
    }
    const looksOurs = isRecord(parsed) && 'formatVersion' in parsed;
    if (!looksOurs && !(await hasRepositoryObjects(target))) {
      throw new NotARepositoryError(target.location, 'config.json has no formatVersion');
    }
    if (!isRecord(parsed)) throw damagedConfig(target, `is not a JSON object (${Array.isArray(parsed) ? 'an array' : typeof parsed})`, true);
    const version = parsed.formatVersion;
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) {
      throw damagedConfig(target, version === undefined ? 'has no formatVersion' : `is invalid - formatVersion must be ${typeof version === 'number' ? 'a whole number of at least 1' : 'a number'} (1 for this format), got ${JSON.stringify(version)}`, !looksOurs);
    }
    if (version > FORMAT_VERSION) throw new RepoVersionError(target.location, version, FORMAT_VERSION);
    const problems = repoConfigProblems(parsed);
    if (problems.length === 1) throw damagedConfig(target, `is invalid - ${problems[0]}`);
    if (problems.length > 1) throw damagedConfig(target, `is invalid in ${problems.length} fields (listed below)\n${problems.map((p) => `  ${p}`).join('\n')}`);
    return parsed as unknown as RepoConfig;
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
    if (!loc) throw new IntegrityError(`blob ${hash.slice(0, 12)} is not in the index of ${this.location}`, { hint: NOT_INDEXED_HINT });
    let stored: Buffer;
    try {
      stored = await this.target.get(Keys.pack(loc.pack), { offset: loc.offset, length: loc.length });
    } catch (e) {
      if (e instanceof BlobNotFoundError) throw new IntegrityError(`pack ${loc.pack.slice(0, 12)} holding blob ${hash.slice(0, 12)} is missing from ${this.location}`);
      throw e;
    }
    // A short read is a pack cut short; decoding what is there would only say "cannot be decompressed".
    if (stored.length < loc.length) {
      throw new IntegrityError(`pack ${loc.pack.slice(0, 12)} is truncated: it ends ${stored.length ? `at byte ${loc.offset + stored.length}` : `before byte ${loc.offset}`}, but blob ${hash.slice(0, 12)} is at bytes ${loc.offset}-${loc.offset + loc.length} (damaged pack)`);
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
      if (e instanceof WorkerThreadError) throw e; // drctl's own thread failed, not the data
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

  /**
   * Resolve `latest`, a full id or a unique id prefix (optionally among points named `name`).
   * `latest` without `name` is refused when points of several names exist: the newest point of
   * any name is rarely the one meant, and restoring the wrong machine's disk looks like success.
   */
  async resolvePoint(spec: string, name?: string): Promise<Point> {
    const { points } = await this.listPoints();
    const pool = name ? points.filter((p) => p.name === name) : points;
    const named = name ? ` named ${name}` : '';
    if (spec === 'latest') {
      const names = [...new Set(pool.map((p) => p.name))].sort();
      if (names.length > 1) {
        const shown = names.length > 8 ? `${names.slice(0, 8).join(', ')}, …` : names.join(', ');
        throw new UsageError(`latest is ambiguous in ${this.location}: points of ${names.length} names (${shown}) - give --name NAME`,
          `e.g. \`--name ${names[0]}\`; \`drctl points\` lists every point`);
      }
      // A safety point holds the state a restore replaced: restoring `latest` again must give
      // the newest backup, not undo the restore. Only an id names a safety point.
      const p = pool.filter((q) => !q.safetyFor).at(-1);
      if (!p) {
        const safety = pool.at(-1);
        throw new PointNotFoundError(`no recovery point${named} in ${this.location}${safety ? ` apart from safety points (taken before a restore)` : ''}`,
          safety ? `give the safety point by id, e.g. ${safety.id.slice(0, 12)}; \`drctl points\` lists them` : 'list them with `drctl points`');
      }
      return p;
    }
    if (spec.trim() === '') {
      throw new UsageError('no point given - the point is an empty string', 'give a point id (or a unique prefix of one), or `latest --name NAME`; `drctl points` lists them');
    }
    const matches = pool.filter((p) => p.id.startsWith(spec.toLowerCase()));
    if (matches.length === 1) return matches[0] as Point;
    if (matches.length === 0) {
      throw new PointNotFoundError(`no recovery point ${spec}${named} in ${this.location}`, 'list them with `drctl points`');
    }
    const shown = matches.slice(-5).reverse().map((p) => `${p.id.slice(0, Math.max(12, spec.length + 4))} ${p.name} ${p.time}`).join('; ');
    throw new PointNotFoundError(`point id prefix ${spec} is ambiguous: ${matches.length} points${named} match (${shown}${matches.length > 5 ? '; …' : ''})`,
      'give more characters of the id');
  }
}

/** Whether the target holds a repository's objects (points, index files or packs), whatever its config.json says. */
async function hasRepositoryObjects(target: TargetDriver): Promise<boolean> {
  try {
    for (const prefix of ['points/', 'index/', 'data/']) {
      for await (const _ of target.list(prefix)) return true;
    }
  } catch {
    // Not listable (a file given as --repo): not a repository, which the caller says.
  }
  return false;
}

/**
 * config.json of a repository is missing or damaged. It is written once, by `drctl init`, and
 * holds what the packs were cut and compressed with: a new one from init would not describe
 * the data, so the only fix is the file itself from a copy of this repository. `byContent`:
 * the folder is taken for a repository because of what else it holds.
 */
function damagedConfig(target: TargetDriver, what: string, byContent = false): UsageError {
  const [head, ...details] = what.split('\n');
  const subject = byContent
    ? `${target.location} looks like a drctl repository (it holds points, index files or packs), but its config.json ${head}`
    : `repository ${target.location}: config.json ${head}`;
  return new UsageError([subject, ...details].join('\n'),
    'put back config.json from a copy of this repository (a backup of the repository folder, or the spare node\'s copy); '
    + '`drctl init` cannot recreate it for data already stored; nothing was changed');
}
