/**
 * Codec workers reply in buffers they lend to the main thread (codec-files.ts). Replies are
 * packed one after another into slabs; a lent reply must never be written again before it is
 * handed back, whatever else the worker does meanwhile (more replies, dropping idle slabs),
 * and a slab is reused once every reply in it is back. The worker functions run here on the
 * test's thread, which is enough to check that protocol.
 */
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dropFreeSlabs, encodeFiles, type Lease } from '../../../engine/repo/codec-files.js';
import { tempDir } from '../../support/tmp.js';
import { bytes } from '../files/fixtures.js';

const KiB = 1024;

interface Reply { data: Buffer; lease?: Lease; kept: Buffer }

const handBack = (r: Reply): void => void Atomics.sub(r.lease!.leases, r.lease!.slab, 1);
const overlap = (a: Buffer, b: Buffer): boolean =>
  a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length;

test('lent replies share slabs without overlapping, keep their bytes until handed back, and an emptied slab is reused', async (t) => {
  const dir = await tempDir(t);
  let seed = 0;
  const encode = async (): Promise<Reply> => {
    const p = join(dir, `f${++seed}`);
    await writeFile(p, bytes(300 * KiB, seed)); // incompressible: ~300 KiB stored
    const r = encodeFiles([p], [300 * KiB], 1);
    t.truthy(r.lease, 'the reply is lent');
    return { ...r, kept: Buffer.from(r.data) };
  };
  const intact = (rs: Reply[], what: string): void => {
    t.true(rs.every((r) => r.data.equals(r.kept)), what);
  };

  const lent: Reply[] = [];
  for (let i = 0; i < 12; i++) {
    lent.push(await encode());
    if (i === 3) dropFreeSlabs(); // an idle moment: only slabs with nothing lent go
  }
  intact(lent, 'every reply is intact while lent');
  t.false(lent.some((a, i) => lent.some((b, j) => i !== j && overlap(a.data, b.data))), 'no two lent replies overlap');
  const slabs = new Set(lent.map((r) => r.lease!.slab));
  t.true(slabs.size < lent.length, 'replies share slabs');

  // Hand back all but the last reply of the first slab: the slab is not reused while one is out.
  const first = lent[0]!.lease!.slab;
  const inFirst = lent.filter((r) => r.lease!.slab === first);
  t.true(inFirst.length > 1);
  const last = inFirst[inFirst.length - 1]!;
  inFirst.slice(0, -1).forEach(handBack);
  const more = [await encode(), await encode()];
  t.false(more.some((r) => overlap(r.data, last.data)), 'no new reply overwrites the one still lent');
  intact([last, ...lent.filter((r) => r.lease!.slab !== first)], 'replies still lent are intact');

  // The last one back: the next reply starts the first slab over.
  handBack(last);
  for (const r of more) if (r.lease!.slab === first) handBack(r);
  const again = await encode();
  t.is(again.lease!.slab, first, 'the emptied slab is reused');
  t.is(again.data.byteOffset, 0, 'from its start');
  intact([...lent.filter((r) => r.lease!.slab !== first), ...more.filter((r) => r.lease!.slab !== first)], 'replies in other slabs are intact');
  for (const r of [...lent.filter((x) => x.lease!.slab !== first), ...more.filter((x) => x.lease!.slab !== first), again]) handBack(r);
});
