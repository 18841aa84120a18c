/**
 * SIGTERM/SIGINT that arrives while drctl is still starting (loading the config and the
 * catalog), before any job started. cli/main.ts turns the signal into an aborted ctx.signal;
 * these tests run the command in-process with a signal that is aborted already, which is what
 * the command sees in that window, without racing a real signal against start-up.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { access, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { main } from '../../cli/program.js';
import type { CliContext } from '../../cli/context.js';
import { shutdownCodecPool } from '../../engine/repo/index.js';
import { systemClock } from '../../engine/runtime/index.js';
import { drctl, json } from '../support/cli.js';
import { env, fillIn, lastRunHoursAgo } from './daemon-env.js';

test.after.always(() => shutdownCodecPool());

/** drctl in this process, as after a signal that came during start-up. */
async function interruptedDrctl(args: string[], ms = 20_000): Promise<{ code: number | 'still running'; stdout: string; stderr: string }> {
  const out = { stdout: '', stderr: '' };
  const ctx: CliContext = {
    stdout: { write: (s: string) => (out.stdout += s) },
    stderr: { write: (s: string) => (out.stderr += s) },
    env: {}, clock: systemClock, hostname: hostname(), signal: AbortSignal.abort(),
  };
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'still running'>((resolve) => (timer = setTimeout(() => resolve('still running'), ms)));
  const code = await Promise.race([main(args, ctx), late]);
  clearTimeout(timer);
  return { code, ...out };
}

test('backup --policy interrupted before its first job: no job starts, no point, no retention, exit 1', async (t) => {
  const e = await env(t, { name: 'files', target: 'vol1', sources: [{ path: 'SRC', name: 'docs' }, { image: 'IMG' }], retention: { generations: 1 } });
  const src = join(e.dir, 'docs');
  await mkdir(src);
  await writeFile(join(src, 'a.txt'), 'alpha\n');
  const img = join(e.dir, 'disk.img');
  await writeFile(img, randomBytes(1024 * 1024));
  await fillIn(e, 'files', 'SRC', src);
  await fillIn(e, 'files', 'IMG', img);
  for (let i = 0; i < 2; i++) {
    const r = await drctl(['backup', '--policy', 'files', ...e.args]);
    t.is(r.code, 0, r.stderr);
  }
  const ids = async (): Promise<string[]> => json<{ id: string }[]>(await drctl(['points', '--json', '--target', 'vol1', ...e.args])).map((p) => p.id).sort();
  const before = await ids();
  t.is(before.length, 2);

  const r = await interruptedDrctl(['backup', '--policy', 'files', ...e.args]);
  t.is(r.code, 1, r.stdout + r.stderr);
  t.is(r.stderr, 'drctl: policy files: interrupted before any job started - nothing was backed up, no retention ran (run the command again)\n');
  t.notRegex(r.stdout, /backing up|committed|retention/);
  // generations: 1 — a new point would have replaced each old one.
  t.deepEqual(await ids(), before);
  const catalog = JSON.parse(await readFile(join(e.state, 'catalog.json'), 'utf8')) as { jobs: { state: string; startedAt?: string }[] };
  t.deepEqual(catalog.jobs.slice(-2).map((j) => [j.state, j.startedAt]), [['interrupted', undefined], ['interrupted', undefined]]);
  const check = await drctl(['check', '--target', 'vol1', ...e.args]);
  t.is(check.code, 0, check.stdout + check.stderr);
});

test('daemon stopped while it starts: no catch-up run, it says no job is running, exits 0 and frees the state folder', async (t) => {
  const e = await env(t, { name: 'web', schedule: '0 */4 * * *', target: 'vol1', sources: [{ path: 'SRC' }], retention: { generations: 5 } });
  const src = join(e.dir, 'src');
  await mkdir(src);
  await writeFile(join(src, 'index.html'), '<h1>hello</h1>\n');
  await fillIn(e, 'web', 'SRC', src);
  await lastRunHoursAgo(e, 'web', 9); // a catch-up run is due at start

  const r = await interruptedDrctl(['daemon', ...e.args]);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.regex(r.stdout, /stopping - no job is running\n.*daemon stopped\n$/);
  t.notRegex(r.stdout, /running once now|backing up|abandoning/);
  const catalog = JSON.parse(await readFile(join(e.state, 'catalog.json'), 'utf8')) as { jobs: unknown[] };
  t.deepEqual(catalog.jobs, []);
  t.deepEqual(await readdir(e.repo), [], 'nothing was written to the target');
  await t.throwsAsync(access(join(e.state, 'daemon.lock')), { code: 'ENOENT' });
});
