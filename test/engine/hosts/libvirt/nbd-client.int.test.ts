/**
 * The NBD client against a real qemu-nbd on a Unix socket (no VM, no SSH): handshake with
 * structured replies, block status (holes and zeros are reported, not read), pipelined reads
 * and writes, write-zeroes.
 */
import test from 'ava';
import { spawn, execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { requireTools } from '../../../support/tools.js';
import { tempDir } from '../../../support/tmp.js';
import { NbdClient } from '../../../../engine/hosts/libvirt/nbd-client.js';

const MiB = 1024 * 1024;

async function serve(t: import('ava').ExecutionContext, image: string, format: string): Promise<NbdClient> {
  const sock = join(image + '.sock');
  const p = spawn('qemu-nbd', ['-f', format, '-k', sock, '--persistent', '-A', image], { stdio: 'ignore' });
  t.teardown(() => void p.kill());
  for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
  const s = connect(sock);
  await new Promise((r, j) => s.once('connect', r).once('error', j));
  const c = await NbdClient.connect(s, '', ['base:allocation']);
  t.teardown(() => c.close());
  return c;
}

test('block status skips holes and zeros; reads and writes round-trip, pipelined', async (t) => {
  if (!requireTools(t, 'qemu-nbd', 'qemu-img')) return;
  const dir = await tempDir(t);
  const img = join(dir, 'd.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, String(16 * MiB)]);
  const c = await serve(t, img, 'qcow2');
  t.is(c.sizeBytes, 16 * MiB);
  t.deepEqual(await c.extents('base:allocation', (f) => (f & 2) === 0), []);
  const a = randomBytes(MiB);
  const b = randomBytes(3 * 65536);
  await Promise.all([c.write(2 * MiB, a), c.write(10 * MiB, b)]);
  await c.writeZeroes(2 * MiB, 65536);
  await c.flush();
  const data = await c.extents('base:allocation', (f) => (f & 2) === 0);
  t.deepEqual(data, [{ offset: 2 * MiB + 65536, length: MiB - 65536 }, { offset: 10 * MiB, length: 3 * 65536 }]);
  const bufs = await Promise.all([0, 1, 2, 3].map(async (k) => {
    const buf = Buffer.alloc(MiB / 4);
    await c.read(2 * MiB + (k * MiB) / 4, MiB / 4, buf, 0);
    return buf;
  }));
  const whole = Buffer.concat(bufs);
  t.true(whole.subarray(0, 65536).equals(Buffer.alloc(65536)));
  t.true(whole.subarray(65536).equals(a.subarray(65536)));
  const hole = Buffer.alloc(4096, 7);
  await c.read(5 * MiB, 4096, hole, 0);
  t.true(hole.equals(Buffer.alloc(4096)), 'a hole reads as zeros');
});

test('an unknown export name is a clear error', async (t) => {
  if (!requireTools(t, 'qemu-nbd', 'qemu-img')) return;
  const dir = await tempDir(t);
  const img = join(dir, 'd.raw');
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', img, String(MiB)]);
  const sock = img + '.sock';
  const p = spawn('qemu-nbd', ['-f', 'raw', '-k', sock, '--persistent', img], { stdio: 'ignore' });
  t.teardown(() => void p.kill());
  for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
  const s = connect(sock);
  await new Promise((r) => s.once('connect', r));
  await t.throwsAsync(NbdClient.connect(s, 'nope'), { message: /refused option 7/ });
  s.destroy();
});
