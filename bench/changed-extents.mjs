#!/usr/bin/env node
// Usage: changed-extents.mjs OLD NEW [GRANULE_BYTES]
// Prints the JSON changed-extent list a dirty bitmap with GRANULE_BYTES granules (default
// 64 KiB, as QEMU's) would give for the change OLD -> NEW: every granule whose bytes differ,
// plus everything past the end of OLD. Not timed by the benchmark (the hypervisor tracks this).
import { open } from 'node:fs/promises';

const [oldPath, newPath, g = '65536'] = process.argv.slice(2);
if (!oldPath || !newPath) {
  console.error('usage: changed-extents.mjs OLD NEW [GRANULE_BYTES]');
  process.exit(2);
}
const granule = Number(g);
const a = await open(oldPath, 'r');
const b = await open(newPath, 'r');
const sizeA = (await a.stat()).size;
const sizeB = (await b.stat()).size;
const block = 64 * granule;
const ba = Buffer.alloc(block);
const bb = Buffer.alloc(block);
const out = [];
const add = (offset, length) => {
  const last = out.at(-1);
  if (last && last.offset + last.length === offset) last.length += length;
  else out.push({ offset, length });
};
for (let off = 0; off < Math.min(sizeA, sizeB); off += block) {
  const n = Math.min(block, Math.min(sizeA, sizeB) - off);
  await a.read(ba, 0, n, off);
  await b.read(bb, 0, n, off);
  for (let k = 0; k < n; k += granule) {
    const len = Math.min(granule, n - k);
    if (ba.compare(bb, k, k + len, k, k + len) !== 0) add(off + k, len);
  }
}
if (sizeB > sizeA) add(sizeA, sizeB - sizeA);
await a.close();
await b.close();
process.stdout.write(JSON.stringify(out) + '\n');
