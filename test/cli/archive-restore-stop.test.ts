/**
 * A restore into a .zip, .tar or .tar.gz that is stopped (Ctrl-C, SIGTERM) or fails mid-write
 * (a damaged chunk, a full volume) ends in one line and, with --json, one JSON document: exit 1,
 * no stack trace, and no temporary archive left next to DEST. What only a kill -9 can leave
 * (DEST.partial-*) is named by the next restore to DEST, and left for the operator to delete.
 */
import test, { type ExecutionContext } from 'ava';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { drctl, json, startDrctl, type CliResult } from '../support/cli.js';
import { mountSmallVolume } from '../support/small-volume.js';
import { sharedTempDir, tempDir } from '../support/tmp.js';
import { packFiles } from '../support/repo-files.js';
import { MiB, flipByte } from '../support/images.js';

interface ErrorJson { error: { code: string; message: string; hint?: string } }

const FORMATS = ['zip', 'tar', 'tar.gz'] as const;

let root = '';
let repo = '';
/** One 96 MiB file: many chunks, streamed into its archive entry. */
let big = '';
/** 300 files of 160 KiB: one chunk each, each a buffer entry. */
let small = '';

test.before(async () => {
  root = await sharedTempDir('drctl-archive-stop-');
  repo = join(root, 'repo');
  const r = await drctl(['init', '--repo', repo]);
  if (r.code !== 0) throw new Error(r.stderr);
  const bigSrc = join(root, 'big');
  await mkdir(bigSrc);
  await writeFile(join(bigSrc, 'disk.bin'), randomBytes(96 * MiB));
  const smallSrc = join(root, 'small');
  await mkdir(smallSrc);
  for (let i = 0; i < 300; i++) await writeFile(join(smallSrc, `f${String(i).padStart(3, '0')}.bin`), randomBytes(160 * 1024));
  big = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--files', bigSrc, '--name', 'big', '--json'])).id;
  small = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--files', smallSrc, '--name', 'small', '--json'])).id;
});

test.after.always(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

/** The temporary archives next to `dest` (DEST.partial-<hex>). */
async function partials(dest: string): Promise<string[]> {
  const names = await readdir(dirname(dest)).catch(() => [] as string[]);
  return names.filter((n) => n.startsWith(`${basename(dest)}.partial-`));
}

function collect(child: ChildProcess): Promise<CliResult> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on('data', (b: Buffer) => out.push(b));
  child.stderr?.on('data', (b: Buffer) => err.push(b));
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({
    code: code ?? (signal ? 128 : 1),
    stdout: Buffer.concat(out).toString('utf8'),
    stderr: Buffer.concat(err).toString('utf8'),
  })));
}

/**
 * Start a restore to `dest` and send `signal` once its temporary archive exists: it is writing.
 * A restore that finished before the test saw its temporary archive (a slow test process) was
 * never stopped: its archive is deleted and another restore started, up to 4 times.
 */
async function restoreStoppedMidWrite(t: ExecutionContext, point: string, dest: string, signal: NodeJS.Signals): Promise<CliResult> {
  for (let attempt = 1; ; attempt++) {
    const child = startDrctl(['restore', '--repo', repo, point, '--to', dest, '--json']);
    const result = collect(child);
    let exited = false;
    void result.then(() => (exited = true));
    while (!exited && (await partials(dest)).length === 0) await new Promise((r) => setTimeout(r, 2));
    if (!exited || attempt === 4) {
      child.kill(signal);
      return result;
    }
    const r = await result;
    if (r.code !== 0) return r; // failed on its own: the caller's assertions say how
    t.log(`attempt ${attempt}: the ${signal} restore ended before its temporary archive was seen; again`);
    await rm(dest, { force: true });
  }
}

function noStackTrace(t: ExecutionContext, stderr: string): void {
  t.notRegex(stderr, /^\s+at /m, stderr);
  t.notRegex(stderr, /Unhandled|node:events|bug/, stderr);
}

