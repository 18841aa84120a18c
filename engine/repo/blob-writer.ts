/**
 * Writes blobs for one backup session: dedup against the index (and against blobs already
 * written or in flight in this session), compress, append to a pack, seal packs at ~16 MiB
 * and upload them while the next one fills. `finish()` flushes the last pack and writes one
 * index file for every pack of the session — only after all packs are durable.
 */
import { Keys, type RepoConfig } from './format.js';
import { encode, hashOwned } from './codec.js';
import { packTail, type BlobEntry } from './pack.js';
import { PackStream, SegmentPool } from './pack-buffer.js';
import { codecPool } from './codec-pool.js';
import type { BlobIndex } from './index-store.js';
import { CompactEntries, encodeIndexFile } from './index-codec.js';
import type { TargetDriver } from '../../targets/types.js';

export interface WriteStats {
  blobsNew: number;
  blobsReused: number;
  rawBytesNew: number;
  storedBytesNew: number;
  packsWritten: number;
}

const MAX_PACKS_IN_FLIGHT = 2;
/** Blobs below this size are compressed in batches. */
const SMALL_BLOB_BYTES = 64 * 1024;
const BATCH_BLOBS = 256;
const BATCH_BYTES = 2 * 1024 * 1024;

export class BlobWriter {
  readonly stats: WriteStats = { blobsNew: 0, blobsReused: 0, rawBytesNew: 0, storedBytesNew: 0, packsWritten: 0 };
  private readonly segments = new SegmentPool();
  /** The pack being filled (its temp object exists once the first blob is appended). */
  private pack: PackStream | undefined;
  private entries: BlobEntry[] = [];
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly uploads = new Set<Promise<void>>();
  /** The packs this writer stored, for its index file. */
  private readonly written: { id: string; blobs: CompactEntries }[] = [];
  private failure: unknown;
  private batch: { raw: Buffer; resolve: (r: { data: Buffer; codec: number }) => void; reject: (e: unknown) => void }[] = [];
  private batchBytes = 0;
  private batchScheduled = false;
  private sealing: Promise<void> | undefined;

  constructor(
    private readonly target: TargetDriver,
    private readonly index: BlobIndex,
    private readonly config: RepoConfig,
  ) {}

  /** Hash `raw` and store it unless the repository already has it; returns the hash (hex). Takes ownership of `raw`. */
  async putRaw(raw: Buffer): Promise<string> {
    const { hash, data } = await hashOwned(raw);
    await this.putHashed(hash, data);
    return hash;
  }

  /**
   * Store a blob whose hash the caller already computed. Idempotent per hash. Takes ownership
   * of `raw` (it may be handed to a worker thread): do not use it afterwards.
   */
  async putHashed(hash: string, raw: Buffer): Promise<void> {
    return this.dedup(hash, () => this.store(hash, raw));
  }

  /**
   * Store a blob a worker already hashed and compressed (file-level backup), unless the
   * repository already has it; the same dedup as putHashed, so identical content seen twice
   * (even in one batch) is stored once. `data` may be a view into a larger buffer; it is
   * copied into the pack, so once the returned promise settles the caller may reuse it.
   */
  async putEncoded(hash: string, rawLength: number, data: Buffer, codec: number): Promise<void> {
    return this.dedup(hash, () => this.append(hash, data, rawLength, codec));
  }

  /** Run `store` unless the repository has the blob or this session is storing it already. */
  private dedup(hash: string, store: () => Promise<void>): Promise<void> {
    this.throwIfFailed();
    if (this.index.has(hash)) {
      this.stats.blobsReused++;
      return Promise.resolve();
    }
    const pending = this.inFlight.get(hash);
    if (pending) {
      this.stats.blobsReused++;
      return pending;
    }
    const p = store();
    this.inFlight.set(hash, p);
    return p;
  }

  /** Whether the repository or this session already has the blob (stored or being stored). */
  has(hash: string): boolean {
    return this.index.has(hash) || this.inFlight.has(hash);
  }

  /**
   * Append a blob exactly as it is stored elsewhere (already compressed and verified): prune
   * copies the live blobs of a mostly-unused pack this way. No dedup: the blob is indexed, in
   * the pack that is about to go.
   */
  async copyStored(hash: string, data: Buffer, rawLength: number, codec: number): Promise<void> {
    this.throwIfFailed();
    await this.append(hash, data, rawLength, codec);
  }

  private async store(hash: string, raw: Buffer): Promise<void> {
    const rawLength = raw.length;
    const { data, codec } = rawLength < SMALL_BLOB_BYTES ? await this.encodeBatched(raw) : await encode(raw, this.config.compression.level);
    await this.append(hash, data, rawLength, codec);
  }

