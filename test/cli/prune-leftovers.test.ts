/**
 * A backup that ran out of space leaves packs no index lists. Prune deletes them, and what it
 * reports as freed includes them: the operator sees where the space came back from.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { freeBytes, mountSmallVolume } from '../support/small-volume.js';

const MiB = 1024 * 1024;

interface PruneJson { bytesFreed: number; unindexedPacksDeleted: number; unindexedBytesFreed: number }

/** A repository on a 48 MiB volume holding only the packs of a 64 MiB backup that ran out of space; undefined when no volume can be mounted. */
async function leftoverRepo(t: ExecutionContext): Promise<{ vol: string; repo: string } | undefined> {
  const dir = await tempDir(t);
  const vol = join(dir, 'vol');
  if (!(await mountSmallVolume(t, vol, 48))) return undefined;
  const repo = join(vol, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const img = join(dir, 'big.raw');
  await writeFile(img, randomBytes(64 * MiB));
  const full = await drctl(['backup', '--repo', repo, '--image', img, '--name', 'big']);
  t.is(full.code, 1, full.stdout);
  t.regex(full.stderr, /out of space - nothing was committed/);
  return { vol, repo };
}

test('prune counts the leftover packs of a backup that hit ENOSPC in what it freed, and says so', async (t) => {
  const lab = await leftoverRepo(t);
  if (!lab) return;
  const { vol, repo } = lab;
  const before = await freeBytes(vol);
  const dry = json<PruneJson>(await drctl(['prune', '--repo', repo, '--dry-run', '--json']));
  t.true(dry.unindexedPacksDeleted > 0);
  t.is(dry.bytesFreed, dry.unindexedBytesFreed, 'the dry run counts them too');

  const r = await drctl(['prune', '--repo', repo]);
  t.is(r.code, 0, r.stderr);
  const gained = (await freeBytes(vol)) - before;
  t.true(gained > 16 * MiB, `the volume got ${gained} bytes back`);
  t.regex(r.stdout, new RegExp(`, ${dry.unindexedPacksDeleted} of them leftovers no index lists \\((\\d+\\.\\d) MiB, from backups that did not finish\\)`));
  const said = Number(/leftovers no index lists \((\d+\.\d) MiB/.exec(r.stdout)?.[1]) * MiB;
  t.true(Math.abs(said - gained) < 2 * MiB, `says ${said} bytes of leftovers, the volume got ${gained} back`);
  t.notRegex(r.stdout, /^freed 0 B/m);
});

test('prune --json: bytesFreed includes the leftover packs, and unindexedBytesFreed says how much they were', async (t) => {
  const lab = await leftoverRepo(t);
  if (!lab) return;
  const { vol, repo } = lab;
  const before = await freeBytes(vol);
  const rep = json<PruneJson>(await drctl(['prune', '--repo', repo, '--json']));
  const gained = (await freeBytes(vol)) - before;
  t.true(rep.unindexedPacksDeleted > 0);
  t.true(Math.abs(rep.unindexedBytesFreed - gained) < 2 * MiB, `unindexedBytesFreed ${rep.unindexedBytesFreed}, the volume got ${gained} back`);
  t.is(rep.bytesFreed, rep.unindexedBytesFreed, 'no point existed: everything freed was leftovers');
});
