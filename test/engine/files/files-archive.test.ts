import test from 'ava';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract } from 'tar-stream';
import yauzl from 'yauzl';
import { backupFolder } from '../../../engine/backup/files-backup.js';
import { restoreFiles } from '../../../engine/restore/files-restore.js';
import { DestinationExistsError } from '../../../engine/errors.js';
import { systemClock } from '../../../engine/runtime/clock.js';
import { isRoot, makeTree, setup, snapshot } from './fixtures.js';

interface Item {
  type: string;
  mode: number;
  content?: string;
  target?: string;
  mtimeS: number;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function drain(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of s) parts.push(p as Buffer);
  return Buffer.concat(parts);
}

async function readZip(path: string): Promise<Map<string, Item>> {
  const zip = await yauzl.openPromise(path, { lazyEntries: true });
  const out = new Map<string, Item>();
  await new Promise<void>((resolve, reject) => {
    zip.on('error', reject);
    zip.on('end', resolve);
    zip.on('entry', (e: yauzl.Entry) => {
      const unix = e.externalFileAttributes >>> 16;
      const fmt = unix & 0o170000;
      const type = e.fileName.endsWith('/') ? 'dir' : fmt === 0o120000 ? 'symlink' : 'file';
      void zip.openReadStreamPromise(e).then(drain).then((data) => {
        const item: Item = { type, mode: unix & 0o7777, mtimeS: Math.floor(e.getLastModDate().getTime() / 2000) * 2 };
        if (type === 'file') item.content = sha(data);
        if (type === 'symlink') item.target = data.toString('utf8');
        out.set(e.fileName.replace(/\/$/, ''), item);
        zip.readEntry();
      }, reject);
    });
    zip.readEntry();
  });
  zip.close();
  return out;
}

async function readTar(path: string, gzip: boolean): Promise<Map<string, Item & { linkname?: string }>> {
  const out = new Map<string, Item & { linkname?: string }>();
  const ex = extract();
  const done = (async () => {
    for await (const entry of ex) {
      const h = entry.header;
      const data = await drain(entry as unknown as Readable);
      const item: Item & { linkname?: string } = { type: h.type, mode: h.mode & 0o7777, mtimeS: Math.floor(h.mtime.getTime() / 1000) };
      if (h.type === 'file') item.content = sha(data);
      if (h.type === 'symlink') item.target = h.linkname;
      if (h.type === 'link') item.linkname = h.linkname;
      out.set(h.name.replace(/\/$/, ''), item);
    }
  })();
  await Promise.all([gzip ? pipeline(createReadStream(path), createGunzip(), ex) : pipeline(createReadStream(path), ex), done]);
  return out;
}

async function backedUp(t: Parameters<typeof setup>[0]) {
  const ctx = await setup(t);
  await makeTree(ctx.src);
  const point = await backupFolder(ctx.repo, ctx.src, { name: 'tree', clock: systemClock });
  return { ...ctx, point, expected: await snapshot(ctx.src) };
}

test('zip: every entry with its content, mode and (2 s DOS) mtime; symlinks as symlinks', async (t) => {
  const { dir, repo, point, expected } = await backedUp(t);
  const dest = join(dir, 'out.zip');
  const r = await restoreFiles(repo, point, dest, {});
  t.like(r, { files: 8, dirs: 3, dest });
  t.deepEqual(await readdir(dir), ['out.zip', 'repo', 'src']); // no temp file left behind
  const zip = await readZip(dest);
  t.deepEqual([...zip.keys()], [...expected.keys()]);
  for (const [path, e] of expected) {
    const z = zip.get(path)!;
    if (e.type === 'symlink') {
      t.is(z.type, 'symlink', path);
      t.is(z.target, e.target, path);
    } else {
      t.is(z.type, e.type, path);
      t.is(z.content, e.content, path); // hard links: zip has none, both carry the content
      if (e.type === 'file') t.is(z.mode, e.mode, path);
    }
  }
  const deep = zip.get('a/b/deep.txt')!;
  t.true(Math.abs(deep.mtimeS - Math.floor(expected.get('a/b/deep.txt')!.mtimeMs / 1000)) <= 2);
});

