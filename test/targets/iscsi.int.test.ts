/**
 * iSCSI targets against a real tgtd on 127.0.0.1, attached with the userspace strategy
 * (qemu-storage-daemon + libiscsi → FUSE → loop): this machine has no kernel initiator.
 */
import test from 'ava';
import { mkdir, readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from '../../engine/runtime/exec.js';
import { json } from '../support/cli.js';
import { makeRawImage, seededBytes, MiB } from '../support/images.js';
import { requireTools } from '../support/tools.js';
import { ISCSI_TOOLS, iscsiLab, leftovers } from './iscsi-lab.js';

test('format, attach, back up, detach, re-attach, restore byte-identical', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS)) return;
  const lab = await iscsiLab(t);
  const image = join(lab.dir, 'disk.raw');
  await makeRawImage(image, 24 * MiB, [{ offset: 0, data: seededBytes('a', 5 * MiB) }, { offset: 16 * MiB, data: seededBytes('b', 3 * MiB + 17) }]);

  const refused = await lab.run(['target', 'format', 'san1']);
  t.is(refused.code, 2, refused.stderr);
  t.regex(refused.stderr, /add --format/);
  const fmt = await lab.run(['target', 'format', 'san1', '--format']);
  t.is(fmt.code, 0, fmt.stderr);
  const again = await lab.run(['target', 'format', 'san1', '--format']);
  t.is(again.code, 2);
  t.regex(again.stderr, /already holds ext4 - refusing/);

  const tested = await lab.run(['target', 'test', 'san1', '--json']);
  t.is(tested.code, 0, tested.stderr);
  const tr = json<{ reachable: boolean; login: string; sizeBytes: number; freeBytes: number; filesystem: string }>(tested);
  t.true(tr.reachable);
  t.is(tr.login, 'ok');
  t.is(tr.sizeBytes, 256 * MiB);
  t.is(tr.filesystem, 'ext4');
  t.true(tr.freeBytes > 150 * MiB);

  const att = await lab.run(['target', 'attach', 'san1']);
  t.is(att.code, 0, att.stderr);
  t.is((await lab.run(['target', 'attach', 'san1'])).code, 0, 'attaching an attached target is fine');
  t.is((await lab.run(['init', '--target', 'san1'])).code, 0);
  const b = await lab.run(['backup', '--target', 'san1', '--image', image, '--name', 'vm1', '--json']);
  t.is(b.code, 0, b.stderr);
  const pointId = json<{ id: string }>(b).id;
  const df = json<{ usedBytes: number }>(await lab.run(['target', 'df', 'san1', '--json']));
  t.true(df.usedBytes > 8 * MiB);
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
  t.deepEqual(await leftovers(lab), []);
  t.is((await lab.run(['points', '--target', 'san1'])).code, 2, 'a detached iSCSI target is not read');

  t.is((await lab.run(['target', 'attach', 'san1'])).code, 0);
  const out = join(lab.dir, 'restored.raw');
  const r = await lab.run(['restore', pointId, '--target', 'san1', '--to', out]);
  t.is(r.code, 0, r.stderr);
  t.true((await readFile(out)).equals(await readFile(image)), 'restored image differs');
  t.is((await lab.run(['check', '--target', 'san1'])).code, 0);
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0);
  t.is((await lab.run(['target', 'detach', 'san1'])).code, 0, 'detaching a detached target is fine');
  t.deepEqual(await leftovers(lab), []);
});

test('a wrong CHAP secret fails clearly with exit 1 and leaves nothing mounted', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS)) return;
  const lab = await iscsiLab(t, { secret: 'not-the-secret' });
  const r = await lab.run(['target', 'attach', 'san1']);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, new RegExp(`^drctl: target san1: authentication failed at ${lab.tgtd.portal.replace(/\./g, '\\.')}`));
  t.notRegex(r.stderr + r.stdout, /not-the-secret|test-secret/);
  t.deepEqual(await leftovers(lab), []);
  await t.throwsAsync(stat(join(lab.state, 'targets', 'san1', 'attach.json')));
});

