/**
 * `drctl repair index`: index files lost (a repository copied to a spare node without its
 * index/ folder) or damaged leave points that cannot restore although every pack is intact.
 * The packs' own headers rebuild the index; a pack whose header is damaged is named and left
 * out, and check then names exactly the points that miss it.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { requireTools } from '../support/tools.js';
import { packFiles, useSmallPacks } from '../support/repo-files.js';
import { MiB, flipByte, makeRawImage, seededBytes, standardRegions, textBytes } from '../support/images.js';

interface RepairJson { packs: number; packsIndexed: number; blobs: number; unreadable: { pack: string; why: string }[]; indexFilesBefore: number; indexFilesAfter: number }

/** An image point and a file point, each in several small packs, with two index files. */
async function twoPoints(t: ExecutionContext) {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  await useSmallPacks(repo, 1 * MiB);
  const img = join(dir, 'disk.img');
  await makeRawImage(img, 64 * MiB, standardRegions('repair'));
  const folder = join(dir, 'folder');
  await mkdir(join(folder, 'sub'), { recursive: true });
  await writeFile(join(folder, 'notes.txt'), textBytes('notes', 3 * MiB));
  await writeFile(join(folder, 'sub', 'blob.bin'), seededBytes('blob', 2 * MiB));
  const vm = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--image', img, '--name', 'vm', '--json']));
  const packsOfVm = await packFiles(repo);
  const files = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--files', folder, '--name', 'files', '--json']));
  const packsOfFiles = (await packFiles(repo)).filter((p) => !packsOfVm.includes(p));
  return { dir, repo, img, folder, vm, files, packsOfFiles };
}

async function restoresImage(t: ExecutionContext, repo: string, id: string, out: string, want: string): Promise<void> {
  const r = await drctl(['restore', '--repo', repo, id, '--to', out]);
  t.is(r.code, 0, r.stderr);
  t.true((await readFile(out)).equals(await readFile(want)), `point ${id.slice(0, 12)} restores byte-identical`);
}

test('a repository whose index files are gone: check says to repair, repair index rebuilds it from the packs, every point restores and prune runs', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img, folder, vm, files } = await twoPoints(t);
  const indexBefore = (await readdir(join(repo, 'index'))).length;
  await rm(join(repo, 'index'), { recursive: true });
  await mkdir(join(repo, 'index'));

  const broken = await drctl(['restore', '--repo', repo, vm.id, '--to', join(dir, 'early.img')]);
  t.is(broken.code, 1, 'without an index the point cannot restore');
  const check = await drctl(['check', '--repo', repo]);
  t.is(check.code, 1);
  t.regex(check.stderr, /pack\(s\) are in no index: .*`drctl repair index` rebuilds the index from the packs' own headers/);
  t.notRegex(check.stdout, /harmless/, 'packs that hold the points\' data are not called leftovers');

  const repair = await drctl(['repair', 'index', '--repo', repo, '--json']);
  t.is(repair.code, 0, repair.stderr);
  const r = json<RepairJson>(repair);
  t.is(r.packsIndexed, r.packs);
  t.true(r.packs >= 6, `${r.packs} packs`);
  t.deepEqual(r.unreadable, []);
  t.is(r.indexFilesBefore, 0);
  t.true(r.indexFilesAfter >= 1 && indexBefore >= 2);

  const checkAfter = await drctl(['check', '--repo', repo, '--read-data']);
  t.is(checkAfter.code, 0, checkAfter.stdout + checkAfter.stderr);
  await restoresImage(t, repo, vm.id, join(dir, 'vm.img'), img);
  const out = join(dir, 'files-out');
  t.is((await drctl(['restore', '--repo', repo, files.id, '--to', out])).code, 0);
  t.true((await readFile(join(out, 'sub', 'blob.bin'))).equals(await readFile(join(folder, 'sub', 'blob.bin'))));
  t.true((await readFile(join(out, 'notes.txt'))).equals(await readFile(join(folder, 'notes.txt'))));
  const prune = await drctl(['prune', '--repo', repo, '--json']);
  t.is(prune.code, 0, prune.stderr);
  t.is(json<{ packsDeleted: number; unindexedPacksDeleted: number }>(prune).unindexedPacksDeleted, 0, 'no pack is a leftover now');
  t.is((await drctl(['check', '--repo', repo, '--read-data'])).code, 0);
});

test('repair index leaves out a pack whose header is damaged, naming it (exit 3); check then names only the point that used it', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img, vm, files, packsOfFiles } = await twoPoints(t);
  // A damaged index file too: repair replaces it.
  const indexFiles = await readdir(join(repo, 'index'));
  await flipByte(join(repo, 'index', indexFiles[0] as string), 20);
  // The tail of one of the file point's packs: its last byte is the trailer's magic.
  const victim = packsOfFiles[0] as string;
  await flipByte(victim, (await stat(victim)).size - 20);

  const repair = await drctl(['repair', 'index', '--repo', repo]);
  t.is(repair.code, 3, repair.stderr);
  const name = victim.split('/').at(-1) as string;
  t.regex(repair.stderr, new RegExp(`pack ${name.slice(0, 12)} has (an unreadable header|a header that does not match its name)`));
  t.regex(repair.stderr, /1 pack\(s\) could not be indexed/);
  t.false((await readdir(join(repo, 'index'))).includes(indexFiles[0] as string), 'the damaged index file is gone');

  const check = await drctl(['check', '--repo', repo, '--json']);
  t.is(check.code, 1);
  const report = json<{ affected: { id: string }[] }>(check);
  t.deepEqual(report.affected.map((a) => a.id), [files.id], 'only the file point misses data');
  await restoresImage(t, repo, vm.id, join(dir, 'vm.img'), img);
});
