/**
 * Codec workers reply in buffers they lend to the main thread (codec-files.ts). A lent buffer
 * must never be written again before it is handed back, whatever else the worker does
 * meanwhile (more replies, dropping idle buffers); once handed back it is reused. The worker
 * functions run here on the test's thread, which is enough to check that protocol.
 */
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dropFreeSlabs, encodeFiles } from '../../../engine/repo/codec-files.js';
import { tempDir } from '../../support/tmp.js';
import { bytes } from '../files/fixtures.js';

const KiB = 1024;

test('a lent reply keeps its bytes until handed back; then its buffer is reused', async (t) => {
  const dir = await tempDir(t);
  const paths = await Promise.all([1, 2, 3].map(async (i) => {
    const p = join(dir, `f${i}`);
    await writeFile(p, bytes(300 * KiB, i));
    return p;
  }));
  const encode = (p: string) => encodeFiles([p], [300 * KiB], 1);

  const first = encode(paths[0] as string);
  t.truthy(first.lease, 'the reply is lent');
  const kept = Buffer.from(first.data);
  dropFreeSlabs(); // an idle moment: only buffers not lent out go

  const second = encode(paths[1] as string);
  t.not(second.lease?.slab, first.lease?.slab, 'a lent buffer is not used for the next reply');
  t.true(first.data.equals(kept), 'the first reply is intact while lent');
  t.false(second.data.equals(kept));

  const keptSecond = Buffer.from(second.data);
  Atomics.store(first.lease!.inUse, first.lease!.slab, 0); // the first is handed back, the second is still lent
  const third = encode(paths[2] as string);
  t.is(third.lease?.slab, first.lease?.slab, 'the handed-back buffer is reused');
  t.true(second.data.equals(keptSecond), 'the reply still lent is intact');
  for (const r of [second, third]) Atomics.store(r.lease!.inUse, r.lease!.slab, 0);
});
