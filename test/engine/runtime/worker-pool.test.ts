/**
 * The daemon keeps one pool of worker threads for months. A thread that ends (an uncaught
 * error, an exit) must fail what it held and be replaced, never leave requests waiting for a
 * thread that is gone; a thread that cannot even start must fail requests, not hang them.
 */
import test from 'ava';
import { WorkerPool } from '../../../engine/runtime/worker-pool.js';
import { ExitCode, WorkerThreadError } from '../../../engine/errors.js';

const worker = new URL('../../support/pool-worker.js', import.meta.url);
const broken = new URL('../../support/broken-worker.js', import.meta.url);

type Reply = { id: number; threadId: number };

/** The promise, or a failure after `ms`: a hang fails the test instead of its timeout. */
function within<T>(p: Promise<T>, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(timer));
}

test('a worker thread that ends fails the requests it held and is replaced; later requests are answered', async (t) => {
  const pool = new WorkerPool<Reply>(worker, 1);
  t.teardown(() => pool.terminate());
  const first = await within(pool.request({ op: 'echo' }, []));
  // Named as drctl's own thread failing (not, say, a damaged pack whose decode it was doing).
  const e = await t.throwsAsync(within(pool.request({ op: 'throw' }, [])), { instanceOf: WorkerThreadError });
  t.is(e?.message, 'a worker thread of drctl (pool-worker.js) failed - the handler failed');
  t.is(e?.exitCode, ExitCode.failed);
  t.regex(e?.hint ?? '', /reinstall drctl/);
  const second = await within(pool.request({ op: 'echo' }, []));
  t.not(second.threadId, first.threadId, 'a new thread answers');
  await t.throwsAsync(within(pool.request({ op: 'exit' }, [])), { message: /exit code 7/ });
  const third = await within(pool.request({ op: 'echo' }, []));
  t.not(third.threadId, second.threadId);
  // Ending threads count only in a row: after answers in between, the pool never gives up.
  for (let i = 0; i < 4; i++) {
    await t.throwsAsync(within(pool.request({ op: 'throw' }, [])));
    await within(pool.request({ op: 'echo' }, []));
  }
});

test('a worker thread that cannot start fails every request with its error instead of hanging', async (t) => {
  const pool = new WorkerPool<Reply>(broken, 2);
  t.teardown(() => pool.terminate());
  for (let i = 0; i < 8; i++) {
    await t.throwsAsync(within(pool.request({ op: 'echo' }, [])), { instanceOf: WorkerThreadError, message: /\(broken-worker\.js\) failed - cannot start: a module is missing/ });
  }
});
