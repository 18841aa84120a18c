/**
 * Shared pieces of the file-level tests: a repository in a temp dir, a generated source tree
 * with every kind of entry, and a comparison of two trees (content, mode, mtime to the ms,
 * symlink targets, hard-link identity).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdir, readFile, readdir, readlink, symlink, link, utimes, lutimes, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { Repository, type RepoConfig } from '../../../engine/repo/index.js';
import { openLocalTarget } from '../../../targets/index.js';
import { systemClock } from '../../../engine/runtime/clock.js';
import { tempDir } from '../../support/tmp.js';

export const isRoot = process.getuid?.() === 0;

export async function setup(t: ExecutionContext, config: Partial<RepoConfig> = {}): Promise<{ dir: string; repo: Repository; src: string }> {
  const dir = await tempDir(t, 'drctl-files-');
  const repo = await Repository.init(await openLocalTarget(join(dir, 'repo')), { clock: systemClock }, config);
  const src = join(dir, 'src');
  await mkdir(src);
  return { dir, repo, src };
}

export async function reopen(repo: Repository): Promise<Repository> {
  return Repository.open(await openLocalTarget(repo.location), { clock: systemClock });
}

/** Deterministic pseudo-random bytes (compressible enough to be realistic, not all zero). */
export function bytes(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let block = createHash('sha256').update(`seed-${seed}`).digest();
  for (let off = 0; off < n; off += 32) {
    block.copy(out, off, 0, Math.min(32, n - off));
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

const T = (s: number) => new Date(1_700_000_000_000 + s * 1000 + 123); // ms precision on purpose

/**
 * src/
 *   a/            0750            a/b/deep.txt, a/big.bin (2.5 MiB, several chunks)
 *   a/b/
 *   empty/        (empty folder)
 *   zero.txt      0 bytes
 *   suid          04755
 *   hard1, hard2  one inode
 *   rel-link  →   a/b/deep.txt
 *   abs-link  →   /etc/hostname   (absolute targets are data; never followed)
 */
export async function makeTree(src: string): Promise<void> {
  await mkdir(join(src, 'a', 'b'), { recursive: true });
  await mkdir(join(src, 'empty'));
  await writeFile(join(src, 'a', 'b', 'deep.txt'), 'deep file\n');
  await writeFile(join(src, 'a', 'big.bin'), bytes(2.5 * 1024 * 1024, 1));
  await writeFile(join(src, 'zero.txt'), '');
  await writeFile(join(src, 'suid'), '#!/bin/sh\necho hi\n');
  await chmod(join(src, 'suid'), 0o4755);
  await writeFile(join(src, 'hard1'), 'same inode\n');
  await link(join(src, 'hard1'), join(src, 'hard2'));
  await symlink('a/b/deep.txt', join(src, 'rel-link'));
  await symlink('/etc/hostname', join(src, 'abs-link'));
  await chmod(join(src, 'a'), 0o750);
  let i = 0;
  for (const f of ['a/b/deep.txt', 'a/big.bin', 'zero.txt', 'suid', 'hard1']) await utimes(join(src, f), T(i), T(++i));
  await lutimes(join(src, 'rel-link'), T(10), T(11));
  for (const d of ['a/b', 'a', 'empty']) await utimes(join(src, d), T(20), T(++i + 20));
}

export function mkfifo(path: string): void {
  execFileSync('mkfifo', [path]);
}

export interface Snap {
  type: string;
  mode: number;
  mtimeMs: number;
  ino: number;
  content?: string;
  target?: string;
}

/** Path → what a restore must reproduce (hard links: same inode number as their twin). */
export async function snapshot(root: string): Promise<Map<string, Snap>> {
  const out = new Map<string, Snap>();
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(root, r);
      const st = await lstat(p);
      const s: Snap = { type: '', mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs), ino: st.ino };
      if (st.isDirectory()) s.type = 'dir';
      else if (st.isSymbolicLink()) {
        s.type = 'symlink';
        s.target = await readlink(p);
      } else if (st.isFile()) {
        s.type = 'file';
        s.content = createHash('sha256').update(await readFile(p)).digest('hex');
      } else s.type = 'other';
      out.set(r, s);
      if (s.type === 'dir') await walk(r);
    }
  };
  await walk('');
  return out;
}

/** Compare two snapshots; symlink modes and inode numbers are not compared (hard links are, by twin). */
export function assertSameTree(t: ExecutionContext, actual: Map<string, Snap>, expected: Map<string, Snap>, links: [string, string][] = []): void {
  t.deepEqual([...actual.keys()], [...expected.keys()]);
  for (const [path, e] of expected) {
    const a = actual.get(path);
    if (!a) continue;
    const strip = (s: Snap) => ({ ...s, ino: 0, mode: s.type === 'symlink' ? 0 : s.mode });
    t.deepEqual(strip(a), strip(e), path);
  }
  for (const [x, y] of links) t.is(actual.get(x)?.ino, actual.get(y)?.ino, `${x} and ${y} are one inode`);
}
