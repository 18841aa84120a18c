import test from 'ava';
import { readFile, stat, writeFile, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { requireTools } from '../support/tools.js';
import { MiB, makeRawImage, seededBytes, standardRegions, toQcow2, writeAt } from '../support/images.js';

interface PointJson {
  id: string;
  name: string;
  time: string;
  kind: string;
  stats: { readBytes: number; newBytes: number; logicalBytes: number };
  changeTracking?: { mode: string; reason?: string };
  warnings?: string[];
  parent?: string;
}

async function setup(t: Parameters<typeof tempDir>[0]) {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  const img = join(dir, 'disk.img');
  await makeRawImage(img, 64 * MiB, standardRegions());
  const init = await drctl(['init', '--repo', repo]);
  t.is(init.code, 0, init.stderr);
  return { dir, repo, img };
}

async function backup(t: Parameters<typeof tempDir>[0], args: string[]): Promise<PointJson> {
  const r = await drctl(['backup', ...args, '--json']);
  t.is(r.code, 0, r.stderr);
  return json<PointJson>(r);
}

test('raw image round trip is byte-identical and holes stay holes', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img } = await setup(t);
  const p = await backup(t, ['--repo', repo, '--image', img, '--name', 'vm1']);
  t.is(p.kind, 'vm');
  t.is(p.name, 'vm1');
  // Only allocated extents are read: ~12 MiB of 64.
  t.true(p.stats.readBytes < 16 * MiB, `read ${p.stats.readBytes}`);
  const out = join(dir, 'restored.img');
  const r = await drctl(['restore', '--repo', repo, p.id.slice(0, 10), '--to', out]);
  t.is(r.code, 0, r.stderr);
  t.true((await readFile(out)).equals(await readFile(img)), 'restored bytes differ');
  const st = await stat(out);
  t.is(st.size, 64 * MiB);
  t.true(st.blocks * 512 < 20 * MiB, `restored image is not sparse: ${st.blocks * 512} bytes allocated`);
});

test('ls of a VM-level point lists its disk with size and source format; a path is refused', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img } = await setup(t);
  const q = join(dir, 'web01.qcow2');
  toQcow2(img, q, false);
  await backup(t, ['--repo', repo, '--image', q, '--name', 'web01']);
  const r = await drctl(['ls', '--repo', repo, 'latest', '--name', 'web01']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.trim(), 'web01.qcow2  64.0 MiB  qcow2');
  t.deepEqual(json<unknown[]>(await drctl(['ls', '--repo', repo, 'latest', '--json'])), [{ disk: 'web01.qcow2', sizeBytes: 64 * MiB, format: 'qcow2' }]);
  const path = await drctl(['ls', '--repo', repo, 'latest', 'etc']);
  t.is(path.code, 2);
  t.regex(path.stderr, /VM-level point: it holds disks, not paths/);
});

test('qcow2 images restore to their raw content (direct and compressed-cluster paths)', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img } = await setup(t);
  for (const compressed of [false, true]) {
    const q = join(dir, `disk${compressed ? '-c' : ''}.qcow2`);
    toQcow2(img, q, compressed);
    const p = await backup(t, ['--repo', repo, '--image', q, '--name', `q${compressed ? 'c' : ''}`]);
    if (compressed) t.truthy(p.warnings?.some((w) => w.includes('temporary raw copy')));
    const out = join(dir, `out${compressed ? '-c' : ''}`);
    const r = await drctl(['restore', '--repo', repo, 'latest', '--name', p.name, '--to', `${out}/`]);
    t.is(r.code, 2, 'restore into a missing folder must fail as a usage error');
    const r2 = await drctl(['restore', '--repo', repo, 'latest', '--name', p.name, '--to', dir + '/']);
    t.is(r2.code, 0, r2.stderr);
    const restored = join(dir, `disk${compressed ? '-c' : ''}.raw`);
    t.true((await readFile(restored)).equals(await readFile(img)), `qcow2${compressed ? ' (compressed)' : ''} content differs`);
  }
});

test('the format comes from the content: a qcow2 named .img is read as qcow2; without qemu-img a raw image still backs up and a qcow2 is refused', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img } = await setup(t);
  const disguised = join(dir, 'looks-raw.img');
  toQcow2(img, disguised, false);
  const p = await backup(t, ['--repo', repo, '--image', disguised, '--name', 'disguised']);
  const out = join(dir, 'disguised.out');
  t.is((await drctl(['restore', '--repo', repo, p.id, '--to', out])).code, 0);
  t.true((await readFile(out)).equals(await readFile(img)), 'a qcow2 named .img must restore to its guest content');

  const noQemuImg = { env: { PATH: await tempDir(t) } }; // an empty folder: qemu-img is not found
  const raw = await drctl(['backup', '--repo', repo, '--image', img, '--name', 'raw', '--json'], noQemuImg);
  t.is(raw.code, 0, raw.stderr);
  t.truthy(json<PointJson>(raw).warnings?.some((w) => w.includes('qemu-img is not installed')));
  const rawOut = join(dir, 'raw.out');
  t.is((await drctl(['restore', '--repo', repo, 'latest', '--name', 'raw', '--to', rawOut])).code, 0);
  t.true((await readFile(rawOut)).equals(await readFile(img)), 'raw image read without qemu-img differs');
  const q = await drctl(['backup', '--repo', repo, '--image', disguised, '--name', 'q'], noQemuImg);
  t.is(q.code, 2);
  t.regex(q.stderr.trim(), new RegExp(`^[^\\n]*${disguised.replace(/[.]/g, '\\.')}[^\\n]*qcow2[^\\n]*install qemu-utils`));
  const check = await drctl(['check', '--repo', repo]);
  t.is(check.code, 0, check.stderr);
});

