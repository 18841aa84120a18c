/**
 * Worker thread body for CodecPool: zstd compression with an incompressibility probe,
 * decompression + hash verification, and reading + chunking of source files for file-level
 * backup (codec-files.ts). Runs zstd-napi synchronously, off the main thread.
 */
import { parentPort } from 'node:worker_threads';
import { createHash } from 'node:crypto';
import { compressSync, decodeVerifiedSync } from './codec-sync.js';
import { dropFreeSlabs, encodeFiles, encodeWindow, type Lease } from './codec-files.js';
import { GcPacer } from '../runtime/gc.js';
import { nonZeroSpans, writeNonZeroSync } from '../runtime/sparse-write.js';
import type { CodecRequest, CodecReply, StoredRef } from './codec-pool.js';
import { inspectPack } from './pack.js';
import { readChunks } from './chunk-read.js';
import { openSync, readFullSync, closeSync, fstatSync } from '../runtime/fs.js';

/** One blob of a pack (or a range of it), decoded and verified into the scratch buffer, or why it is damaged. */
function decodeBlob(pack: Buffer, b: StoredRef): Buffer | string {
  if (b.offset + b.length > pack.length) return 'is cut short (truncated pack)';
  return decodeVerifiedSync(pack.subarray(b.offset, b.offset + b.length), b.codec, b.rawLength, b.hash, true);
}

/** Decode and re-hash one blob of a pack; keep nothing. */
function verdict(pack: Buffer, b: StoredRef): { ok: boolean; error?: string } {
  const r = decodeBlob(pack, b);
  return typeof r === 'string' ? { ok: false, error: r } : { ok: true };
}

/** The reply to a request for a pack file that does not exist. */
function missingFile(id: number): CodecReply {
  return { id, ok: true, data: new Uint8Array(0), codec: 0, file: { missing: true, bytes: 0 } };
}

/** Reply fields for stored bytes: a lent buffer goes with its lease; a fresh one counts towards this thread's collections. */
function storedBytes(r: { data: Buffer; lease?: Lease }): { data: Buffer; lease?: Lease } {
  if (r.lease) return { data: r.data, lease: r.lease };
  pacer.moved(r.data.byteLength); // its memory goes once both threads drop it
  return { data: r.data };
}

/** One buffer per worker for packs it reads itself, grown to the largest pack seen. */
let packBuffer = Buffer.allocUnsafeSlow(0);

/**
 * A file, or `length` bytes of it from `offset`, into packBuffer (valid until the next call;
 * shorter when the file is), or undefined when the file does not exist.
 */
function readInto(path: string, offset = 0, length?: number): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const size = length ?? fstatSync(fd).size - offset;
    if (packBuffer.length < size) packBuffer = Buffer.allocUnsafeSlow(size + (size >> 3));
    return packBuffer.subarray(0, readFullSync(fd, packBuffer, 0, size, offset));
  } finally {
    closeSync(fd);
  }
}

/** A file this worker reads itself failed: the caller names it (a source or a target) and says what to do. */
function readFailure(id: number, e: unknown): CodecReply {
  return { id, ok: false, error: (e as Error).message, code: (e as NodeJS.ErrnoException).code };
}

type Op<K extends CodecRequest['op']> = Extract<CodecRequest, { op: K }>;

function handle(req: CodecRequest): CodecReply {
  switch (req.op) {
    case 'read-chunks':
      try {
        const r = readChunks(req);
        return { id: req.id, ok: true, ...storedBytes(r), codec: 0, chunks: r.results };
      } catch (e) {
        return readFailure(req.id, e);
      }
    case 'encode-files': {
      const r = encodeFiles(req.paths, req.sizes, req.level);
      return { id: req.id, ok: true, ...storedBytes(r), codec: 0, blobs: r.blobs };
    }
    case 'encode-window': {
      const r = encodeWindow(req.fd, req.pos, req.windowBytes, req.cdc, req.level);
      if ('error' in r) return { id: req.id, ok: true, data: new Uint8Array(0), codec: 0, fsError: r.error };
      return { id: req.id, ok: true, ...storedBytes(r), codec: 0, blobs: r.blobs, nextPos: r.nextPos, eof: r.eof };
    }
    case 'decode-write':
      return decodeWrite(req);
    case 'compress-many':
      return compressMany(req);
    case 'verify-file':
      return verifyFile(req);
    case 'verify-many': {
      const data = Buffer.from(req.data, req.offset, req.length);
      const results = req.blobs.map((b) => verdict(data, b));
      return { id: req.id, ok: true, data: new Uint8Array(0), codec: 0, results, pack: inspectPack(data) };
    }
    case 'hash': {
      const data = Buffer.from(req.data, req.offset, req.length);
      return { id: req.id, ok: true, data, codec: 0, hash: createHash('sha256').update(data).digest('hex') };
    }
    case 'compress': {
      const o = compressSync(Buffer.from(req.data, req.offset, req.length), req.level);
      return { id: req.id, ok: true, data: o.data, codec: o.codec };
    }
    case 'decode': {
      const r = decodeVerifiedSync(Buffer.from(req.data, req.offset, req.length), req.codec, req.rawLength, req.hash);
      if (typeof r === 'string') return { id: req.id, ok: false, error: r };
      return { id: req.id, ok: true, data: r, codec: 0 };
    }
    default: {
      const unknown = req as { id: number; op: string };
      return { id: unknown.id, ok: false, error: `unknown codec request ${unknown.op}` };
    }
  }
}

