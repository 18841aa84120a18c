import { resolve } from 'node:path';
import { UsageError } from '../../engine/errors.js';
import { printJson, say, type CliContext, type OutputOptions } from '../context.js';
import { cliLockWait, openRepo, type RepoOptions } from '../repo-option.js';
import { progressLine } from '../progress.js';
import { bytes, duration, rate } from '../format.js';
import type { CommandSpec } from '../command.js';

type Opts = RepoOptions & OutputOptions & { to?: string; include?: string[]; overwrite?: boolean; name?: string };

export const restoreCommand: CommandSpec<Opts> = {
  name: 'restore',
  summary: 'restore a recovery point: a disk image to a file, files to a folder or a .zip/.tar',
  args: '<point>',
  options: [
    { flags: '--to <dest>', description: 'destination: image file or folder; for file points a folder, or an archive ending in .zip, .tar, .tar.gz' },
    { flags: '--include <path>', description: 'restore only this path of a file point (repeatable)', repeatable: true },
    { flags: '--overwrite', description: 'replace existing files at the destination' },
    { flags: '--name <name>', description: 'with `latest`: the newest point of this name' },
  ],
  exitCodes: '0 restored · 1 failed (damaged data; a partial image file is removed) · 2 bad arguments, unknown point, destination exists',
  async run(ctx: CliContext, opts: Opts, args: string[]) {
    if (!opts.to) throw new UsageError('restore needs --to DEST', 'e.g. `drctl restore latest --name web01 --to /tmp/web01.img`');
    const repo = await openRepo(ctx, opts);
    const point = await repo.resolvePoint(args[0] as string, opts.name);
    const dest = resolve(opts.to) + (opts.to.endsWith('/') ? '/' : '');
    if (point.kind === 'vm' && opts.include?.length) throw new UsageError('--include applies to file-level points', 'restore the whole disk, then mount it to pick files');
    const lock = await repo.lock('shared', `drctl restore ${point.id.slice(0, 12)}`, cliLockWait(ctx, opts));
    const progress = progressLine(ctx, opts);
    const t0 = performance.now();
    try {
      if (point.kind === 'vm') {
        const { restoreImage } = await import('../../engine/restore/image-restore.js');
        const r = await restoreImage(repo, point, dest, { overwrite: opts.overwrite, signal: ctx.signal, onProgress: progress.update });
        progress.done();
        if (opts.json) printJson(ctx, { point: point.id, kind: point.kind, files: r.files, bytesWritten: r.bytesWritten, logicalBytes: r.logicalBytes, durationMs: r.durationMs });
        for (const f of r.files) say(ctx, opts, `restored ${point.name} (point ${point.id.slice(0, 12)}, ${point.time}) to ${f}`);
        say(ctx, opts, `  ${bytes(r.logicalBytes)} disk, ${bytes(r.bytesWritten)} written (sparse), ${duration(r.durationMs)} (${rate(r.logicalBytes, r.durationMs)}), every chunk verified`);
      } else {
        const { restoreFiles } = await import('../../engine/restore/files-restore.js'); // loads archiver, tar-stream
        const r = await restoreFiles(repo, point, dest, { include: opts.include, overwrite: opts.overwrite, signal: ctx.signal, onProgress: progress.update });
        progress.done();
        if (opts.json) printJson(ctx, { point: point.id, kind: point.kind, dest: r.dest, files: r.files, dirs: r.dirs, bytes: r.bytes, durationMs: r.durationMs });
        say(ctx, opts, `restored ${point.name} (point ${point.id.slice(0, 12)}, ${point.time}) to ${r.dest}`);
        say(ctx, opts, `  ${r.files} files, ${r.dirs} folders, ${bytes(r.bytes)} in ${duration(r.durationMs)} (${rate(r.bytes, performance.now() - t0)}), every chunk verified`);
      }
    } finally {
      progress.done();
      await lock.release();
    }
    return 0;
  },
};
