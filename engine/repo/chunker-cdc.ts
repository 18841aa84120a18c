/**
 * Content-defined chunking for files, FastCDC style (Xia et al., USENIX ATC 2016):
 *
 *   - gear hash: h = (h << 1) + GEAR[byte] (32-bit). Bit k of h depends on the last k+1 bytes,
 *     so the top bits see a 32-byte window and a cut depends only on nearby content;
 *   - cut-point skipping: the first `minBytes` of a chunk are never hashed;
 *   - normalized chunking: a stricter mask (log2(avg)+1 bits) before `avgBytes`, a looser one
 *     (log2(avg)-1 bits) after it, which pulls chunk sizes towards the average;
 *   - a hard cut at `maxBytes`.
 *
 * Boundaries depend only on content and the parameters (the gear table comes from `seed`),
 * so an insertion shifts the boundaries of the chunk it lands in and the next one or two
 * before they resync, and everything after dedups.
 */
export interface CdcParams {
  minBytes: number;
  avgBytes: number;
  maxBytes: number;
  seed: number;
}

interface Prepared {
  min: number;
  avg: number;
  max: number;
  maskS: number;
  maskL: number;
  gear: Int32Array;
}

const prepared = new Map<string, Prepared>();

function prepare(p: CdcParams): Prepared {
  const key = `${p.minBytes}/${p.avgBytes}/${p.maxBytes}/${p.seed}`;
  let r = prepared.get(key);
  if (r) return r;
  if (!(p.minBytes > 0 && p.minBytes <= p.avgBytes && p.avgBytes <= p.maxBytes)) {
    throw new RangeError(`invalid chunking parameters min=${p.minBytes} avg=${p.avgBytes} max=${p.maxBytes}`);
  }
  const bits = Math.round(Math.log2(p.avgBytes));
  r = {
    min: p.minBytes,
    avg: p.avgBytes,
    max: p.maxBytes,
    maskS: topBits(Math.min(bits + 1, 31)),
    maskL: topBits(Math.max(bits - 1, 1)),
    gear: gearTable(p.seed),
  };
  prepared.set(key, r);
  return r;
}

/** A mask of the `n` most significant bits of a 32-bit word (as a signed int). */
function topBits(n: number): number {
  return (~0 << (32 - n)) | 0;
}

/** 256 pseudo-random words from splitmix32, so the table is fixed for a given seed. */
function gearTable(seed: number): Int32Array {
  const t = new Int32Array(256);
  let s = (seed ^ 0x9e3779b9) | 0;
  for (let i = 0; i < 256; i++) {
    s = (s + 0x9e3779b9) | 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    t[i] = z ^ (z >>> 16);
  }
  return t;
}

/**
 * Length of the first chunk of `buf`, treating `buf` as all the data that follows the previous
 * cut. With fewer than `maxBytes` bytes and no cut found it returns `buf.length`, so callers
 * streaming data must pass at least `maxBytes` bytes unless they are at the end of the input.
 */
export function findCut(buf: Uint8Array, params: CdcParams): number {
  const p = prepare(params);
  return cut(buf, 0, buf.length, p);
}

/**
 * Lengths of the chunks at the start of `buf` (the data right after a cut) whose boundaries are
 * already decided: those a longer input could not move. A cut found before the end of `buf`
 * is final (the scan stops at the first match and sees nothing past it), and so is a cut at
 * `maxBytes`; the undecided rest is cut again once more data follows. With `eof`, `buf` is the
 * end of the input and every byte is cut. Lets a reader that cannot keep the undecided tail
 * (a worker reading one window of a file) resume at the last cut and get the boundaries one
 * pass over the whole input gives.
 */
export function decidedCuts(buf: Uint8Array, params: CdcParams, eof: boolean): number[] {
  const p = prepare(params);
  const lengths: number[] = [];
  for (let start = 0; start < buf.length;) {
    const n = buf.length - start;
    const len = cut(buf, start, buf.length, p);
    if (len === n && n < p.max && !eof) break;
    lengths.push(len);
    start += len;
  }
  return lengths;
}

function cut(buf: Uint8Array, start: number, end: number, p: Prepared): number {
  const n = end - start;
  if (n <= p.min) return n;
  const limit = start + (n < p.max ? n : p.max);
  const normal = start + (n < p.avg ? n : p.avg);
  const from = start + p.min;
  // The gear hash at position i depends only on the 32 bytes before it, so the second phase
  // can re-derive its starting state from those bytes instead of carrying it over.
  let at = scan(buf, from, from, normal, p.maskS, p.gear);
  if (at < 0) at = scan(buf, Math.max(from, normal - 32), normal, limit, p.maskL, p.gear);
  return (at < 0 ? limit : at) - start;
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Hash bytes [warm, to) and return the index just past the first position >= `from` where
 * (h & mask) == 0, or -1. Bytes are fetched four at a time through a Uint32Array view when
 * aligned: in V8 that halves the cost per byte compared with indexing the Uint8Array (measured
 * ~450 → ~900 MB/s), because it saves a bounds-checked load per byte.
 */
function scan(buf: Uint8Array, warm: number, from: number, to: number, mask: number, gear: Int32Array): number {
  let h = 0;
  let i = warm;
  for (; i < from; i++) h = ((h << 1) + gear[buf[i] as number]!) | 0;
  const base = buf.byteOffset;
  const alignedFrom = littleEndian ? Math.min(to, i + ((4 - ((base + i) & 3)) & 3)) : to;
  for (; i < alignedFrom; i++) {
    h = ((h << 1) + gear[buf[i] as number]!) | 0;
    if ((h & mask) === 0) return i + 1;
  }
  const words = (to - i) >> 2;
  if (words > 0) {
    const u32 = new Uint32Array(buf.buffer, base + i, words);
    for (let j = 0; j < words; j++) {
      const w = u32[j]!;
      h = ((h << 1) + gear[w & 255]!) | 0;
      if ((h & mask) === 0) return i + (j << 2) + 1;
      h = ((h << 1) + gear[(w >>> 8) & 255]!) | 0;
      if ((h & mask) === 0) return i + (j << 2) + 2;
      h = ((h << 1) + gear[(w >>> 16) & 255]!) | 0;
      if ((h & mask) === 0) return i + (j << 2) + 3;
      h = ((h << 1) + gear[w >>> 24]!) | 0;
      if ((h & mask) === 0) return i + (j << 2) + 4;
    }
    i += words << 2;
  }
  for (; i < to; i++) {
    h = ((h << 1) + gear[buf[i] as number]!) | 0;
    if ((h & mask) === 0) return i + 1;
  }
  return -1;
}
