/**
 * `drctl dump POINT [PATH]`: one file of a file-level point on standard output (or a folder,
 * with --archive tar, as a tar stream), for `… | less` or `… | tar -x -C DIR` without a
 * restore to disk. Standard output is the data: there is no --json, and every notice (lock
 * waits, a read-only repository, errors) goes to stderr.
 */
import { Writable } from 'node:stream';
import { UsageError } from '../../engine/errors.js';
import { dumpPath } from '../../engine/restore/index.js';
import type { CliContext, Writer } from '../context.js';
import { cliLockWait, lockWaitOption, openRepo, type RepoOptions } from '../repo-option.js';
import type { CommandSpec } from '../command.js';

type Opts = RepoOptions & { quiet?: boolean; name?: string; archive?: string; lockWait?: string };

export const dumpCommand: CommandSpec<Opts> = {
  name: 'dump',
  summary: 'write one file of a file-level point to stdout (a folder as a tar stream with --archive tar)',
  args: '<point> [path]',
  options: [
    { flags: '--name <name>', description: 'with `latest`: the newest point of this name' },
    { flags: '--archive <format>', description: 'tar: write PATH (a folder, or the whole point without PATH) as a tar stream' },
    lockWaitOption(),
  ],
  dataOnStdout: true,
  exitCodes: '0 written (also when the reader stops early, as `| head` does) · 1 failed (damaged data: what was written is incomplete) or the repository stayed locked · 2 bad arguments, no repository, no such point or path, a folder without --archive tar, a symlink, a VM-level point, a tar stream to a terminal',
  async run(ctx: CliContext, opts: Opts, args: string[]) {
    const [spec, path = ''] = args;
    if (opts.archive !== undefined && opts.archive !== 'tar') throw new UsageError(`--archive ${opts.archive}: dump writes only tar`, 'use --archive tar, or `drctl restore POINT --to FILE.zip` for a zip');
    if (opts.archive === 'tar' && ctx.stdout.isTTY) {
      throw new UsageError('refusing to write a tar stream to a terminal: redirect it or pipe it to tar', 'e.g. `drctl dump POINT PATH --archive tar | tar -x -C DIR`');
    }
    const lockWait = cliLockWait(ctx, opts, { readOnly: true });
    const repo = await openRepo(ctx, opts);
    const point = await repo.resolvePoint(spec as string, opts.name);
    const lock = await repo.lock('shared', `drctl dump ${point.id.slice(0, 12)}`, lockWait);
    const out = stdoutSink(ctx.stdout);
    try {
      await dumpPath(repo, point, path, out.sink, { archive: opts.archive === 'tar' ? 'tar' : undefined, signal: ctx.signal });
    } catch (e) {
      // The reader went away (`| head -c 100`): it has what it wanted, as with `cat | head`.
      if (out.readerGone()) return 0;
      throw e;
    } finally {
      out.detach();
      await lock.release();
    }
    return 0;
  },
};

/**
 * Standard output as a Writable the engine can pipe into, with backpressure through 'drain'
 * when it is a stream. It is never ended or destroyed: it belongs to the process. Its errors
 * (EPIPE when the reader closes the pipe) stop the dump; cli/main.ts also listens to them.
 */
function stdoutSink(stdout: Writer): { sink: Writable; readerGone: () => boolean; detach: () => void } {
  const stream = typeof (stdout as Partial<NodeJS.WritableStream>).once === 'function' ? stdout as Writer & NodeJS.WritableStream : undefined;
  let failure: NodeJS.ErrnoException | undefined;
  const sink = new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _enc, cb) {
      if (failure) return cb(failure);
      if (!stream) {
        stdout.write(chunk as unknown as string); // an in-process Writer
        return cb();
      }
      if (stream.write(chunk)) return cb();
      stream.once('drain', () => cb());
    },
    final(cb) {
      if (stream && (stream as unknown as Writable).writableNeedDrain) stream.once('drain', () => cb());
      else cb();
    },
  });
  const onError = (e: NodeJS.ErrnoException): void => {
    failure ??= e;
    sink.destroy(e);
  };
  stream?.on('error', onError);
  return {
    sink,
    readerGone: () => failure?.code === 'EPIPE',
    detach: () => {
      stream?.off('error', onError);
    },
  };
}