test('a raw block device backs up at its full size and restores byte-identical, with and without qemu-img', async (t) => {
  if (!requireTools(t, 'qemu-img', 'losetup')) return;
  if (process.getuid?.() !== 0) {
    if (process.env.DR_REQUIRE_INTEGRATION === '1') t.fail('needs root to attach a loop device');
    else t.pass();
    return;
  }
  const { dir, repo, img } = await setup(t);
  const dev = execFileSync('losetup', ['--find', '--show', '--read-only', img]).toString().trim();
  t.teardown(() => { execFileSync('losetup', ['-d', dev]); });
  const noQemuImg = { PATH: await tempDir(t) };
  for (const [name, env] of [['dev', {}], ['dev-without-qemu-img', noQemuImg]] as const) {
    const r = await drctl(['backup', '--repo', repo, '--image', dev, '--name', name, '--json'], { env });
    t.is(r.code, 0, r.stderr);
    t.is(json<PointJson>(r).stats.logicalBytes, 64 * MiB, `${name}: the device's size, not stat's 0`);
    const out = join(dir, `${name}.out`);
    t.is((await drctl(['restore', '--repo', repo, 'latest', '--name', name, '--to', out])).code, 0);
    t.true((await readFile(out)).equals(await readFile(img)), `${name}: restored bytes differ`);
  }
});

test('a second backup stores only the changed chunks, and both points restore', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img } = await setup(t);
  const p1 = await backup(t, ['--repo', repo, '--image', img, '--name', 'vm']);
  const before = await readFile(img);
  await writeAt(img, 5 * MiB + 100, seededBytes('change', 300 * 1024));
  const p2 = await backup(t, ['--repo', repo, '--image', img, '--name', 'vm']);
  t.is(p2.parent, p1.id);
  // 300 KiB at an unaligned offset touches at most 3 chunks of 256 KiB (+ the chunk list).
  t.true(p2.stats.newBytes <= 3 * 256 * 1024 + 64 * 1024, `new bytes ${p2.stats.newBytes}`);
  for (const [p, want] of [[p1, before], [p2, await readFile(img)]] as const) {
    const out = join(dir, `${p.id}.img`);
    const r = await drctl(['restore', '--repo', repo, p.id, '--to', out]);
    t.is(r.code, 0, r.stderr);
    t.true((await readFile(out)).equals(want), `point ${p.id.slice(0, 8)} differs`);
  }
});

test('a changed-extent list reads only those ranges and still commits a full point', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img } = await setup(t);
  await backup(t, ['--repo', repo, '--image', img, '--name', 'vm']);
  const changes = [
    { offset: 4 * MiB + 4096, data: seededBytes('c1', 64 * 1024) },
    { offset: 41 * MiB, data: seededBytes('c2', 128 * 1024) },
  ];
  for (const c of changes) await writeAt(img, c.offset, c.data);
  // The disk also grows by 1 MiB: the new area must be read even though no extent names it.
  await truncate(img, 65 * MiB);
  await writeAt(img, 64 * MiB + 4096, seededBytes('grow', 4096));
  const extents = join(dir, 'extents.json');
  await writeFile(extents, JSON.stringify(changes.map((c) => ({ offset: c.offset, length: c.data.length }))));
  const p = await backup(t, ['--repo', repo, '--image', img, '--name', 'vm', '--changed-extents', extents]);
  t.is(p.changeTracking?.mode, 'changed-extents');
  // The two changed chunks and the 1 MiB the disk grew by (a raw image's holes there are read
  // as zeros rather than looked up), not the other 63 MiB.
  t.true(p.stats.readBytes <= 2 * 256 * 1024 + MiB, `read ${p.stats.readBytes} bytes`);
  const out = join(dir, 'out.img');
  const r = await drctl(['restore', '--repo', repo, p.id, '--to', out]);
  t.is(r.code, 0, r.stderr);
  t.true((await readFile(out)).equals(await readFile(img)), 'synthetic full differs from the disk');
});

test('a changed-extent list without a parent point falls back to a full read, with the reason', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img } = await setup(t);
  const extents = join(dir, 'extents.json');
  await writeFile(extents, '[{"offset": 0, "length": 4096}]');
  const p = await backup(t, ['--repo', repo, '--image', img, '--name', 'fresh', '--changed-extents', extents]);
  t.is(p.changeTracking?.mode, 'full-read');
  t.regex(p.changeTracking?.reason ?? '', /no parent point/);
  t.true(p.stats.readBytes > 10 * MiB);
});

