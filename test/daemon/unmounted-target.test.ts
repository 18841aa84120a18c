/**
 * A local target on a volume that is not mounted: its folder is missing, and a job must not
 * create it (and a repository in it) on the disk below the mountpoint. The job fails that
 * target with the words of `drctl target test`, and the policy's fallbackTarget takes over.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { mountSmallVolume, unmount } from '../support/small-volume.js';

interface Lab {
  /** The mountpoint; the target's folder is mnt/drctl. */
  mnt: string;
  repo: string;
  fallback: string;
  args: string[];
}

/** vol1 lives in a folder on a mounted volume; vol2 is a folder on this disk. p2 uses vol1 alone, p3 falls back to vol2. */
async function lab(t: ExecutionContext): Promise<Lab | undefined> {
  const dir = await tempDir(t);
  const mnt = join(dir, 'vol', 'mnt');
  if (!(await mountSmallVolume(t, mnt, 64))) return undefined;
  const repo = join(mnt, 'drctl');
  await mkdir(repo);
  const fallback = join(dir, 'vol2');
  await mkdir(fallback);
  const config = join(dir, 'config');
  await mkdir(join(config, 'targets'), { recursive: true });
  await mkdir(join(config, 'policies'));
  await writeFile(join(config, 'targets', 'vol1.yaml'), `type: local\npath: ${repo}\n`);
  await writeFile(join(config, 'targets', 'vol2.yaml'), `type: local\npath: ${fallback}\n`);
  const src = join(dir, 'src');
  await mkdir(src);
  await writeFile(join(src, 'a.txt'), 'alpha\n');
  const policy = (name: string, extra: string): string => `name: ${name}\ntarget: vol1\n${extra}sources:\n  - path: ${src}\n    name: files\nretention:\n  generations: 5\n`;
  await writeFile(join(config, 'policies', 'p2.yaml'), policy('p2', ''));
  await writeFile(join(config, 'policies', 'p3.yaml'), policy('p3', 'fallbackTarget: vol2\n'));
  return { mnt, repo, fallback, args: ['--config', config, '--state', join(dir, 'state')] };
}

const missing = (l: Lab): string => `target vol1: ${l.repo} does not exist (mount its volume if it lives on one, or create the repository with \`drctl init --target vol1\`)`;

test('a backup onto a target whose volume is not mounted fails that target, creates nothing on the disk below, and status is not green', async (t) => {
  const l = await lab(t);
  if (!l) return;
  const first = await drctl(['backup', '--policy', 'p2', ...l.args]);
  t.is(first.code, 0, first.stderr);
  t.true(first.stdout.includes(`target vol1: created a new repository in ${l.repo}`), 'the first backup into the existing empty folder creates the repository');

  unmount(l.mnt);
  const r = await drctl(['backup', '--policy', 'p2', ...l.args]);
  t.is(r.code, 1, r.stdout + r.stderr);
  t.is(r.stderr, `drctl: files: ${missing(l)}\n`);
  t.notRegex(r.stdout, /created a new repository|committed/);
  t.deepEqual(await readdir(l.mnt), [], 'no folder and no repository were made under the mountpoint');

  const status = await drctl(['status', ...l.args]);
  t.is(status.code, 1, `status must not be green after a failed run:\n${status.stdout}`);
  const rebuild = await drctl(['catalog', 'rebuild', ...l.args]);
  t.regex(rebuild.stdout, /^vol1: skipped \(target vol1: .* does not exist\)$/m);
  t.deepEqual(await readdir(l.mnt), [], 'catalog rebuild does not make the folder either');
});

test('a policy with a fallbackTarget backs up there when its target\'s volume is not mounted, and says why', async (t) => {
  const l = await lab(t);
  if (!l) return;
  t.is((await drctl(['backup', '--policy', 'p3', ...l.args])).code, 0);
  unmount(l.mnt);

  const r = await drctl(['backup', '--policy', 'p3', ...l.args]);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.true(r.stdout.includes(`policy p3: target vol1 unavailable (${missing(l)}); using fallback target vol2`), r.stdout);
  const points = json<{ placement?: { target: string; fallbackFrom?: string; reason?: string } }[]>(await drctl(['points', '--target', 'vol2', '--json', ...l.args]));
  t.is(points.length, 1);
  t.like(points[0]?.placement, { target: 'vol2', fallbackFrom: 'vol1', reason: missing(l) });
  t.deepEqual(await readdir(l.mnt), []);
});
