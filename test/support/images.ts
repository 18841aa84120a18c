/**
 * Deterministic test disk images: sparse raw files with random, text-like and zero regions,
 * and qcow2 copies made with the real qemu-img.
 */
import { open } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';

const MiB = 1024 * 1024;

/** Pseudo-random bytes from a seed (SHA-256 in counter mode): same seed, same bytes. */
export function seededBytes(seed: string, length: number): Buffer {
  const out = Buffer.alloc(length);
  let off = 0;
  for (let i = 0; off < length; i++) {
    const h = createHash('sha256').update(`${seed}:${i}`).digest();
    off += h.copy(out, off);
  }
  return out;
}

export function textBytes(seed: string, length: number): Buffer {
  const lines: string[] = [];
  let n = 0;
  for (let i = 0; n < length; i++) {
    const l = `2026-11-23T10:${String(i % 60).padStart(2, '0')}:00Z ${seed} worker[${i % 13}] request ${i * 7919 % 100003} served in ${i % 97} ms\n`;
    lines.push(l);
    n += l.length;
  }
  return Buffer.from(lines.join('')).subarray(0, length);
}

export interface Region {
  offset: number;
  data: Buffer;
}

/** A sparse raw image of `sizeBytes` with the given regions written; everything else is a hole. */
export async function makeRawImage(path: string, sizeBytes: number, regions: Region[]): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(sizeBytes);
    for (const r of regions) await fh.write(r.data, 0, r.data.length, r.offset);
  } finally {
    await fh.close();
  }
}

/** The default 64 MiB test disk: random data, log text, a large hole, data near the end. */
export function standardRegions(seed = 'disk'): Region[] {
  return [
    { offset: 0, data: seededBytes(`${seed}-boot`, 1 * MiB) },
    { offset: 4 * MiB, data: textBytes(seed, 6 * MiB) },
    { offset: 12 * MiB + 4096, data: seededBytes(`${seed}-odd`, 3 * MiB + 123) }, // unaligned
    { offset: 40 * MiB, data: seededBytes(`${seed}-tail`, 2 * MiB) },
    { offset: 64 * MiB - 8192, data: textBytes(`${seed}-end`, 8192) },
  ];
}

export function toQcow2(raw: string, qcow2: string, compressed = false): void {
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', ...(compressed ? ['-c'] : []), raw, qcow2]);
}

export async function writeAt(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

/** Flip the bits of `mask` in the byte at `offset` of a file (damage for check and restore tests). */
export async function flipByte(path: string, offset: number, mask = 0x01): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const one = Buffer.alloc(1);
    await fh.read(one, 0, 1, offset);
    one[0] = (one[0] as number) ^ mask;
    await fh.write(one, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

export { MiB };