test('points --json lists id, name, time and kind, newest last; latest picks by --name', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { repo, img } = await setup(t);
  const a = await backup(t, ['--repo', repo, '--image', img, '--name', 'a']);
  const b = await backup(t, ['--repo', repo, '--image', img, '--name', 'b']);
  const r = await drctl(['points', '--json'], { env: { DRCTL_REPO: repo } });
  t.is(r.code, 0, r.stderr);
  const list = json<PointJson[]>(r);
  t.deepEqual(list.map((p) => p.id), [a.id, b.id]);
  for (const p of list) {
    t.regex(p.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    t.is(p.kind, 'vm');
  }
  const only = json<PointJson[]>(await drctl(['points', '--repo', repo, '--name', 'a', '--json']));
  t.deepEqual(only.map((p) => p.id), [a.id]);
});

test('a changed-extent list that is not valid JSON or holds a length above 2^53: exit 2, one line naming the file and why, without its content', async (t) => {
  const { dir, repo, img } = await setup(t);
  const bad = join(dir, 'bad.json');
  await writeFile(bad, '[{"offset": 0,\n "length": 4096}] "secret-ish content"');
  const r = await drctl(['backup', '--repo', repo, '--image', img, '--name', 'vm', '--changed-extents', bad]);
  t.is(r.code, 2);
  t.is(r.stderr.split('\n').filter(Boolean).length, 1, r.stderr);
  t.regex(r.stderr, new RegExp(`^drctl: cannot read changed-extent list ${bad} - not valid JSON \\([^()]*line 2, column \\d+\\) \\(give a JSON file`));
  t.false(r.stderr.includes('secret-ish'), 'the file content is not echoed');
  const words = join(dir, 'words.json');
  await writeFile(words, 'offset 0 length 4096');
  const w = await drctl(['backup', '--repo', repo, '--image', img, '--name', 'vm', '--changed-extents', words]);
  t.is(w.code, 2);
  t.regex(w.stderr, /- not valid JSON \(unexpected token 'o'\)/);
  t.false(w.stderr.includes('length 4096'), w.stderr);
  // V8 quotes a piece of the input in this message: left out too.
  await writeFile(words, '[{"offset": 0, "length": 4096, "secret-ish content"}]');
  const q = await drctl(['backup', '--repo', repo, '--image', img, '--name', 'vm', '--changed-extents', words]);
  t.is(q.code, 2);
  t.regex(q.stderr, /- not valid JSON \(unexpected token '\}'\) \(give/);
  t.false(q.stderr.includes('content'), q.stderr);
  const big = join(dir, 'big.json');
  await writeFile(big, '[{"offset": 0, "length": 9007199254740993}]');
  const b = await drctl(['backup', '--repo', repo, '--image', img, '--name', 'vm', '--changed-extents', big]);
  t.is(b.code, 2);
  t.regex(b.stderr, /entry \[0\] length is too large/);
});

test('a changed-extent list with ranges past the end of the disk: the whole disk is read, with a warning that the list may be another disk\'s', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img } = await setup(t);
  await backup(t, ['--repo', repo, '--image', img, '--name', 'vm']);
  // Changed at 20 MiB, but the list (another disk's) names 0 and 1 TiB.
  await writeAt(img, 20 * MiB, seededBytes('unlisted', 64 * 1024));
  const extents = join(dir, 'other-disk.json');
  await writeFile(extents, JSON.stringify([{ offset: 0, length: 4096 }, { offset: 1024 * 1024 * MiB, length: 4096 }]));
  const p = await backup(t, ['--repo', repo, '--image', img, '--name', 'vm', '--changed-extents', extents]);
  t.is(p.changeTracking?.mode, 'full-read');
  t.regex(p.warnings?.join('\n') ?? '', /1 of its 2 range\(s\) start past the end of disk disk\.img \(67108864 bytes\).*may belong to another disk; the whole disk was read/);
  const out = join(dir, 'out.img');
  const r = await drctl(['restore', '--repo', repo, p.id, '--to', out]);
  t.is(r.code, 0, r.stderr);
  t.true((await readFile(out)).equals(await readFile(img)), 'the point misses a change the list did not name');
});

test('a changed-extent list for a disk the newest point of its name does not hold: the reason names both disks', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img } = await setup(t);
  await backup(t, ['--repo', repo, '--image', img, '--name', 'ce']);
  const big = join(dir, 'ce-big.img');
  await makeRawImage(big, 8 * MiB, [{ offset: 0, data: seededBytes('big', 4096) }]);
  const extents = join(dir, 'extents.json');
  await writeFile(extents, '[{"offset": 0, "length": 4096}]');
  const p = await backup(t, ['--repo', repo, '--image', big, '--name', 'ce', '--changed-extents', extents]);
  t.is(p.changeTracking?.mode, 'full-read');
  t.regex(p.changeTracking?.reason ?? '', /^the newest point of ce holds disk disk\.img, not ce-big\.img/);
  t.notRegex(p.changeTracking?.reason ?? '', /no parent point/);
});
