#!/usr/bin/env -S node --max-semi-space-size=1
/**
 * drctl entry point: wires the real process (streams, clock, signals) to the program.
 *
 * The flag on the first line keeps V8's young generation of the main thread at 1 MiB per
 * semi-space (default 16): the main thread allocates many small objects and few large ones,
 * and the smaller nursery cut peak RSS of the 30k-file tree backup 306 -> 274 MiB and restore
 * 220 -> 206 MiB at the same speed. V8 reads it only at start-up, hence the shebang.
 */
import { startCodecPool } from '../engine/repo/codec-pool.js';
import type { CliContext } from './context.js';

// The codec workers of a command that moves data start before the rest of drctl loads, so that
// their start (a Node isolate each, ~65 ms of CPU here) overlaps it: static imports would all
// load first. Commands start the pool themselves anyway; this only starts it earlier.
if (movesData(process.argv.slice(2))) startCodecPool();

// Signals are caught before the rest of drctl loads (~0.3 s here): a Ctrl-C meanwhile is seen
// by the command as an interrupt from its start, instead of ending the process with no word.
const controller = new AbortController();
let interrupts = 0;
const onSignal = (): void => {
  // First Ctrl-C stops cleanly (nothing half-committed); a second one exits at once.
  if (++interrupts > 1) process.exit(130);
  process.stderr.write('\ndrctl: interrupting - stopping cleanly (a second Ctrl-C exits at once)\n');
  controller.abort();
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

const { hostname } = await import('node:os');
const { shutdown, systemClock } = await import('../engine/runtime/index.js');
const { main } = await import('./program.js');
// `drctl points | head`: a closed pipe ends the output quietly, as Unix tools do. Any other
// failure to write (`drctl dump … > /full/volume/file`: ENOSPC, EIO) is one line on stderr and
// exit 1, never a stack trace - what went to stdout is incomplete and the user must know.
for (const [stream, what] of [[process.stdout, 'standard output'], [process.stderr, 'standard error']] as const) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    if (stream === process.stdout) {
      const why = e.code === 'ENOSPC' ? ' (the volume it goes to is full)' : '';
      process.stderr.write(`drctl: cannot write to ${what} - ${e.code ?? e.message}: what was written there is incomplete${why}\n`);
    }
    process.exit(1);
  });
}
const ctx: CliContext = {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  clock: systemClock,
  hostname: hostname(),
  signal: controller.signal,
};
process.exitCode = await main(process.argv.slice(2), ctx);
// Idle worker threads are unref'd, but a MessagePort can still hold the loop open: stop them.
await shutdown();

/** backup, restore, dump and check --read-data hash, compress or verify on the codec workers. */
function movesData(args: string[]): boolean {
  const word = args[0];
  return word === 'backup' || word === 'restore' || word === 'dump' || (word === 'check' && args.includes('--read-data'));
}
