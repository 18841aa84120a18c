/**
 * Output that cannot be written: `drctl … > file` on a full volume must not end in a stack
 * trace or exit 0 (the file is incomplete and the user has to know); a closed pipe
 * (`drctl points | head -1`) ends quietly with the command's own status, as Unix tools do.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DRCTL, drctl } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

/** Run drctl with its stdout on file descriptor `fd`. */
function runTo(fd: number, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [DRCTL, ...args], { stdio: ['ignore', fd, 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stderr }));
  });
}

async function repoWithPoints(t: Parameters<typeof tempDir>[0]): Promise<string> {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  const src = join(dir, 'src');
  await mkdir(src);
  await writeFile(join(src, 'a.txt'), 'a\n');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  for (let i = 0; i < 3; i++) t.is((await drctl(['backup', '--repo', repo, '--files', src, '--name', `n${i}`])).code, 0);
  return repo;
}

test('stdout on a full volume (/dev/full): one line naming ENOSPC and that the output is incomplete, exit 1', async (t) => {
  const repo = await repoWithPoints(t);
  const fd = openSync('/dev/full', 'w');
  try {
    for (const args of [['points', '--repo', repo], ['points', '--repo', repo, '--json']]) {
      const r = await runTo(fd, args);
      t.is(r.code, 1, r.stderr);
      t.is(r.stderr.trim(), 'drctl: cannot write to standard output - ENOSPC: what was written there is incomplete (the volume it goes to is full)');
    }
  } finally {
    closeSync(fd);
  }
});

test('a closed pipe ends the output quietly with exit 0', async (t) => {
  // A listing of ~250 KB: more than a pipe holds, so drctl is still writing when head exits.
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  const src = join(dir, 'src');
  await mkdir(src);
  for (let i = 0; i < 3000; i++) await writeFile(join(src, `a-file-with-a-long-name-to-fill-the-pipe-${String(i).padStart(5, '0')}.txt`), '');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  t.is((await drctl(['backup', '--repo', repo, '--files', src, '--name', 'many'])).code, 0);
  const r = await new Promise<{ code: string; stderr: string }>((resolve, reject) => {
    const sh = spawn('bash', ['-c', `"${process.execPath}" "${DRCTL}" ls --repo "${repo}" latest -l | head -c 100 >/dev/null; echo "\${PIPESTATUS[0]}"`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    sh.stdout.on('data', (b: Buffer) => (out += b.toString()));
    sh.stderr.on('data', (b: Buffer) => (err += b.toString()));
    sh.on('error', reject);
    sh.on('close', () => resolve({ code: out.trim(), stderr: err }));
  });
  t.is(r.code, '0', r.stderr);
  t.is(r.stderr, '');
});
