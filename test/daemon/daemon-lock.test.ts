/**
 * One daemon per state folder: a second `drctl daemon` refuses to start, naming the first; a
 * daemon killed with -9 does not block the next one; `backup --policy` is not blocked.
 */
import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { drctl, json, startDrctl } from '../support/cli.js';
import { collect, env, exitWithin, exited, fillIn, waitFor } from './daemon-env.js';

test('a second daemon on the same state folder exits 1 naming the first; backup --policy still runs; after kill -9 the next daemon starts', async (t) => {
  const e = await env(t, { name: 'docs', schedule: '0 */4 * * *', target: 'vol1', sources: [{ path: 'SRC' }], retention: { generations: 5 } });
  const src = join(e.dir, 'docs');
  await mkdir(src);
  await writeFile(join(src, 'a.txt'), 'alpha\n');
  await fillIn(e, 'docs', 'SRC', src);

  const first = startDrctl(['daemon', ...e.args]);
  t.teardown(() => first.kill('SIGKILL'));
  const firstOut = collect(first);
  await waitFor(first, /daemon started/, firstOut);

  const second = startDrctl(['daemon', ...e.args]);
  const secondOut = collect(second);
  t.is(await exitWithin(second, 20_000), 1, `the second daemon ran:\n${secondOut.text}`);
  const lines = secondOut.err.trim().split('\n');
  t.is(lines.length, 1, secondOut.err);
  t.regex(lines[0] ?? '', new RegExp(`state folder ${escape(e.state)} - a daemon is already running there \\(pid ${first.pid} on ${hostname()}, since `));
  t.notRegex(secondOut.text, /daemon started/);

  // A run outside the schedule meets the daemon at the repository lock only.
  const manual = await drctl(['backup', '--policy', 'docs', ...e.args]);
  t.is(manual.code, 0, manual.stderr);

  first.kill('SIGKILL');
  await exited(first);
  const third = startDrctl(['daemon', ...e.args]);
  t.teardown(() => third.kill('SIGKILL'));
  const thirdOut = collect(third);
  await waitFor(third, /daemon started/, thirdOut, 20_000);
  t.regex(thirdOut.text, new RegExp(`took over the daemon lock of pid ${first.pid} on ${hostname()} \\(that daemon is gone\\)`));
  third.kill('SIGTERM');
  t.is(await exited(third), 0, thirdOut.err);
  // Nothing was running: the daemon says so rather than promising to finish in-flight writes.
  t.regex(thirdOut.text, /stopping - no job is running\n.*daemon stopped/);

  t.is(json<unknown[]>(await drctl(['points', '--json', '--target', 'vol1', ...e.args])).length, 1);
  const check = await drctl(['check', '--target', 'vol1', ...e.args]);
  t.is(check.code, 0, check.stdout + check.stderr);
});

test('a daemon lock of another host blocks while its heartbeat goes on and is taken over once it stopped', async (t) => {
  const e = await env(t, { name: 'docs', schedule: '0 */4 * * *', target: 'vol1', sources: [{ path: '/srv/docs' }], retention: { generations: 5 } });
  await mkdir(e.state, { recursive: true });
  const lockOf = (heartbeatAgoMs: number): string => JSON.stringify({
    kind: 'exclusive', host: 'node-b', pid: 4242, command: 'drctl daemon', startedAt: '2026-01-01T00:00:00.000Z',
    heartbeatAt: new Date(Date.now() - heartbeatAgoMs).toISOString(),
  });
  // A state folder shared with node-b, whose daemon beat 20 s ago: alive, as far as we can tell.
  await writeFile(join(e.state, 'daemon.lock'), lockOf(20_000));
  const refused = startDrctl(['daemon', ...e.args]);
  const refusedOut = collect(refused);
  t.is(await exitWithin(refused, 20_000), 1, `the daemon ran:\n${refusedOut.text}`);
  t.regex(refusedOut.err, /already running there \(pid 4242 on node-b, since 2026-01-01T00:00:00.000Z\)/);

  // Its heartbeat stopped 10 minutes ago: node-b's daemon died; the lock is stale.
  await writeFile(join(e.state, 'daemon.lock'), lockOf(10 * 60_000));
  const child = startDrctl(['daemon', ...e.args]);
  t.teardown(() => child.kill('SIGKILL'));
  const out = collect(child);
  await waitFor(child, /daemon started/, out, 20_000);
  t.regex(out.text, /took over the daemon lock of pid 4242 on node-b/);
  child.kill('SIGTERM');
  t.is(await exited(child), 0, out.err);
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
