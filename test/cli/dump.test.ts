/**
 * `drctl dump POINT PATH`: a file of a point on stdout, byte for byte; a folder as a tar
 * stream with --archive tar; usage mistakes exit 2 with nothing on stdout; a reader that stops
 * early (`| head -c 100`) ends drctl quietly with exit 0. Real repository, real CLI.
 */
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, readFile, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DRCTL, drctl, json, oneLine, startDrctl } from '../support/cli.js';
import { sharedTempDir, tempDir } from '../support/tmp.js';

let root = '';
let repo = '';
let src = '';
let vmPoint = '';

test.before(async () => {
  root = await sharedTempDir('drctl-dump-');
  repo = join(root, 'repo');
  src = join(root, 'src');
  await mkdir(join(src, 'etc'), { recursive: true });
  await mkdir(join(src, 'var', 'www', 'cgi'), { recursive: true });
  await writeFile(join(src, 'etc', 'app.conf'), 'listen 8080\n');
  await writeFile(join(src, 'empty.txt'), '');
  await writeFile(join(src, 'big.bin'), randomBytes(9 << 20)); // over 8 MiB: several chunks
  await writeFile(join(src, 'var', 'www', 'index.html'), '<h1>hi</h1>\n');
  await writeFile(join(src, 'var', 'www', 'cgi', 'run.sh'), '#!/bin/sh\necho ok\n');
  await chmod(join(src, 'var', 'www', 'cgi', 'run.sh'), 0o750);
  await writeFile(join(src, 'var', 'www', 'data.bin'), randomBytes(3 << 20));
  await symlink('index.html', join(src, 'var', 'www', 'home.html'));
  await symlink('etc/app.conf', join(src, 'current'));
  await writeFile(join(root, 'disk.img'), randomBytes(1 << 20));
  for (const args of [['init', '--repo', repo], ['backup', '--repo', repo, '--files', src, '--name', 'web']]) {
    const r = await drctl(args);
    if (r.code !== 0) throw new Error(r.stderr);
  }
  vmPoint = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--image', join(root, 'disk.img'), '--name', 'disk', '--json'])).id;
});

test.after.always(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

/** `drctl dump` (of the shared repository unless args give --repo), stdout kept as bytes. */
function dump(args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = startDrctl(['dump', ...(args.includes('--repo') ? [] : ['--repo', repo]), ...args]);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 124, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

test('a file is written to stdout byte for byte: small, empty, and one of several chunks', async (t) => {
  for (const path of ['etc/app.conf', 'empty.txt', '/big.bin']) {
    const r = await dump(['latest', path, '--name', 'web']);
    t.is(r.code, 0, r.stderr);
    t.true(r.stdout.equals(await readFile(join(src, path))), `${path}: ${r.stdout.length} bytes`);
    t.is(r.stderr, '', 'nothing but the data');
  }
});

test('--archive tar of a folder extracts to the same names, bytes, modes and links, in the layout restore --to x.tar writes', async (t) => {
  const dir = await tempDir(t);
  const r = await dump(['latest', 'var/www', '--name', 'web', '--archive', 'tar']);
  t.is(r.code, 0, r.stderr);
  const out = join(dir, 'out');
  await mkdir(out);
  execFileSync('tar', ['-x', '-C', out], { input: r.stdout });
  t.deepEqual(await describeTree(join(out, 'var', 'www')), await describeTree(join(src, 'var', 'www')));
  t.deepEqual(await readdir(out), ['var']);
  const restored = join(dir, 'restored.tar');
  t.is((await drctl(['restore', '--repo', repo, 'latest', '--name', 'web', '--include', 'var/www', '--to', restored])).code, 0);
  t.true(r.stdout.equals(await readFile(restored)), 'the same tar as the archive restore writes');
});

test('a folder without --archive tar, a missing path, a symlink and a VM-level point exit 2 with one line and nothing on stdout', async (t) => {
  const folder = await dump(['latest', 'var/www', '--name', 'web']);
  t.is(folder.code, 2);
  t.regex(oneLine(folder.stderr), /var\/www .*folder.*--archive tar/);
  const whole = await dump(['latest', '--name', 'web']);
  t.is(whole.code, 2, 'the whole point is a folder too');
  const missing = await dump(['latest', 'etc/nope.conf', '--name', 'web']);
  t.is(missing.code, 2);
  t.regex(oneLine(missing.stderr), /etc\/nope\.conf: no such path in point [0-9a-f]{12}.*drctl ls POINT/);
  const link = await dump(['latest', 'current', '--name', 'web']);
  t.is(link.code, 2);
  t.regex(oneLine(link.stderr), /current .*symlink to etc\/app\.conf/);
  const vm = await dump([vmPoint, 'etc/app.conf']);
  t.is(vm.code, 2);
  t.regex(oneLine(vm.stderr), /VM-level point: it holds disks.*drctl restore POINT --to FILE/);
  for (const r of [folder, whole, missing, link, vm]) t.is(r.stdout.length, 0);
});

test('--json is not an option of dump: exit 2, nothing on stdout', async (t) => {
  const r = await dump(['latest', 'etc/app.conf', '--name', 'web', '--json']);
  t.is(r.code, 2);
  t.regex(r.stderr, /unknown option '--json'/);
  t.is(r.stdout.length, 0);
});

test('a reader that stops early (| head -c 100) ends drctl with exit 0 and no stack trace', async (t) => {
  const dir = await tempDir(t);
  const head = join(dir, 'head.bin');
  const script = `set -o pipefail; "$0" "$1" dump --repo "$2" latest big.bin --name web 2>"$3" | head -c 100 >"$4"`;
  const code = await new Promise<number | null>((resolve, reject) => {
    const sh = spawn('bash', ['-c', script, process.execPath, DRCTL, repo, join(dir, 'err.txt'), head], { stdio: 'ignore' });
    sh.on('error', reject);
    sh.on('close', resolve);
  });
  const stderr = await readFile(join(dir, 'err.txt'), 'utf8');
  t.is(code, 0, stderr);
  t.notRegex(stderr, /\n\s+at /, 'no stack trace');
  t.true((await readFile(head)).equals((await readFile(join(src, 'big.bin'))).subarray(0, 100)));
});

test('a repository on a read-only filesystem dumps without a lock, the notice on stderr only', async (t) => {
  if (process.getuid?.() !== 0) {
    if (process.env.DR_REQUIRE_INTEGRATION === '1') t.fail('needs root for a read-only bind mount');
    else t.pass();
    return;
  }
  const view = join(await tempDir(t), 'ro');
  await mkdir(view);
  execFileSync('mount', ['--bind', repo, view]);
  t.teardown(() => void execFileSync('umount', [view]));
  execFileSync('mount', ['-o', 'remount,ro,bind', view]);
  const r = await dump(['--repo', view, 'latest', 'etc/app.conf', '--name', 'web']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.toString(), 'listen 8080\n');
  t.regex(oneLine(r.stderr), /read-only filesystem - reading it without a lock/);
});

/** Every entry under `dir`: name, type, permission bits, and content or link target. */
async function describeTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(dir, { recursive: true })).sort()) {
    const p = join(dir, name);
    const s = await lstat(p);
    const what = s.isSymbolicLink() ? `-> ${await readlink(p)}` : s.isDirectory() ? 'dir' : `${(await readFile(p)).toString('base64').slice(0, 64)} ${s.size}`;
    out.push(`${name} ${(s.mode & 0o7777).toString(8)} ${what}`);
  }
  return out;
}
