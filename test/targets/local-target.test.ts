import test from 'ava';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { LocalTarget } from '../../targets/local/local-target.js';
import { tempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;

// Packs are put as many parts and written in pieces of at most 1 MiB: the pieces must add up
// to exactly the parts, in order, whatever their sizes.
test('an object put as parts of any size reads back as their concatenation', async (t) => {
  const dir = await tempDir(t);
  const target = new LocalTarget(dir);
  const parts = [
    randomBytes(3 * MiB + 17), // larger than a write piece
    randomBytes(1),
    randomBytes(MiB - 1), // ends one byte before a piece boundary
    ...Array.from({ length: 1500 }, (_, i) => randomBytes(100 + (i % 7))), // more parts than IOV_MAX allows in one call
    randomBytes(2 * MiB).subarray(5, 2 * MiB - 3), // a view into a larger buffer
  ];
  await target.put('data/ab/parts', parts);
  t.deepEqual(await target.get('data/ab/parts'), Buffer.concat(parts));

  const whole = randomBytes(5 * MiB + 3);
  await target.put('data/ab/whole', whole);
  t.deepEqual(await target.get('data/ab/whole'), whole);
  t.deepEqual(await readdir(join(dir, 'tmp')), [], 'no temp file is left behind');
});
