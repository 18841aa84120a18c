/**
 * A worker thread for the WorkerPool tests: replies with its thread id, or throws out of its
 * message handler (which ends the thread), or exits.
 */
import { parentPort, threadId } from 'node:worker_threads';

parentPort?.on('message', (m: { id: number; op: 'echo' | 'throw' | 'exit' }) => {
  if (m.op === 'throw') throw new Error('the handler failed');
  if (m.op === 'exit') process.exit(7);
  parentPort?.postMessage({ id: m.id, threadId });
});
