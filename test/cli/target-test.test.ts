/**
 * `drctl target test NAME` on local targets: what a backup needs of the folder — it exists, is
 * a folder, holds a repository (or nothing yet: the first backup creates one) and can be
 * written. Each failure is one line naming the target file, the path and what to do; exit 1.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

async function configWith(t: Parameters<typeof tempDir>[0], name: string, path: (dir: string) => string): Promise<{ dir: string; path: string; args: string[] }> {
  const dir = await tempDir(t);
  const config = join(dir, 'config');
  await mkdir(join(config, 'targets'), { recursive: true });
  await writeFile(join(config, 'targets', `${name}.yaml`), `type: local\npath: ${path(dir)}\n`);
  return { dir, path: path(dir), args: ['--config', config, '--state', join(dir, 'state')] };
}

/** The one stderr line of a failed check: `drctl: target NAME (…/targets/NAME.yaml): PATH …`. */
function failureLine(t: Parameters<typeof tempDir>[0], r: { code: number; stdout: string; stderr: string }, name: string, path: string): string {
  t.is(r.code, 1, r.stdout + r.stderr);
  const lines = r.stderr.trimEnd().split('\n');
  t.is(lines.length, 1, r.stderr);
  const line = lines[0] ?? '';
  t.true(line.startsWith(`drctl: target ${name} (`) && line.includes(`targets/${name}.yaml): ${path} `), line);
  t.notRegex(r.stdout, /free of/);
  return line;
}

test('a path that is a regular file fails: not a folder', async (t) => {
  const c = await configWith(t, 'passwd', (dir) => join(dir, 'a-file'));
  await writeFile(c.path, 'root:x:0:0::/root:/bin/sh\n');
  const line = failureLine(t, await drctl(['target', 'test', 'passwd', ...c.args]), 'passwd', c.path);
  t.regex(line, /is not a folder - set path: to the folder that holds \(or will hold\) the repository$/);
});

test('a missing path fails with what to do, not a bare ENOENT', async (t) => {
  const c = await configWith(t, 'gone', (dir) => join(dir, 'not-mounted', 'drctl'));
  const line = failureLine(t, await drctl(['target', 'test', 'gone', ...c.args]), 'gone', c.path);
  t.regex(line, /does not exist - mount its volume if it lives on one, or create the repository with `drctl init --target gone`$/);
  t.notRegex(line, /ENOENT|statfs/);
});

test('a folder of other files fails: not a repository', async (t) => {
  const c = await configWith(t, 'other', (dir) => join(dir, 'other'));
  await mkdir(c.path);
  await writeFile(join(c.path, 'notes.txt'), 'not a repository\n');
  const line = failureLine(t, await drctl(['target', 'test', 'other', ...c.args]), 'other', c.path);
  t.regex(line, /holds other files but no drctl repository \(no config\.json\)/);
});

test('an empty folder passes and says the first backup creates the repository; a repository passes; neither is changed', async (t) => {
  const c = await configWith(t, 'vol1', (dir) => join(dir, 'vol1'));
  await mkdir(c.path);
  const empty = await drctl(['target', 'test', 'vol1', ...c.args]);
  t.is(empty.code, 0, empty.stderr);
  t.regex(empty.stdout, /^target vol1: local folder \S+, empty - no repository yet: the first backup creates one \(or `drctl init --target vol1`\), writable, .* free of /);
  t.deepEqual(await readdir(c.path), [], 'the write test leaves nothing behind');

  const init = await drctl(['init', '--target', 'vol1', ...c.args]);
  t.is(init.code, 0, init.stderr);
  const before = (await readdir(c.path, { recursive: true })).sort();
  const repo = await drctl(['target', 'test', 'vol1', ...c.args]);
  t.is(repo.code, 0, repo.stderr);
  t.regex(repo.stdout, /^target vol1: local folder \S+, repository format 1, writable, /);
  t.deepEqual((await readdir(c.path, { recursive: true })).sort(), before);
});

test('a repository on a read-only mount fails: not writable, with the remount hint', async (t) => {
  const c = await configWith(t, 'ro', (dir) => join(dir, 'ro'));
  await mkdir(c.path);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', c.path], { stdio: 'pipe' });
  } catch (e) {
    const msg = `needs root to mount a tmpfs: ${(e as Error).message.split('\n')[0] ?? ''}`;
    if (process.env.DR_REQUIRE_INTEGRATION === '1') t.fail(msg);
    else t.log(`skipped: ${msg}`);
    t.pass();
    return;
  }
  t.teardown(() => execFileSync('umount', ['-l', c.path]));
  const init = await drctl(['init', '--target', 'ro', ...c.args]);
  t.is(init.code, 0, init.stderr);
  execFileSync('mount', ['-o', 'remount,ro', c.path]);
  const line = failureLine(t, await drctl(['target', 'test', 'ro', ...c.args]), 'ro', c.path);
  t.regex(line, /is not writable \(EROFS in tmp\/\) - its filesystem is mounted read-only: remount it read-write/);
});
