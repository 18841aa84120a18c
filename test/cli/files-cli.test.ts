import test from 'ava';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, readFile, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DRCTL, drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

test('a special file makes the backup partial: exit 3, listed on stderr and on the point, the rest restores', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await mkdir(join(src, 'sub'), { recursive: true });
  await writeFile(join(src, 'sub', 'a.txt'), 'alpha\n');
  execFileSync('mkfifo', [join(src, 'sub', 'pipe')]);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const r = await drctl(['backup', '--repo', repo, '--files', src, '--name', 'src']);
  t.is(r.code, 3, r.stderr);
  t.regex(r.stderr, /sub\/pipe/);
  t.regex(r.stderr, /partial/);
  const [p] = json<{ id: string; errors: { path: string; message: string }[] }[]>(await drctl(['points', '--repo', repo, '--json']));
  t.deepEqual(p?.errors.map((e) => e.path.endsWith('sub/pipe')), [true]);
  const out = join(dir, 'out');
  t.is((await drctl(['restore', '--repo', repo, 'latest', '--to', out])).code, 0);
  t.is(await readFile(join(out, 'sub', 'a.txt'), 'utf8'), 'alpha\n');
});

test('a file it may not read is listed and not counted; names with control characters print escaped, --json gives them as they are', async (t) => {
  if (process.getuid?.() !== 0) return t.pass('needs root to run drctl as another user');
  const dir = await tempDir(t);
  await chmod(dir, 0o755);
  const src = join(dir, 'src');
  await mkdir(src);
  const odd = 'title\x1b]0;pwned\x07\nline';
  await writeFile(join(src, odd), 'odd name\n');
  await writeFile(join(src, 'ok.txt'), 'readable\n');
  await writeFile(join(src, 'secret.txt'), 'not for nobody\n', { mode: 0o600 });
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  execFileSync('chown', ['-R', '65534:65534', repo]);
  execFileSync('chown', ['0:0', join(src, 'secret.txt')]);
  const asNobody = (args: string[]) => {
    try {
      return { code: 0, stdout: execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, DRCTL, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }), stderr: '' };
    } catch (e) {
      const x = e as { status: number; stdout: string; stderr: string };
      return { code: x.status, stdout: x.stdout, stderr: x.stderr };
    }
  };
  const r = asNobody(['backup', '--repo', repo, '--files', src, '--name', 'src', '--state', join(dir, 'state')]);
  t.is(r.code, 3, r.stderr);
  t.regex(r.stderr, /skipped secret\.txt: permission denied/);
  const points = json<{ stats: { files: number }; errors: { path: string }[] }[]>(await drctl(['points', '--repo', repo, '--json']));
  t.is(points[0]?.stats.files, 2, 'the two files stored, not the one skipped');
  const ls = await drctl(['ls', '--repo', repo, 'latest']);
  t.true(ls.stdout.includes('title\\x1b]0;pwned\\x07\\nline'), ls.stdout);
  t.false(ls.stdout.includes('\x1b'), 'no raw ESC reaches the terminal');
  const listed = json<{ path: string }[]>(await drctl(['ls', '--repo', repo, 'latest', '--json']));
  t.true(listed.some((e) => e.path === odd));
});

test('a repository inside the folder being backed up is left out with a warning, not backed up into itself', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'home');
  await mkdir(join(src, 'docs'), { recursive: true });
  await writeFile(join(src, 'docs', 'a.txt'), 'alpha\n');
  const repo = join(src, 'backups', 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  for (let run = 0; run < 2; run++) {
    const r = await drctl(['backup', '--repo', repo, '--files', src, '--name', 'home']);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /warning: backups\/repo is the repository being written to; it was left out/);
  }
  const listed = json<{ path: string }[]>(await drctl(['ls', '--repo', repo, 'latest', '--json'])).map((e) => e.path);
  t.deepEqual(listed.sort(), ['backups', 'docs', 'docs/a.txt']);
});

test('restore --include to a .tar and a .zip from the command line', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await mkdir(join(src, 'docs'), { recursive: true });
  await writeFile(join(src, 'docs', 'q3.txt'), 'quarter three\n');
  await writeFile(join(src, 'other.txt'), 'not wanted\n');
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  t.is((await drctl(['backup', '--repo', repo, '--files', src, '--name', 'src'])).code, 0);
  for (const ext of ['tar', 'zip']) {
    const archive = join(dir, `out.${ext}`);
    const r = await drctl(['restore', '--repo', repo, 'latest', '--include', 'docs/q3.txt', '--to', archive]);
    t.is(r.code, 0, r.stderr);
    const listing = ext === 'tar'
      ? execFileSync('tar', ['-tf', archive], { encoding: 'utf8' })
      : execFileSync('python3', ['-c', 'import sys, zipfile; print("\\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))', archive], { encoding: 'utf8' });
    t.true(listing.includes('docs/q3.txt'), listing);
    t.false(listing.includes('other.txt'), listing);
    const again = await drctl(['restore', '--repo', repo, 'latest', '--to', archive]);
    t.is(again.code, 2, 'an existing archive is not overwritten');
  }
  const content = execFileSync('tar', ['-xOf', join(dir, 'out.tar'), 'docs/q3.txt'], { encoding: 'utf8' });
  t.is(content, 'quarter three\n');
});

test('ls lists what a point holds, and a path it lists restores with --include', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await mkdir(join(src, 'etc', 'nginx'), { recursive: true });
  await writeFile(join(src, 'etc', 'nginx', 'site.conf'), 'server {}\n');
  await writeFile(join(src, 'readme.txt'), 'hello\n');
  await chmod(join(src, 'readme.txt'), 0o640);
  await utimes(join(src, 'readme.txt'), new Date('2026-03-04T05:06:07Z'), new Date('2026-03-04T05:06:07Z'));
  await symlink('etc/nginx/site.conf', join(src, 'current'));
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  t.is((await drctl(['backup', '--repo', repo, '--files', src, '--name', 'web'])).code, 0);

  const all = await drctl(['ls', '--repo', repo, 'latest']);
  t.is(all.code, 0, all.stderr);
  t.deepEqual(all.stdout.trim().split('\n'), ['current -> etc/nginx/site.conf', 'etc/', 'etc/nginx/', 'etc/nginx/site.conf', 'readme.txt']);

  const under = await drctl(['ls', '--repo', repo, 'latest', 'etc/nginx']);
  t.deepEqual(under.stdout.trim().split('\n'), ['etc/nginx/', 'etc/nginx/site.conf'], 'only what is at or under the path');

  const long = await drctl(['ls', '--repo', repo, 'latest', 'readme.txt', '--long']);
  t.regex(long.stdout.trim(), /^-rw-r-----\s+\d+:\d+\s+6\s+2026-03-04T05:06:07Z\s+readme\.txt$/);

  const listed = json<{ path: string; type: string; size: number; mtime: string }[]>(await drctl(['ls', '--repo', repo, 'latest', '--json']));
  const readme = listed.find((e) => e.path === 'readme.txt');
  t.deepEqual([readme?.type, readme?.size, readme?.mtime], ['file', 6, '2026-03-04T05:06:07.000Z']);
  const file = listed.find((e) => e.type === 'file' && e.path.endsWith('.conf'))?.path as string;
  const out = join(dir, 'out');
  t.is((await drctl(['restore', '--repo', repo, 'latest', '--include', file, '--to', out])).code, 0);
  t.is(await readFile(join(out, 'etc', 'nginx', 'site.conf'), 'utf8'), 'server {}\n');

  const missing = await drctl(['ls', '--repo', repo, 'latest', 'etc/apache2']);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /etc\/apache2: no such path/);
});