  /** Add stored bytes to the current pack once there is room; seal it when full. */
  private async append(hash: string, data: Buffer, rawLength: number, codec: number): Promise<void> {
    await this.room();
    this.throwIfFailed();
    const pack = (this.pack ??= new PackStream(this.target.create('a new pack'), this.segments, (e) => {
      this.failure ??= e;
    }));
    this.entries.push([hash, pack.bytes, data.length, rawLength, codec]);
    pack.append(data);
    this.stats.blobsNew++;
    this.stats.rawBytesNew += rawLength;
    this.stats.storedBytesNew += data.length;
    if (pack.bytes >= this.config.packTargetBytes) await this.seal();
  }

  /**
   * Small blobs (most files of a file tree) go to the workers in batches: one message per
   * batch instead of one per blob, which on a 2-core VM costs ~50 µs of main thread each.
   * A batch leaves when full or at the next turn of the event loop, so nothing waits for it.
   */
  private encodeBatched(raw: Buffer): Promise<{ data: Buffer; codec: number }> {
    return new Promise((resolve, reject) => {
      this.batch.push({ raw, resolve, reject });
      this.batchBytes += raw.length;
      if (this.batch.length >= BATCH_BLOBS || this.batchBytes >= BATCH_BYTES) this.flushBatch();
      else if (!this.batchScheduled) {
        this.batchScheduled = true;
        setImmediate(() => {
          this.batchScheduled = false;
          this.flushBatch();
        });
      }
    });
  }

  private flushBatch(): void {
    const batch = this.batch;
    if (batch.length === 0) return;
    this.batch = [];
    this.batchBytes = 0;
    codecPool().compressMany(batch.map((b) => b.raw), this.config.compression.level).then(
      (out) => batch.forEach((b, k) => b.resolve(out[k] as { data: Buffer; codec: number })),
      (e: unknown) => batch.forEach((b) => b.reject(e)),
    );
  }

  /**
   * Wait while a sealed pack waits for an upload slot, or while the segments written so far
   * are not. Without this gate, with a slow target every blob in flight could fill and seal a
   * pack of its own while the uploads lag behind: measured 460 MiB peak RSS writing onto an
   * iSCSI volume instead of ~200 MiB.
   */
  private async room(): Promise<void> {
    while (this.sealing) await this.sealing;
    await this.segments.room();
  }

  private seal(): Promise<void> {
    this.sealing ??= this.sealCurrent().finally(() => {
      this.sealing = undefined;
    });
    return this.sealing;
  }

  private async sealCurrent(): Promise<void> {
    const pack = this.pack;
    if (!pack) return;
    const entries = this.entries;
    this.pack = undefined;
    this.entries = [];
    while (this.uploads.size >= MAX_PACKS_IN_FLIGHT) await Promise.race(this.uploads);
    if (this.failure !== undefined) {
      await pack.abort();
      throw this.failure;
    }
    const upload = (async () => {
      const id = await pack.finish(packTail(entries), Keys.pack);
      const blobs = CompactEntries.of(entries);
      this.written.push({ id, blobs });
      this.stats.packsWritten++;
      // From now on the in-memory index answers for these blobs; the index *file* that makes
      // them visible to other processes is written by finish(), after every pack is durable.
      this.index.addPack(id, blobs);
      for (const [hash] of entries) this.inFlight.delete(hash);
    })().catch(async (e: unknown) => {
      this.failure ??= e;
      await pack.abort();
    });
    this.uploads.add(upload);
    void upload.finally(() => this.uploads.delete(upload));
  }

  /**
   * Stop after a failure or an interruption: the pack being filled is dropped (its temp object
   * removed) and the packs being sealed are let finish. Packs stored stay, unreferenced until
   * an index names them (check reports them, prune removes them). Never throws.
   */
  async abandon(): Promise<void> {
    this.failure ??= new Error('the backup stopped');
    const pack = this.pack;
    this.pack = undefined;
    await Promise.all([pack?.abort(), ...this.uploads]);
  }

  /**
   * Wait for `work` (what stores the session's blobs), then finish(); if either fails,
   * abandon() and rethrow. Returns what `work` gave.
   */
  async complete<T>(work: Promise<T>): Promise<T> {
    try {
      const result = await work;
      await this.finish();
      return result;
    } catch (e) {
      await this.abandon();
      throw e;
    }
  }

  /** Seal the last pack, wait for every upload, then write the index file. Returns its id (or undefined if nothing new). */
  async finish(): Promise<string | undefined> {
    await Promise.all(this.inFlight.values()).catch(() => undefined);
    this.throwIfFailed();
    await this.room();
    await this.sealCurrent();
    await Promise.all(this.uploads);
    this.throwIfFailed();
    if (this.written.length === 0) return undefined;
    const { id, bytes } = await encodeIndexFile(this.written);
    await this.target.put(Keys.index(id), bytes);
    this.index.files.add(id);
    return id;
  }

  /** Ids of the packs this writer has stored so far. */
  packsWritten(): string[] {
    return this.written.map((w) => w.id);
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}
