/**
 * A repository whose index files were written by an earlier build (zstd of JSON) keeps working:
 * a backup dedups against it, check and restore read it, and prune rewrites it in the binary
 * layout (FORMAT.md, "Index files").
 */
import test from 'ava';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { compress, decompress } from 'zstd-napi';
import { decodeIndexFile } from '../../engine/repo/index-store.js';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { requireTools } from '../support/tools.js';
import { MiB, makeRawImage, standardRegions, writeAt, seededBytes } from '../support/images.js';

interface PointJson { id: string; stats: { newBytes: number; readBytes: number } }

const BINARY = Buffer.from('DRCTLIX2');

/** Rewrite every index file of `repo` as format-1 JSON, under its new hash. */
async function toJsonIndex(repo: string): Promise<void> {
  const dir = join(repo, 'index');
  for (const name of await readdir(dir)) {
    const raw = await readFile(join(dir, name));
    if (!decompress(raw).subarray(0, 8).equals(BINARY)) throw new Error(`index/${name} is not binary`);
    const packs = (await decodeIndexFile(raw)).packs.map((p) => ({ id: p.id, blobs: p.blobs.toEntries() }));
    const bytes = compress(Buffer.from(JSON.stringify({ v: 1, packs })));
    await writeFile(join(dir, createHash('sha256').update(bytes).digest('hex')), bytes);
    await rm(join(dir, name));
  }
}

async function indexLayouts(repo: string): Promise<string[]> {
  const dir = join(repo, 'index');
  const out: string[] = [];
  for (const name of await readdir(dir)) {
    out.push(decompress(await readFile(join(dir, name))).subarray(0, 8).equals(BINARY) ? 'binary' : 'json');
  }
  return out.sort();
}

test('index files written as JSON by an earlier build: backup dedups against them, check and restore read them, prune rewrites them binary', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  const img = join(dir, 'disk.img');
  await makeRawImage(img, 32 * MiB, standardRegions());
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  t.is((await drctl(['backup', '--repo', repo, '--image', img, '--name', 'vm', '-q'])).code, 0);
  await toJsonIndex(repo);
  t.deepEqual(await indexLayouts(repo), ['json']);

  await writeAt(img, 5 * MiB, seededBytes('change', 256 * 1024));
  const second = await drctl(['backup', '--repo', repo, '--image', img, '--name', 'vm', '--json']);
  t.is(second.code, 0, second.stderr);
  const p2 = json<PointJson>(second);
  t.true(p2.stats.newBytes <= 512 * 1024, `the unchanged chunks must dedup against the JSON index: ${p2.stats.newBytes} new bytes`);
  t.deepEqual(await indexLayouts(repo), ['binary', 'json']);

  const check = await drctl(['check', '--repo', repo, '--read-data']);
  t.is(check.code, 0, check.stdout + check.stderr);
  t.is((await drctl(['forget', '--repo', repo, '--name', 'vm', '--keep-last', '1', '-q'])).code, 0);
  const prune = await drctl(['prune', '--repo', repo, '-q']);
  t.is(prune.code, 0, prune.stderr);
  t.false((await indexLayouts(repo)).includes('json'), 'prune rewrites the index files it keeps');
  const out = join(dir, 'out.img');
  t.is((await drctl(['restore', '--repo', repo, p2.id, '--to', out])).code, 0);
  t.true((await readFile(out)).equals(await readFile(img)), 'the kept point restores byte-identical');
  const after = await drctl(['check', '--repo', repo, '--read-data']);
  t.is(after.code, 0, after.stdout + after.stderr);
});
