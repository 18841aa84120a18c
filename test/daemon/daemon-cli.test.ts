/**
 * `drctl daemon`, `status`, `backup --policy` and `catalog rebuild` as an operator runs them:
 * real processes, real signals, the real clock.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json, startDrctl } from '../support/cli.js';
import { collect, env, exited, waitFor } from './daemon-env.js';

test('daemon: one catch-up run at start after downtime; SIGHUP with a broken file keeps the old policy; SIGTERM stops cleanly', async (t) => {
  const e = await env(t, { name: 'web', schedule: '0 */4 * * *', target: 'vol1', sources: [{ path: 'SRC' }], retention: { generations: 5 } });
  const src = join(e.dir, 'src');
  await mkdir(src);
  await writeFile(join(src, 'index.html'), '<h1>hello</h1>\n');
  const pfile = join(e.config, 'policies', 'web.yaml');
  await writeFile(pfile, (await readFile(pfile, 'utf8')).replace('"SRC"', JSON.stringify(src)));
  // The catalog remembers a run 9 hours ago: two slots were missed while the daemon was down.
  await mkdir(e.state, { recursive: true });
  const nineHoursAgo = new Date(Date.now() - 9 * 3_600_000).toISOString();
  await writeFile(join(e.state, 'catalog.json'), JSON.stringify({ version: 1, jobs: [], points: [], policies: { web: { lastScheduledAt: nineHoursAgo } } }));

  const child = startDrctl(['daemon', ...e.args]);
  const out = collect(child);
  await waitFor(child, /point [0-9a-f]{12} committed/, out);
  t.regex(out.text, /missed its run at .* running once now/);
  t.is(out.text.match(/backing up/g)?.length, 1, out.text);

  // A broken edit + SIGHUP: the daemon keeps the version it has.
  await writeFile(pfile, 'name: web\nschedule: "0 */4 * *"\ntarget: vol1\nsources: []\n');
  child.kill('SIGHUP');
  await waitFor(child, /keeping the previous version of policy web/, out);
  await waitFor(child, /reloaded: 1 policy\b/, out);

  child.kill('SIGTERM');
  t.is(await exited(child), 0, out.err);
  t.regex(out.text, /daemon stopped/);

  const status = await drctl(['status', '--json', ...e.args]);
  const s = json<{ policies: { name: string; sources: { name: string; lastPoint?: { id: string }; rpo: { met: boolean; intervalSeconds: number } }[] }[]; invalidConfig: string[] }>(status);
  t.is(status.code, 2, status.stderr); // an invalid config file: status lists it and exits 2
  t.is(s.policies.length, 0, 'the broken file is not a valid policy for one-off commands');
  t.regex(s.invalidConfig.join('\n'), /web\.yaml:2:\d+: schedule/);
});

test('backup --policy, status, and catalog rebuild after the catalog is deleted lists the same points', async (t) => {
  const e = await env(t, { name: 'files', target: 'vol1', sources: [{ path: 'SRC', name: 'docs' }, { image: 'IMG' }], retention: { generations: 3 } });
  const src = join(e.dir, 'docs');
  await mkdir(src);
  await writeFile(join(src, 'a.txt'), 'alpha\n');
  const img = join(e.dir, 'disk.img');
  await writeFile(img, randomBytes(3 * 1024 * 1024));
  const pfile = join(e.config, 'policies', 'files.yaml');
  await writeFile(pfile, (await readFile(pfile, 'utf8')).replace('"SRC"', JSON.stringify(src)).replace('"IMG"', JSON.stringify(img)));

  for (let i = 0; i < 4; i++) {
    await writeFile(join(src, 'a.txt'), `alpha ${i}\n`);
    const r = await drctl(['backup', '--policy', 'files', ...e.args]);
    t.is(r.code, 0, r.stderr);
  }
  const status = await drctl(['status', '--json', ...e.args]);
  t.is(status.code, 0, status.stderr + status.stdout);
  const s = json<{ policies: { name: string; sources: { name: string; lastPoint?: { id: string }; rpo: { met: boolean; intervalSeconds: number } }[] }[] }>(status);
  t.deepEqual(s.policies[0]?.sources.map((x) => [x.name, x.rpo.met, x.rpo.intervalSeconds]), [['docs', true, 4 * 3600], ['disk.img', true, 4 * 3600]]);

  // Retention (generations: 3) ran after each backup, per source.
  const points = json<{ id: string; time: string; name: string; policy: string }[]>(await drctl(['points', '--json', '--target', 'vol1', ...e.args]));
  t.is(points.filter((p) => p.name === 'docs').length, 3);
  t.is(points.filter((p) => p.name === 'disk.img').length, 3);
  t.true(points.every((p) => p.policy === 'files'));

  const catalogPath = join(e.state, 'catalog.json');
  const before = JSON.parse(await readFile(catalogPath, 'utf8')) as { points: { id: string; time: string }[] };
  const key = (ps: { id: string; time: string }[]) => ps.map((p) => `${p.id} ${p.time}`).sort();
  t.deepEqual(key(before.points), key(points));
  await rm(catalogPath);
  const rb = await drctl(['catalog', 'rebuild', ...e.args]);
  t.is(rb.code, 0, rb.stderr);
  t.regex(rb.stdout, /6 recovery points/);
  const after = JSON.parse(await readFile(catalogPath, 'utf8')) as { points: { id: string; time: string; policy: string; target: string }[] };
  t.deepEqual(key(after.points), key(points));
  t.true(after.points.every((p) => p.policy === 'files' && p.target === 'vol1'));
});

