/**
 * A repository written by an earlier build keeps working: index files of zstd'd JSON, and packs
 * named by the SHA-256 of all their bytes (trailer "DRCTLPK1"). A backup dedups against it,
 * check and restore read it, and prune rewrites its index in the binary layout (FORMAT.md,
 * "Index files" and "Packs").
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { compress, decompress } from 'zstd-napi';
import { decodeIndexFile } from '../../engine/repo/index-codec.js';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { requireTools } from '../support/tools.js';
import { packFiles } from '../support/repo-files.js';
import { MiB, flipByte, makeRawImage, standardRegions, writeAt, seededBytes } from '../support/images.js';

interface PointJson { id: string; stats: { newBytes: number; readBytes: number } }

const BINARY = Buffer.from('DRCTLIX2');

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Rewrite every pack as an earlier build wrote it (trailer DRCTLPK1, named by the hash of all its bytes); old id -> new id. */
async function toWholeHashPacks(repo: string): Promise<Map<string, string>> {
  const renamed = new Map<string, string>();
  for (const file of await packFiles(repo)) {
    const bytes = await readFile(file);
    if (!bytes.subarray(bytes.length - 8).equals(Buffer.from('DRCTLPK2'))) throw new Error(`${file} is not a current pack`);
    Buffer.from('DRCTLPK1').copy(bytes, bytes.length - 8);
    const id = sha256(bytes);
    await mkdir(join(repo, 'data', id.slice(0, 2)), { recursive: true });
    await writeFile(join(repo, 'data', id.slice(0, 2), id), bytes);
    await rm(file);
    renamed.set(file.split('/').at(-1) as string, id);
  }
  return renamed;
}

/** Rewrite every index file of `repo` as format-1 JSON, under its new hash, with packs renamed by `renamed`. */
async function toJsonIndex(repo: string, renamed: Map<string, string>): Promise<void> {
  const dir = join(repo, 'index');
  for (const name of await readdir(dir)) {
    const raw = await readFile(join(dir, name));
    if (!decompress(raw).subarray(0, 8).equals(BINARY)) throw new Error(`index/${name} is not binary`);
    const packs = (await decodeIndexFile(raw)).packs.map((p) => ({ id: renamed.get(p.id) ?? p.id, blobs: p.blobs.toEntries() }));
    const bytes = compress(Buffer.from(JSON.stringify({ v: 1, packs })));
    await writeFile(join(dir, createHash('sha256').update(bytes).digest('hex')), bytes);
    await rm(join(dir, name));
  }
}

/** A repository with one backup of a `bytes`-long image, rewritten as an earlier build wrote it. */
async function earlierBuildRepo(t: ExecutionContext, bytes: number): Promise<{ dir: string; repo: string; img: string }> {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  const img = join(dir, 'disk.img');
  await makeRawImage(img, bytes, standardRegions());
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  t.is((await drctl(['backup', '--repo', repo, '--image', img, '--name', 'vm', '-q'])).code, 0);
  await toJsonIndex(repo, await toWholeHashPacks(repo));
  return { dir, repo, img };
}

async function indexLayouts(repo: string): Promise<string[]> {
  const dir = join(repo, 'index');
  const out: string[] = [];
  for (const name of await readdir(dir)) {
    out.push(decompress(await readFile(join(dir, name))).subarray(0, 8).equals(BINARY) ? 'binary' : 'json');
  }
  return out.sort();
}

test('a repository of an earlier build (JSON index, whole-hash packs): backup dedups against it, check and restore read it, prune rewrites the index binary', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img } = await earlierBuildRepo(t, 32 * MiB);
  t.deepEqual(await indexLayouts(repo), ['json']);
  const old = await drctl(['check', '--repo', repo, '--read-data']);
  t.is(old.code, 0, `packs named by the hash of all their bytes must pass: ${old.stdout}${old.stderr}`);

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

test('a damaged header in a pack of an earlier build is found by check --read-data', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { repo } = await earlierBuildRepo(t, 16 * MiB);
  const [victim] = await packFiles(repo);
  await flipByte(victim as string, (await stat(victim as string)).size - 12 - 3); // in the header
  const r = await drctl(['check', '--repo', repo, '--read-data', '--json']);
  t.is(r.code, 1, r.stdout);
  const problems = json<{ problems: { kind: string; message: string }[] }>(r).problems;
  t.true(problems.some((p) => p.kind === 'damaged-pack' && p.message.includes((victim as string).split('/').at(-1)!.slice(0, 12))), JSON.stringify(problems));
});

test('an earlier build\'s repository that lost its index: repair index rebuilds it from the whole-hash packs, and the point restores', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img } = await earlierBuildRepo(t, 16 * MiB);
  const [point] = json<{ id: string }[]>(await drctl(['points', '--repo', repo, '--json']));
  await rm(join(repo, 'index'), { recursive: true });
  await mkdir(join(repo, 'index'));
  const repair = await drctl(['repair', 'index', '--repo', repo, '--json']);
  t.is(repair.code, 0, repair.stderr);
  const r = json<{ packs: number; packsIndexed: number }>(repair);
  t.true(r.packs > 0 && r.packsIndexed === r.packs);
  t.deepEqual(await indexLayouts(repo), ['binary']);
  const out = join(dir, 'out.img');
  t.is((await drctl(['restore', '--repo', repo, point!.id, '--to', out])).code, 0);
  t.true((await readFile(out)).equals(await readFile(img)));
  t.is((await drctl(['check', '--repo', repo, '--read-data'])).code, 0);
});