for (const format of FORMATS) {
  test(`Ctrl-C or SIGTERM during a .${format} restore: exit 1, one JSON document saying DEST was not written, no temporary archive left`, async (t) => {
    const dir = await tempDir(t);
    for (const [point, signal] of [[big, 'SIGINT'], [small, 'SIGTERM']] as const) {
      const dest = join(dir, `${signal}.${format}`);
      const r = await restoreStoppedMidWrite(t, point, dest, signal);
      t.is(r.code, 1, `${signal}: ${r.stderr}`);
      const doc = json<ErrorJson>(r);
      t.is(doc.error.code, 'INTERRUPTED');
      t.true(doc.error.message.includes(`restore destination ${dest} was not written (the partial archive was removed)`), doc.error.message);
      noStackTrace(t, r.stderr);
      const last = r.stderr.trim().split('\n').at(-1) as string;
      t.true(last.startsWith(`drctl: interrupted - restore destination ${dest} was not written`), r.stderr);
    }
    t.deepEqual(await readdir(dir), [], 'neither an archive nor a temporary file is left');
  });
}

test('a damaged chunk in the middle of an archive restore: exit 1 naming the damage and that DEST was not written, no temporary archive left', async (t) => {
  const dir = await tempDir(t);
  const damaged = join(dir, 'repo');
  await cp(repo, damaged, { recursive: true });
  // A byte 5 MB into every large pack: inside a chunk of disk.bin, after a few MB are written.
  for (const p of await packFiles(damaged)) if ((await stat(p)).size > 8 * MiB) await flipByte(p, 5_000_000);
  const out = join(dir, 'out');
  await mkdir(out);
  for (const format of FORMATS) {
    const dest = join(out, `big.${format}`);
    const r = await drctl(['restore', '--repo', damaged, big, '--to', dest, '--json']);
    t.is(r.code, 1, r.stderr);
    const doc = json<ErrorJson>(r);
    t.is(doc.error.code, 'INTEGRITY');
    t.regex(doc.error.message, /does not match its hash \(damaged pack\)/);
    t.true(doc.error.message.includes(`restore destination ${dest} was not written (the partial archive was removed)`), doc.error.message);
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    noStackTrace(t, r.stderr);
  }
  t.deepEqual(await readdir(out), []);
});

test('a restore destination volume that fills up mid-archive: one line, no temporary archive left, for every format', async (t) => {
  const dir = await tempDir(t);
  const mnt = join(dir, 'small');
  if (!(await mountSmallVolume(t, mnt, 24))) return;
  for (const point of [big, small]) {
    for (const format of FORMATS) {
      const dest = join(mnt, `${point.slice(0, 8)}.${format}`);
      const r = await drctl(['restore', '--repo', repo, point, '--to', dest], { timeoutMs: 120_000 });
      t.is(r.code, 1, r.stderr);
      t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
      t.true(r.stderr.includes(`cannot write restore destination ${dest} - its volume is out of space (ENOSPC); the partial archive was removed`), r.stderr);
      noStackTrace(t, r.stderr);
      t.deepEqual(await readdir(mnt), []);
    }
  }
});

test('a temporary archive left by a restore killed with kill -9 is named by the next restore to the same DEST, and not deleted', async (t) => {
  const dir = await tempDir(t);
  const dest = join(dir, 'small.tar.gz');
  const r0 = await restoreStoppedMidWrite(t, small, dest, 'SIGKILL');
  t.is(r0.code, 128, 'killed');
  const left = await partials(dest);
  t.is(left.length, 1, 'kill -9 leaves the temporary archive');
  const r = await drctl(['restore', '--repo', repo, small, '--to', dest, '--json']);
  t.is(r.code, 0, r.stderr);
  t.is(json<{ files: number }>(r).files, 300, 'stdout is one JSON document');
  const warning = r.stderr.trim().split('\n');
  t.is(warning.length, 1, r.stderr);
  t.true(warning[0]?.includes(join(dir, left[0] as string)), r.stderr);
  t.regex(r.stderr, /left by an earlier restore that was killed.*not a whole archive - delete it/);
  t.deepEqual((await readdir(dir)).sort(), [basename(dest), left[0]].sort(), 'the leftover is the operator\'s to delete');
  const again = await drctl(['restore', '--repo', repo, small, '--to', join(dir, 'other.tar')]);
  t.is(again.code, 0, again.stderr);
  t.is(again.stderr, '', 'a leftover of another DEST is not mentioned');
});