test('tgtd stopped mid-backup: the job fails within the I/O timeout; after restart check passes and the older point restores', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS, 'head')) return;
  const lab = await iscsiLab(t, { ioTimeoutSeconds: 4, lunBytes: 512 * MiB });
  t.is((await lab.run(['target', 'format', 'san1', '--format'])).code, 0);
  const small = join(lab.dir, 'small.raw');
  await makeRawImage(small, 8 * MiB, [{ offset: 0, data: seededBytes('small', 6 * MiB) }]);
  const big = join(lab.dir, 'big.raw');
  await execFile('sh', ['-c', `head -c ${256 * MiB} /dev/urandom > ${big}`]);
  await lab.writePolicy('small', `name: small\ntarget: san1\nsources:\n  - image: ${small}\n    name: small\nretention: { generations: 5 }\n`);
  await lab.writePolicy('big', `name: big\ntarget: san1\nsources:\n  - image: ${big}\n    name: big\nretention: { generations: 5 }\n`);
  const first = await lab.run(['backup', '--policy', 'small']);
  t.is(first.code, 0, first.stderr);
  t.deepEqual(await leftovers(lab), [], 'the last job detached the volume');

  const child = lab.start(['backup', '--policy', 'big']);
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number>((res) => child.on('close', (code) => res(code ?? -1)));
  // Stop the storage once packs are being written to the volume.
  for (let i = 0; i < 3000 && (await packCount(lab.mountpoint)) < 2; i++) await new Promise((r) => setTimeout(r, 10));
  const stoppedAt = Date.now();
  await lab.tgtd.stop();
  const code = await exited;
  const seconds = (Date.now() - stoppedAt) / 1000;
  t.log(`job failed ${seconds.toFixed(1)} s after tgtd was killed (ioTimeoutSeconds 4): ${stderr.trim().split('\n').at(-1) ?? ''}`);
  t.is(code, 1);
  t.true(seconds < 20, `bounded: ${seconds} s`);
  t.regex(stderr, new RegExp(`target san1: .*(portal ${lab.tgtd.portal.replace(/\./g, '\\.')} unreachable|I/O error .* at ${lab.tgtd.portal.replace(/\./g, '\\.')})`));
  t.deepEqual(await leftovers(lab), [], 'the failed job detached what it could');

  await lab.tgtd.start();
  t.is((await lab.run(['target', 'attach', 'san1'])).code, 0);
  const check = await lab.run(['check', '--target', 'san1']);
  t.is(check.code, 0, check.stdout + check.stderr);
  const points = json<{ id: string; name: string }[]>(await lab.run(['points', '--target', 'san1', '--json']));
  t.deepEqual(points.map((p) => p.name), ['small']);
  const out = join(lab.dir, 'small.restored');
  t.is((await lab.run(['restore', (points[0] as { id: string }).id, '--target', 'san1', '--to', out])).code, 0);
  t.true((await readFile(out)).equals(await readFile(small)), 'restored image differs');
});

