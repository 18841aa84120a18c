/**
 * A target stores a repository's objects under string keys ("config.json", "data/ab/<id>",
 * "index/<id>", "points/<id>.json", "locks/<id>.json"). The repository engine only talks to
 * this interface, so a local folder, a mounted iSCSI LUN or (later) an object store are
 * interchangeable.
 */
export interface ByteRange {
  offset: number;
  length: number;
}

export interface BlobInfo {
  key: string;
  sizeBytes: number;
}

export interface TargetDriver {
  /** Human-readable location used in every message ("/srv/drctl", "iscsi://…"). */
  readonly location: string;
  readonly capabilities: { atomicReplace: boolean; maxConnections: number };
  /**
   * Store an object atomically and durably: after the promise resolves the object survives a
   * crash; a crash before leaves no object under `key` (temp leftovers only). Objects are
   * immutable except where `replace` is set (locks, config). Throws TargetFullError on ENOSPC.
   * `data` may be given in parts (written in order, as one object) to avoid a copy.
   */
  put(key: string, data: Uint8Array | readonly Uint8Array[], opts?: { replace?: boolean }): Promise<void>;
  /**
   * Start an object whose key is known only once all of it is written (a pack is named by the
   * hash of its bytes). Bytes go to the volume as they are written, so the caller never holds
   * the whole object in memory. `put` has the same guarantees. `what` names the object in
   * error messages ("a new pack").
   */
  create(what?: string): ObjectUpload;
  /** Whole object or a byte range. Throws BlobNotFoundError when missing. Short reads are returned as-is. */
  get(key: string, range?: ByteRange): Promise<Buffer>;
  /** Objects whose key starts with `prefix`, in no particular order; temp files are never listed. */
  list(prefix: string): AsyncIterable<BlobInfo>;
  /** Remove an object. Throws BlobNotFoundError when it does not exist. */
  remove(key: string): Promise<void>;
  /**
   * Delete temp files of writes that were killed before they finished (older than
   * `olderThanMs`, so a write in progress is never touched). Prune calls it.
   */
  sweepTemp?(olderThanMs: number): Promise<{ files: number; bytes: number }>;
  /** Release the target (an iSCSI volume's last user detaches it). Called once, after the last use. */
  close(): Promise<void>;
  /**
   * The file holding `key`, when the target is a plain local folder: worker threads then read
   * it themselves (check --read-data) instead of receiving its bytes from the main thread.
   */
  localPath?(key: string): string;
  /** With localPath: the error to report when another thread failed to read that file (`e` carries the errno `code`). */
  readError?(key: string, e: unknown): Error;
  /** Free space on the volume, when the target can tell (the free-space guard uses it). */
  freeBytes?(): Promise<number>;
}

/** An object being written (TargetDriver.create). */
export interface ObjectUpload {
  /**
   * Append `parts` to the object. Calls may overlap; the bytes land in call order. Resolves
   * once the bytes are written (not yet durable): the caller may then reuse their memory.
   */
  write(parts: readonly Uint8Array[]): Promise<void>;
  /**
   * Wait for every write, make the object durable and visible under `key`. Without `replace`,
   * an object already under `key` is kept (content-addressed keys: it holds the same bytes).
   * On failure nothing is left under `key`.
   */
  commit(key: string, opts?: { replace?: boolean }): Promise<void>;
  /** Drop what was written (after a failure or an interruption). Never throws. */
  abort(): Promise<void>;
}

export class BlobNotFoundError extends Error {
  readonly code = 'BLOB_NOT_FOUND';
  constructor(readonly key: string, location: string) {
    super(`object ${key} not found in ${location}`);
  }
}

export interface TargetFactory<C> {
  readonly type: string;
  open(config: C): Promise<TargetDriver>;
}
