/**
 * zstd through the native binding of zstd-napi, without its high-level module. That module is
 * five CommonJS files which an ES module import also scans for their exports: ~11 ms of start
 * for every thread that loaded it (the main thread and each codec worker, at the start of every
 * command), against ~4 ms for the binding alone. Contexts are made once per thread and reused:
 * making one cost more than compressing a 256 KiB chunk.
 */
import { createRequire } from 'node:module';

type Binding = typeof import('zstd-napi/binding.js');
type CCtx = InstanceType<Binding['CCtx']>;

export const zstd = createRequire(import.meta.url)('zstd-napi/binding.js') as Binding;

const cctxs = new Map<number, CCtx>();
let dctx: InstanceType<Binding['DCtx']> | undefined;

/** This thread's compression context for `level`. */
export function compressionContext(level: number): CCtx {
  let c = cctxs.get(level);
  if (!c) {
    c = new zstd.CCtx();
    c.setParameter(zstd.CParameter.compressionLevel, level);
    cctxs.set(level, c);
  }
  return c;
}

/** This thread's decompression context. */
export function decompressionContext(): InstanceType<Binding['DCtx']> {
  return (dctx ??= new zstd.DCtx());
}

/** One zstd frame of `data`, which records its content size (zstdDecompress relies on it). */
export function zstdCompress(data: Uint8Array, level: number): Buffer {
  const dst = Buffer.allocUnsafe(zstd.compressBound(data.length));
  const n = compressionContext(level).compress2(dst, data);
  // A frame much smaller than its bound gets a buffer of its own, as zstd-napi's compress() does.
  return n < 0.75 * dst.length ? Buffer.from(dst.subarray(0, n)) : dst.subarray(0, n);
}

/**
 * The content of one zstd frame that records its size: every frame drctl writes, and every
 * frame earlier builds wrote through zstd-napi. Throws when the frame is damaged.
 */
export function zstdDecompress(frame: Uint8Array): Buffer {
  const size = zstd.getFrameContentSize(frame);
  if (size === null) throw new Error('zstd frame does not record its size');
  const out = Buffer.allocUnsafe(size);
  if (decompressionContext().decompress(out, frame) !== size) throw new Error('zstd frame is shorter than its recorded size');
  return out;
}
