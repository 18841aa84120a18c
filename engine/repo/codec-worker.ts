/**
 * Worker thread body for CodecPool: zstd compression with an incompressibility probe, and
 * decompression + hash verification. Runs zstd-napi synchronously, off the main thread.
 */
import { parentPort } from 'node:worker_threads';
import { createHash } from 'node:crypto';
import { Compressor, Decompressor } from 'zstd-napi';
import type { CodecRequest, CodecReply } from './codec-pool.js';

const PROBE_BYTES = 8 * 1024;

// Contexts are reused: creating one per call cost more than compressing a 256 KiB chunk.
const compressors = new Map<number, Compressor>();
const decompressor = new Decompressor();

function compressor(level: number): Compressor {
  let c = compressors.get(level);
  if (!c) {
    c = new Compressor();
    c.setParameters({ compressionLevel: level });
    compressors.set(level, c);
  }
  return c;
}

/** Random or already-compressed data: two small samples that do not compress → store raw. */
function looksIncompressible(raw: Buffer): boolean {
  if (raw.length < 8 * PROBE_BYTES) return false;
  const mid = raw.length >> 1;
  for (const s of [raw.subarray(0, PROBE_BYTES), raw.subarray(mid, mid + PROBE_BYTES)]) {
    if (compressor(1).compress(s).length < s.length * 0.95) return false;
  }
  return true;
}

function handle(req: CodecRequest): CodecReply {
  if (req.op === 'hash-parts') {
    const h = createHash('sha256');
    const parts = req.parts.map((p) => Buffer.from(p.data, p.offset, p.length));
    for (const p of parts) h.update(p);
    return { id: req.id, ok: true, data: new Uint8Array(0), codec: 0, hash: h.digest('hex'), parts };
  }
  const data = Buffer.from(req.data, req.offset, req.length);
  if (req.op === 'hash') {
    return { id: req.id, ok: true, data, codec: 0, hash: createHash('sha256').update(data).digest('hex') };
  }
  if (req.op === 'compress') {
    if (!looksIncompressible(data)) {
      const z = compressor(req.level).compress(data);
      if (z.length < data.length * 0.97) return { id: req.id, ok: true, data: z, codec: 1 };
    }
    return { id: req.id, ok: true, data, codec: 0 };
  }
  let raw: Buffer;
  try {
    raw = req.codec === 1 ? decompressor.decompress(data) : req.codec === 0 ? data : Buffer.alloc(0);
    if (req.codec !== 0 && req.codec !== 1) throw new Error(`unknown codec ${req.codec}`);
  } catch (e) {
    return { id: req.id, ok: false, error: `cannot be decompressed (${(e as Error).message})` };
  }
  if (raw.length !== req.rawLength || createHash('sha256').update(raw).digest('hex') !== req.hash) {
    return { id: req.id, ok: false, error: 'does not match its hash' };
  }
  return { id: req.id, ok: true, data: raw, codec: 0 };
}

parentPort?.on('message', (req: CodecRequest) => {
  const reply = handle(req);
  if (reply.ok && reply.parts) {
    parentPort?.postMessage(reply, reply.parts.map((p) => p.buffer as ArrayBuffer));
  } else if (reply.ok) {
    const b = reply.data;
    // Transfer when the buffer owns its memory (always for what we were sent); else it is copied.
    const own = b.byteOffset === 0 && b.byteLength === b.buffer.byteLength;
    parentPort?.postMessage(reply, own ? [b.buffer as ArrayBuffer] : []);
  } else {
    parentPort?.postMessage(reply);
  }
});