test('SIGTERM during a running backup: the job is abandoned, nothing half-committed, check passes', async (t) => {
  const e = await env(t, { name: 'big', schedule: '0 */4 * * *', target: 'vol1', sources: [{ path: 'SRC' }], retention: { generations: 5 } });
  const src = join(e.dir, 'big');
  await mkdir(src);
  for (let i = 0; i < 100; i++) await writeFile(join(src, `f${i}`), randomBytes(4 * 1024 * 1024));
  const pfile = join(e.config, 'policies', 'big.yaml');
  await writeFile(pfile, (await readFile(pfile, 'utf8')).replace('"SRC"', JSON.stringify(src)));
  await mkdir(e.state, { recursive: true });
  await writeFile(join(e.state, 'catalog.json'), JSON.stringify({ version: 1, jobs: [], points: [], policies: { big: { lastScheduledAt: new Date(Date.now() - 5 * 3_600_000).toISOString() } } }));

  const child = startDrctl(['daemon', ...e.args]);
  const out = collect(child);
  await waitFor(child, /backing up big/, out);
  await new Promise((r) => setTimeout(r, 300));
  child.kill('SIGTERM');
  t.is(await exited(child), 0, out.err);
  t.regex(out.text, /stopping - abandoning 1 job\(s\) cleanly/);
  const catalog = JSON.parse(await readFile(join(e.state, 'catalog.json'), 'utf8')) as { jobs: { state: string }[] };
  t.deepEqual(catalog.jobs.map((j) => j.state), ['interrupted'], out.text);
  const check = await drctl(['check', '--target', 'vol1', ...e.args]);
  t.is(check.code, 0, check.stdout + check.stderr);
  t.deepEqual(json<unknown[]>(await drctl(['points', '--json', '--target', 'vol1', ...e.args])), []);
});

test('daemon start and SIGHUP log every problem of an invalid policy file, one per line, as policy validate lists them', async (t) => {
  const e = await env(t, { name: 'web', schedule: '0 */4 * * *', target: 'vol1', sources: [{ path: '/srv/www' }], retention: { generations: 5 } });
  // Three problems: no target, a 4-field schedule, a negative retention.
  const bad = 'name: bad\nschedule: "0 */4 * *"\nsources:\n  - path: /srv/bad\nretention: { generations: -1 }\n';
  await writeFile(join(e.config, 'policies', 'bad.yaml'), bad);
  const problemLines = async (): Promise<string[]> => {
    const v = await drctl(['policy', 'validate', ...e.args]);
    t.is(v.code, 2, v.stdout + v.stderr);
    return v.stderr.split('\n').filter((l) => /:\d+:\d+: /.test(l));
  };
  const atStart = await problemLines();
  t.is(atStart.length, 3, atStart.join('\n'));

  const child = startDrctl(['daemon', ...e.args]);
  const out = collect(child);
  await waitFor(child, /daemon started/, out);
  t.regex(out.text, /policy file \S+bad\.yaml is invalid and not scheduled - 3 problems:/);
  // One log line per problem, each as `drctl policy validate` prints it.
  for (const line of atStart) t.true(out.text.includes(`Z   ${line}\n`), `missing from the log: ${line}\n${out.text}`);

  // web breaks in two places; the daemon keeps its previous version and lists both.
  await writeFile(join(e.config, 'policies', 'web.yaml'), 'name: web\nschedule: "61 * * * *"\ntarget: nowhere\nsources: [{ path: /srv/www }]\n');
  const afterEdit = (await problemLines()).filter((l) => l.includes('web.yaml'));
  t.true(afterEdit.length >= 2, afterEdit.join('\n'));
  child.kill('SIGHUP');
  await waitFor(child, /reloaded: /, out);
  t.regex(out.text, new RegExp(`web\\.yaml is invalid, keeping the previous version of policy web - ${afterEdit.length} problems:`));
  for (const line of afterEdit) t.true(out.text.includes(`Z   ${line}\n`), `missing from the log: ${line}\n${out.text}`);

  child.kill('SIGTERM');
  t.is(await exited(child), 0, out.err);
});
