/**
 * Waiting for a repository lock held by a live job: how long is the operator's choice
 * (--lock-wait SECONDS, 0 fails at once), the wait says what it waits for, ends when the holder
 * goes, and a long wait stays quiet (no Node warning about leaked abort listeners).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { drctl, json, startDrctl } from '../support/cli.js';
import { sharedTempDir, tempDir } from '../support/tmp.js';

let root = '';
let repo = '';

test.before(async () => {
  root = await sharedTempDir('drctl-lock-wait-');
  repo = join(root, 'repo');
  const src = join(root, 'src');
  await mkdir(src);
  await writeFile(join(src, 'a.txt'), 'alpha\n');
  for (const args of [['init', '--repo', repo], ['backup', '--repo', repo, '--files', src, '--name', 'src']]) {
    const r = await drctl(args);
    if (r.code !== 0) throw new Error(r.stderr);
  }
});

test.after.always(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

const HOLDER = 'e'.repeat(32);

/**
 * A copy of the repository whose exclusive lock is held by a live process on this host (as
 * prune's final step holds it), and that process, to end when the test wants the lock free.
 */
async function lockedRepo(t: ExecutionContext): Promise<{ repo: string; release: () => void }> {
  const dir = await tempDir(t);
  const copy = join(dir, 'repo');
  const { cp } = await import('node:fs/promises');
  await cp(repo, copy, { recursive: true });
  const holder = spawn('sleep', ['300']);
  t.teardown(() => holder.kill());
  const now = new Date().toISOString();
  await mkdir(join(copy, 'locks'), { recursive: true });
  await writeFile(join(copy, 'locks', `${HOLDER}.json`), JSON.stringify({
    kind: 'exclusive', host: hostname(), pid: holder.pid, command: 'drctl prune (final step)', startedAt: now, heartbeatAt: now,
  }));
  return { repo: copy, release: () => holder.kill() };
}

test('--lock-wait 0: ls and check of a locked repository fail at once in one line naming the holder, without waiting', async (t) => {
  const { repo: locked } = await lockedRepo(t);
  for (const args of [['ls', 'latest'], ['check'], ['check', '--read-data']]) {
    const r = await drctl([...args, '--repo', locked, '--lock-wait', '0']);
    t.is(r.code, 1, r.stderr);
    const lines = r.stderr.trim().split('\n');
    t.is(lines.length, 1, r.stderr);
    t.regex(lines[0] as string, /^drctl: cannot lock repository .* - locked by `drctl prune \(final step\)` \(exclusive, pid \d+ on /);
    t.notRegex(r.stderr, /waiting/);
  }
  t.deepEqual(await readdir(join(locked, 'locks')), [`${HOLDER}.json`], 'no lock of the failed commands is left');
});

test('a wait of more than 12 polls on a held lock ends in exit 1 naming the holder, with no MaxListenersExceededWarning', async (t) => {
  const { repo: locked } = await lockedRepo(t);
  // Polls back off to every 2 s: 16 s is 13 polls, and each used to leave an abort listener.
  const r = await drctl(['check', '--repo', locked, '--lock-wait', '16', '--json']);
  t.is(r.code, 1, r.stderr);
  t.is(json<{ error: { code: string } }>(r).error.code, 'REPO_LOCKED');
  t.regex(r.stderr, /waiting for the repository lock held by `drctl prune \(final step\)` .*\(up to 16 s; --lock-wait SECONDS changes it, Ctrl-C stops\)/);
  t.notRegex(r.stderr, /MaxListenersExceededWarning|memory leak/);
  t.regex(r.stderr, /cannot lock repository .* - locked by `drctl prune \(final step\)`/);
});

test('a command waiting for a lock goes on as soon as the holder is gone', async (t) => {
  const { repo: locked, release } = await lockedRepo(t);
  const child = startDrctl(['ls', 'latest', '--repo', locked, '--lock-wait', '120']);
  let out = '';
  let err = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (err += b.toString()));
  const code = new Promise<number | null>((res) => child.on('close', (c) => res(c)));
  let exited = false;
  void code.then(() => (exited = true));
  while (!exited && !/waiting for/.test(err)) await new Promise((r) => setTimeout(r, 25));
  t.regex(err, /waiting for the repository lock held by `drctl prune \(final step\)`.*\(up to 2 min;/);
  release(); // the holder's process ends: its lock is stale, the next poll removes it
  t.is(await code, 0, err);
  t.is(out, 'a.txt\n');
  t.deepEqual(await readdir(join(locked, 'locks')), [], 'ls released its lock; the stale one is gone');
});

test('Ctrl-C while waiting for a lock: exit 1, interrupted, and only the holder\'s lock is left', async (t) => {
  const { repo: locked } = await lockedRepo(t);
  const child = startDrctl(['check', '--repo', locked]);
  let err = '';
  child.stderr?.on('data', (b: Buffer) => (err += b.toString()));
  const code = new Promise<number | null>((res) => child.on('close', (c) => res(c)));
  while (!/waiting for/.test(err)) await new Promise((r) => setTimeout(r, 25));
  t.regex(err, /\(up to 10 min;/, 'the default wait');
  child.kill('SIGINT');
  t.is(await code, 1, err);
  t.regex(err, /interrupted/);
  t.notRegex(err, /MaxListenersExceededWarning/);
  t.deepEqual(await readdir(join(locked, 'locks')), [`${HOLDER}.json`]);
});

test('--lock-wait takes seconds, 0 or more: anything else is a usage error (exit 2) before anything is read', async (t) => {
  for (const bad of ['abc', '-1', '']) {
    const r = await drctl(['ls', 'latest', '--repo', join(root, 'no-such-repo'), '--lock-wait', bad]);
    t.is(r.code, 2, r.stderr);
    t.true(r.stderr.startsWith(`drctl: --lock-wait ${bad}: expected seconds (0 or more)`), r.stderr);
  }
});
