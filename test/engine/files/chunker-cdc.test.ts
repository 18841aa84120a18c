import test from 'ava';
import { decidedCuts, findCut, type CdcParams } from '../../../engine/repo/chunker-cdc.js';
import { bytes } from './fixtures.js';

const P: CdcParams = { minBytes: 2048, avgBytes: 8192, maxBytes: 32768, seed: 7 };

function cutAll(buf: Buffer, p: CdcParams): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < buf.length;) {
    const n = findCut(buf.subarray(off), p);
    out.push(buf.subarray(off, off + n));
    off += n;
  }
  return out;
}

function referenceCuts(buf: Buffer, p: CdcParams): number[] {
  // Must mirror the gear table and masks of chunker-cdc.ts.
  const gear = new Int32Array(256);
  let s = (p.seed ^ 0x9e3779b9) | 0;
  for (let i = 0; i < 256; i++) {
    s = (s + 0x9e3779b9) | 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    gear[i] = z ^ (z >>> 16);
  }
  const bits = Math.round(Math.log2(p.avgBytes));
  const maskS = (~0 << (32 - (bits + 1))) | 0;
  const maskL = (~0 << (32 - (bits - 1))) | 0;
  const sizes: number[] = [];
  let start = 0;
  while (start < buf.length) {
    const n = buf.length - start;
    let len = Math.min(n, p.maxBytes);
    if (n > p.minBytes) {
      let h = 0;
      for (let i = p.minBytes; i < Math.min(n, p.maxBytes); i++) {
        h = ((h << 1) + gear[buf[start + i]!]!) | 0;
        if ((h & (i < p.avgBytes ? maskS : maskL)) === 0) {
          len = i + 1;
          break;
        }
      }
    }
    sizes.push(len);
    start += len;
  }
  return sizes;
}

test('chunks stay within [min, max] (except the last) and concatenate to the input', (t) => {
  const data = bytes(1_000_000, 1);
  const chunks = cutAll(data, P);
  t.true(chunks.length > 10);
  for (const c of chunks.slice(0, -1)) {
    t.true(c.length >= P.minBytes && c.length <= P.maxBytes, `chunk of ${c.length}`);
  }
  t.true(chunks.at(-1)!.length <= P.maxBytes);
  t.true(Buffer.concat(chunks).equals(data));
});

test('the word-at-a-time scan cuts exactly where the byte-by-byte reference does', (t) => {
  const data = bytes(600_000, 2);
  for (const off of [0, 1, 2, 3]) {
    const buf = data.subarray(off); // unaligned starts take the byte path first
    t.deepEqual(cutAll(buf, P).map((c) => c.length), referenceCuts(buf, P), `offset ${off}`);
  }
});

test('all-zero data is cut at maxBytes', (t) => {
  const chunks = cutAll(Buffer.alloc(100_000), P);
  t.deepEqual(chunks.map((c) => c.length), [32768, 32768, 32768, 100_000 - 3 * 32768]);
});

test('decidedCuts, resumed at the last cut of each window, cuts where one pass over the input does', (t) => {
  const inputs = [bytes(700_000, 7), Buffer.alloc(200_000), Buffer.concat([bytes(100_000, 8), Buffer.alloc(100_000), bytes(100_000, 9)])];
  for (const [k, data] of inputs.entries()) {
    const expected = cutAll(data, P).map((c) => c.length);
    for (const window of [P.maxBytes, P.maxBytes + 1, 2 * P.maxBytes, 100_000]) {
      const got: number[] = [];
      for (let pos = 0; pos < data.length;) {
        const end = Math.min(pos + window, data.length);
        const cuts = decidedCuts(data.subarray(pos, end), P, end === data.length);
        t.true(cuts.length > 0, 'a window of maxBytes always holds a decided cut');
        got.push(...cuts);
        pos += cuts.reduce((a, b) => a + b, 0);
      }
      t.deepEqual(got, expected, `input ${k}, windows of ${window}`);
    }
  }
});

test('decidedCuts leaves an undecided tail for the next window, and cuts it at the end of the input', (t) => {
  const data = bytes(P.maxBytes, 10);
  const all = cutAll(data, P).map((c) => c.length);
  t.true(all.length > 1);
  // Short of maxBytes the last piece could still grow: it waits, unless this is the end.
  const part = data.subarray(0, P.maxBytes - 1);
  t.deepEqual(decidedCuts(part, P, true).reduce((a, b) => a + b, 0), part.length);
  const decided = decidedCuts(part, P, false);
  t.true(decided.reduce((a, b) => a + b, 0) < part.length);
  t.deepEqual(decided, all.slice(0, decided.length));
  t.deepEqual(decidedCuts(Buffer.alloc(0), P, true), []);
});

test('an insertion near the start changes only the first chunks; boundaries resync', (t) => {
  const data = bytes(1_000_000, 5);
  const edited = Buffer.concat([data.subarray(0, 100), Buffer.from('inserted bytes'), data.subarray(100)]);
  const hashes = (b: Buffer) => cutAll(b, P).map((c) => c.toString('base64'));
  const before = hashes(data);
  const after = new Set(hashes(edited));
  const changed = before.filter((h) => !after.has(h)).length;
  t.true(changed >= 1 && changed <= 2, `${changed} of ${before.length} chunks changed`);
});

test('the seed changes the boundaries; the same seed reproduces them', (t) => {
  const data = bytes(400_000, 6);
  const a = cutAll(data, P).map((c) => c.length);
  t.deepEqual(cutAll(data, { ...P }).map((c) => c.length), a);
  t.notDeepEqual(cutAll(data, { ...P, seed: 8 }).map((c) => c.length), a);
});

test('invalid parameters are refused', (t) => {
  t.throws(() => findCut(Buffer.alloc(10), { minBytes: 0, avgBytes: 8, maxBytes: 16, seed: 0 }), { instanceOf: RangeError });
  t.throws(() => findCut(Buffer.alloc(10), { minBytes: 64, avgBytes: 32, maxBytes: 128, seed: 0 }), { instanceOf: RangeError });
});
