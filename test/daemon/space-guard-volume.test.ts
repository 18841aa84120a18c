/**
 * The free-space guard on real small volumes, through `drctl backup --policy`: it estimates what
 * a backup adds (not the source's full size once the source has a point), a refusal goes to the
 * policy's fallbackTarget, and its advice fits the policy.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { mountSmallVolume } from '../support/small-volume.js';

const MiB = 1024 * 1024;

interface Lab {
  dir: string;
  config: string;
  args: string[];
}

async function lab(t: ExecutionContext): Promise<Lab> {
  const dir = await tempDir(t);
  const config = join(dir, 'config');
  await mkdir(join(config, 'targets'), { recursive: true });
  await mkdir(join(config, 'policies'));
  return { dir, config, args: ['--config', config, '--state', join(dir, 'state')] };
}

/** A target in folder drctl/ of a tmpfs of `sizeMiB` (0: a plain folder on this disk); undefined when it cannot be mounted. */
async function target(t: ExecutionContext, l: Lab, name: string, sizeMiB: number): Promise<string | undefined> {
  const mnt = join(l.dir, name);
  if (sizeMiB > 0 && !(await mountSmallVolume(t, mnt, sizeMiB))) return undefined;
  const repo = join(mnt, 'drctl');
  await mkdir(repo, { recursive: true });
  await writeFile(join(l.config, 'targets', `${name}.yaml`), `type: local\npath: ${repo}\n`);
  return repo;
}

async function policy(l: Lab, name: string, image: string, source: string, targets: string): Promise<void> {
  await writeFile(join(l.config, 'policies', `${name}.yaml`), `name: ${name}\n${targets}sources:\n  - image: ${image}\n    name: ${source}\nretention:\n  generations: 5\n`);
}

async function image(l: Lab, name: string, bytes: number): Promise<string> {
  const path = join(l.dir, name);
  await writeFile(path, randomBytes(bytes));
  return path;
}

interface JobJson { state: string; error?: string; placement?: { target: string; fallbackFrom?: string; reason?: string } }

test('a source whose first backup filled most of the volume is still backed up there: an unchanged run adds almost nothing', async (t) => {
  const l = await lab(t);
  if (!(await target(t, l, 'vol3', 120))) return;
  await target(t, l, 'vol4', 0);
  const img = await image(l, 'h64.raw', 64 * MiB);
  await policy(l, 'p5', img, 'h64', 'target: vol3\nfallbackTarget: vol4\n');
  for (let run = 1; run <= 3; run++) {
    // Run 2 used to be refused for ever: 64 MiB stored, ~55 MiB left, "needs about 104 MiB".
    const r = await drctl(['backup', '--policy', 'p5', '--json', ...l.args]);
    t.is(r.code, 0, `run ${run}: ${r.stdout}${r.stderr}`);
    const job = json<{ jobs: JobJson[] }>(r).jobs[0];
    t.like(job, { state: 'ok', placement: { target: 'vol3' } }, `run ${run}`);
    t.is(job?.placement?.fallbackFrom, undefined, `run ${run} stayed on vol3`);
  }
  const points = json<{ name: string }[]>(await drctl(['points', '--target', 'vol3', '--json', ...l.args]));
  t.is(points.length, 3);
  t.deepEqual(await readdir(join(l.dir, 'vol4', 'drctl')), [], 'the fallback was never needed');
});

test('a refusal by the guard goes to the fallbackTarget; the advice never adds a fallbackTarget the policy has', async (t) => {
  const l = await lab(t);
  if (!(await target(t, l, 'vol3', 48)) || !(await target(t, l, 'vol5', 48))) return;
  await target(t, l, 'vol4', 0);
  const img = await image(l, 'big.raw', 64 * MiB);

  // A first backup is estimated at the image's size: 64 MiB + 40 MiB margin on a 48 MiB volume.
  await policy(l, 'p6', img, 'big', 'target: vol3\nfallbackTarget: vol4\n');
  const r = await drctl(['backup', '--policy', 'p6', ...l.args]);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.regex(r.stdout, /^policy p6: target vol3 has too little free space \(target vol3 \(.*\) has \d+ MiB free, but backing up big needs about 104 MiB \(a first backup: the source holds 64 MiB of data, plus 40 MiB margin\) - nothing was started \(.*\)\); using fallback target vol4$/m);
  t.regex(r.stdout, /^policy p6: big point [0-9a-f]{12} committed$/m);
  const points = json<{ placement?: { target: string; fallbackFrom?: string; reason?: string } }[]>(await drctl(['points', '--target', 'vol4', '--json', ...l.args]));
  t.is(points.length, 1);
  t.like(points[0]?.placement, { target: 'vol4', fallbackFrom: 'vol3' });
  t.regex(points[0]?.placement?.reason ?? '', /needs about 104 MiB/);
  t.deepEqual((await readdir(join(l.dir, 'vol3', 'drctl'))).filter((n) => n === 'data'), [], 'nothing was written to vol3');

  // The fallback is too small as well: exit 1, both named, no advice to add a fallbackTarget.
  await policy(l, 'p7', img, 'big', 'target: vol3\nfallbackTarget: vol5\n');
  const both = await drctl(['backup', '--policy', 'p7', ...l.args]);
  t.is(both.code, 1, both.stdout + both.stderr);
  t.regex(both.stderr, /^drctl: big: target vol3 .* needs about 104 MiB .*; the fallback target vol5 failed too: target vol5 .* needs about 104 MiB .*grow the volume\)\n$/);
  t.notRegex(both.stderr, /fallbackTarget/);

  // Without a fallbackTarget the advice names it.
  await policy(l, 'p8', img, 'big', 'target: vol3\n');
  const none = await drctl(['backup', '--policy', 'p8', ...l.args]);
  t.is(none.code, 1);
  t.regex(none.stderr, /nothing was started \(run `drctl prune` to delete data no point uses, grow the volume or give policy p8 a fallbackTarget\)\n$/);
});