test('a policy whose iSCSI target is down backs up to its fallbackTarget, marked so', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS)) return;
  const lab = await iscsiLab(t);
  await lab.tgtd.stop();
  const local = join(lab.dir, 'local-repo');
  // A configured local target's folder must exist (a missing one is an unmounted volume).
  await mkdir(local);
  await lab.writeTarget('vol2', `type: local\npath: ${local}\n`);
  const src = join(lab.dir, 'disk.raw');
  await makeRawImage(src, 4 * MiB, [{ offset: 0, data: seededBytes('fb', 2 * MiB) }]);
  await lab.writePolicy('web', `name: web\ntarget: san1\nfallbackTarget: vol2\nsources:\n  - image: ${src}\n    name: web01\nretention: { generations: 3 }\n`);
  const r = await lab.run(['backup', '--policy', 'web', '--json']);
  t.is(r.code, 0, r.stderr);
  const job = json<{ jobs: { state: string; placement: { target: string; fallbackFrom: string; reason: string } }[] }>(r).jobs[0];
  t.is(job?.state, 'ok');
  t.is(job?.placement.target, 'vol2');
  t.is(job?.placement.fallbackFrom, 'san1');
  t.regex(job?.placement.reason ?? '', /target san1: portal 127\.0\.0\.1:\d+ is unreachable/);

  const points = json<{ id: string; placement: { target: string; fallbackFrom: string; reason: string } }[]>(await lab.run(['points', '--target', 'vol2', '--json']));
  t.is(points.length, 1);
  t.like(points[0]?.placement, { target: 'vol2', fallbackFrom: 'san1' });
  const text = await lab.run(['points', '--target', 'vol2']);
  t.regex(text.stdout, /fallback-from:san1/);

  const status = await lab.run(['status', '--json']);
  const st = json<{ policies: { sources: { lastPoint: { placement: { target: string; fallbackFrom: string } } }[] }[] }>(status);
  t.like(st.policies[0]?.sources[0]?.lastPoint.placement, { target: 'vol2', fallbackFrom: 'san1' });
  t.regex((await lab.run(['status'])).stdout, /on fallback target vol2/);

  const out = join(lab.dir, 'restored.raw');
  t.is((await lab.run(['restore', (points[0] as { id: string }).id, '--target', 'vol2', '--to', out])).code, 0);
  t.true((await readFile(out)).equals(await readFile(src)), 'restored image differs');
  t.deepEqual(await leftovers(lab), []);
});

async function packCount(mountpoint: string): Promise<number> {
  const dirs = await readdir(join(mountpoint, 'data')).catch(() => [] as string[]);
  let n = 0;
  for (const d of dirs) n += (await readdir(join(mountpoint, 'data', d)).catch(() => [])).length;
  return n;
}

test('concurrent jobs share one attach and the last detaches; after a killed job, detach cleans up', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS, 'head')) return;
  const lab = await iscsiLab(t, { lunBytes: 512 * MiB });
  t.is((await lab.run(['target', 'format', 'san1', '--format'])).code, 0);
  for (const n of ['a', 'b']) {
    await execFile('sh', ['-c', `head -c ${48 * MiB} /dev/urandom > ${join(lab.dir, `${n}.raw`)}`]);
    await lab.writePolicy(n, `name: ${n}\ntarget: san1\nsources:\n  - image: ${join(lab.dir, `${n}.raw`)}\n    name: ${n}\nretention: { generations: 5 }\n`);
  }
  const [ra, rb] = await Promise.all([lab.run(['backup', '--policy', 'a']), lab.run(['backup', '--policy', 'b'])]);
  t.is(ra.code, 0, ra.stderr);
  t.is(rb.code, 0, rb.stderr);
  t.deepEqual(await leftovers(lab), [], 'the last of the two jobs detached');

  const child = lab.start(['backup', '--policy', 'a']);
  const exited = new Promise((res) => child.on('close', res));
  const stateFile = join(lab.state, 'targets', 'san1', 'attach.json');
  for (let i = 0; i < 3000; i++) {
    const users = await readFile(stateFile, 'utf8').then((s) => (JSON.parse(s) as { users: number[] }).users, () => [] as number[]);
    if (users.includes(child.pid as number)) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  child.kill('SIGKILL');
  await exited;
  t.not((await leftovers(lab)).length, 0, 'a killed job leaves the volume attached');
  const d = await lab.run(['target', 'detach', 'san1']);
  t.is(d.code, 0, d.stderr);
  t.deepEqual(await leftovers(lab), []);
  t.is((await lab.run(['target', 'attach', 'san1'])).code, 0);
  const points = json<{ name: string }[]>(await lab.run(['points', '--target', 'san1', '--json']));
  t.deepEqual(points.map((p) => p.name).sort(), ['a', 'b']);
  t.is((await lab.run(['check', '--target', 'san1'])).code, 0);
});