/** Decode blobs of a pack range (read here from the file, or handed over) and write them into `fd` where they belong. */
function decodeWrite(req: Op<'decode-write'>): CodecReply {
  let stored: Buffer | undefined;
  try {
    stored = req.file ? readInto(req.file.path, req.file.offset, req.file.length) : Buffer.from(req.data as ArrayBufferLike, req.offset, req.length);
  } catch (e) {
    return readFailure(req.id, e);
  }
  if (!stored) return missingFile(req.id);
  const pack = stored;
  let written = 0;
  try {
    const results = req.blobs.map((b) => {
      const r = decodeBlob(pack, b);
      if (typeof r === 'string') return { ok: false, error: r };
      const spans = nonZeroSpans(r);
      for (const base of b.at) written += writeNonZeroSync(req.fd, r, base, req.limit, spans);
      return { ok: true };
    });
    return { id: req.id, ok: true, data: new Uint8Array(0), codec: 0, results, written };
  } catch (e) {
    // Writing the destination failed (full, failing): not the repository, whose errors are read errors.
    return { id: req.id, ok: false, error: (e as Error).message, code: (e as NodeJS.ErrnoException).code, writing: true };
  }
}

/** Compress many small blobs handed over in one buffer; their outputs go back joined in one buffer. */
function compressMany(req: Op<'compress-many'>): CodecReply {
  const all = Buffer.from(req.data, req.offset, req.length);
  const outs: { data: Buffer; codec: number }[] = [];
  let at = 0;
  for (const n of req.sizes) {
    outs.push(compressSync(all.subarray(at, at + n), req.level));
    at += n;
  }
  const joined = Buffer.allocUnsafeSlow(outs.reduce((a, o) => a + o.data.length, 0));
  let off = 0;
  for (const o of outs) off += o.data.copy(joined, off);
  return { id: req.id, ok: true, data: joined, codec: 0, outputs: outs.map((o) => [o.data.length, o.codec]) };
}

/** Read a pack file and verify its blobs, its header and the id its bytes give (check --read-data). */
function verifyFile(req: Op<'verify-file'>): CodecReply {
  let data: Buffer | undefined;
  try {
    data = readInto(req.path);
  } catch (e) {
    return readFailure(req.id, e);
  }
  if (!data) return missingFile(req.id);
  const pack = data;
  const results = req.blobs.map((b) => verdict(pack, b));
  return { id: req.id, ok: true, data: new Uint8Array(0), codec: 0, results, pack: inspectPack(pack), file: { missing: false, bytes: pack.length } };
}

// Every 16 MiB (about one pack of check --read-data): 2026-12-01, check of the 2 GiB bench
// image + 30k-file tree 300 → 268 MiB peak RSS, image backup 204 → 175–190 MiB, no slower.
const pacer = new GcPacer(16 * 1024 * 1024);

/** After this long without a request, slabs not lent out are dropped (the daemon idles for hours). */
const IDLE_SLABS_MS = 10_000;
let idle: NodeJS.Timeout | undefined;

parentPort?.on('message', (req: CodecRequest) => {
  clearTimeout(idle);
  idle = setTimeout(dropFreeSlabs, IDLE_SLABS_MS).unref();
  pacer.moved('data' in req && req.data ? req.data.byteLength : 0);
  let reply: CodecReply;
  try {
    reply = handle(req);
  } catch (e) {
    // A reply, not a dead thread: a thread that threw here would end, and requests sent to it
    // later would wait forever (the pool replaces a thread that ends, runtime/worker-pool.ts).
    reply = { id: req.id, ok: false, error: (e as Error).message ?? String(e), code: (e as NodeJS.ErrnoException).code };
  }
  if (reply.ok) {
    const b = reply.data;
    // Transfer when the buffer owns its memory (always for what we were sent); else it is copied.
    const own = b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && !isShared(b);
    parentPort?.postMessage(reply, own ? [b.buffer as ArrayBuffer] : []);
  } else {
    parentPort?.postMessage(reply);
  }
});

function isShared(b: Uint8Array): boolean {
  return b.buffer instanceof SharedArrayBuffer;
}
