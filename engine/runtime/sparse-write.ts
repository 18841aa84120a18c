/**
 * Writing decoded chunks so that all-zero 4 KiB blocks stay holes: image restores and the
 * chunks of large files both go into files that were sized first (ftruncate), so skipping
 * zero blocks gives the same bytes on read and keeps sparse data sparse on disk.
 */
import { writeFullSync } from './fs.js';

const BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/** Spans of `raw` that are not all-zero 4 KiB blocks. */
export function nonZeroSpans(raw: Buffer): [number, number][] {
  const spans: [number, number][] = [];
  for (let at = 0; at < raw.length; at += BLOCK) {
    const end = Math.min(at + BLOCK, raw.length);
    if (raw.compare(ZERO_BLOCK, 0, end - at, at, end) === 0) continue;
    const last = spans.at(-1);
    if (last && last[1] === at) last[1] = end;
    else spans.push([at, end]);
  }
  return spans;
}

/**
 * Write the non-zero blocks of `raw` into `fd` at `base` (never at or past `limit`).
 * Returns the bytes written. `spans` may be passed when the same chunk goes to many places.
 */
export function writeNonZeroSync(fd: number, raw: Buffer, base: number, limit: number, spans = nonZeroSpans(raw)): number {
  let written = 0;
  for (const [s0, e0] of spans) {
    const e = Math.min(e0, limit - base);
    if (e <= s0) continue;
    writeFullSync(fd, raw, s0, e - s0, base + s0);
    written += e - s0;
  }
  return written;
}