for (const [ext, gzip] of [['tar', false], ['tar.gz', true], ['tgz', true]] as const) {
  test(`${ext}: names, types, modes, mtimes, content; symlinks and hard links as link entries`, async (t) => {
    const { dir, repo, point, expected } = await backedUp(t);
    const dest = join(dir, `out.${ext}`);
    await restoreFiles(repo, point, dest, {});
    const tar = await readTar(dest, gzip);
    t.deepEqual([...tar.keys()], [...expected.keys()]);
    for (const [path, e] of expected) {
      const x = tar.get(path)!;
      t.is(Math.floor(e.mtimeMs / 1000), x.mtimeS, path);
      if (path === 'hard2') {
        t.deepEqual([x.type, x.linkname], ['link', 'hard1']);
        continue;
      }
      t.is(x.type, ({ file: 'file', dir: 'directory', symlink: 'symlink' } as Record<string, string>)[e.type] as string, path);
      if (e.type !== 'symlink') t.is(x.mode, e.mode, path);
      t.is(x.content, e.content, path);
      t.is(x.target, e.target, path);
    }
  });
}

test('zip: names zip tools would read differently (backslash, X:) are left out and listed; nothing in the zip escapes or collides', async (t) => {
  const { dir, repo, src } = await setup(t);
  await mkdir(join(src, 'sub'));
  await mkdir(join(src, 'x'));
  await mkdir(join(src, 'win\\dir'));
  for (const [name, body] of [['sub/..\\..\\evil', 'evil'], ['C:\\Windows', 'w'], ['x\\y', 'not y'], ['x/y', 'the real y'], ['win\\dir/inner', 'in'], ['ok.txt', 'ok']]) {
    await writeFile(join(src, name as string), body as string);
  }
  const point = await backupFolder(repo, src, { name: 'odd', clock: systemClock });
  const dest = join(dir, 'out.zip');
  const r = await restoreFiles(repo, point, dest, {});
  t.deepEqual(r.skipped?.map((s) => s.path).sort(), ['C:\\Windows', 'sub/..\\..\\evil', 'win\\dir', 'x\\y']);
  const zip = await readZip(dest);
  t.deepEqual([...zip.keys()].sort(), ['ok.txt', 'sub', 'x', 'x/y']);
  t.is(zip.get('x/y')?.content, sha(Buffer.from('the real y')));
});

test('tar: owners above 262143 and mtimes before 1970 or after 2038 come back as they were when GNU tar unpacks it', async (t) => {
  if (!isRoot) return t.pass('needs root to chown');
  const { dir, repo, src } = await setup(t);
  const cases: [string, string][] = [['old', '1960-05-05 12:00:00.5 UTC'], ['future', '2400-01-01 00:00:00 UTC'], ['now', '2020-02-02 02:02:02 UTC']];
  for (const [name, when] of cases) {
    await writeFile(join(src, name), name);
    execFileSync('touch', ['-d', when, join(src, name)]);
  }
  execFileSync('chown', ['3000000:4294967294', join(src, 'now')]);
  const point = await backupFolder(repo, src, { name: 'meta', clock: systemClock });
  const dest = join(dir, 'out.tar');
  await restoreFiles(repo, point, dest, {});
  const out = join(dir, 'unpacked');
  await mkdir(out);
  execFileSync('tar', ['xpf', dest, '-C', out], { stdio: 'ignore' });
  for (const [name] of cases) {
    const [a, b] = [await stat(join(src, name), { bigint: true }), await stat(join(out, name), { bigint: true })];
    t.is(b.mtimeNs, a.mtimeNs, name);
    t.deepEqual([b.uid, b.gid], [a.uid, a.gid], name);
  }
});

test('an existing archive is not replaced without overwrite', async (t) => {
  const { dir, repo, point } = await backedUp(t);
  const dest = join(dir, 'out.tar');
  await writeFile(dest, 'precious');
  await t.throwsAsync(restoreFiles(repo, point, dest, {}), { instanceOf: DestinationExistsError, message: /out\.tar/ });
  t.is(await readFile(dest, 'utf8'), 'precious');
  await restoreFiles(repo, point, dest, { overwrite: true, include: ['a/b'] });
  t.deepEqual([...(await readTar(dest, false)).keys()], ['a', 'a/b', 'a/b/deep.txt']);
});
