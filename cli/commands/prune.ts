import { UsageError } from '../../engine/errors.js';
import { pruneRepository } from '../../engine/repo/index.js';
import { printJson, say, type CliContext, type OutputOptions } from '../context.js';
import { lockWaitOption, lockWaitSeconds, openRepo, type RepoOptions } from '../repo-option.js';
import { progressLine } from '../progress.js';
import { bytes, duration } from '../format.js';
import type { CommandSpec } from '../command.js';

type Opts = RepoOptions & OutputOptions & { dryRun?: boolean; repackThreshold?: string; lockWait?: string };

export const pruneCommand: CommandSpec<Opts> = {
  name: 'prune',
  summary: 'delete data no recovery point uses; repack mostly-unused packs (backups keep running)',
  options: [
    { flags: '--repack-threshold <percent>', description: 'repack a pack when at least this share of it is unused (default 25)' },
    lockWaitOption(1800, 'wait for running backups before the final step'),
    { flags: '--dry-run', description: 'show what would be deleted, delete nothing' },
  ],
  exitCodes: '0 done · 1 failed (nothing lost: the repository stays consistent) · 2 bad arguments or no repository',
  async run(ctx: CliContext, opts: Opts) {
    const threshold = Number(opts.repackThreshold ?? 25);
    if (!Number.isFinite(threshold) || threshold < 0 || threshold > 100) throw new UsageError(`--repack-threshold ${opts.repackThreshold}: expected a percentage 0-100`);
    const waitS = lockWaitSeconds(opts, 1800);
    const repo = await openRepo(ctx, opts);
    // The mark phase counts points and the repack packs, not bytes.
    const progress = progressLine(ctx, opts, { counts: { mark: 'points', repack: 'packs' } });
    let report;
    try {
      report = await pruneRepository(repo, {
        repackThreshold: threshold / 100, dryRun: opts.dryRun, lockWaitMs: waitS * 1000, signal: ctx.signal,
        onProgress: progress.update, log: progress.log,
      });
    } finally {
      progress.done();
    }
    if (opts.json) {
      printJson(ctx, report);
      return 0;
    }
    const verb = report.dryRun ? 'would free' : 'freed';
    say(ctx, opts, `${verb} ${bytes(report.bytesFreed)}: ${report.packsDeleted} unused packs deleted, ${report.packsRepacked} repacked (${bytes(report.bytesRepacked)} copied), ${report.unindexedPacksDeleted} leftover packs${report.unindexedPacksDeleted ? ` (${bytes(report.unindexedBytesFreed)})` : ''}, ${report.tempFilesDeleted ? `${report.tempFilesDeleted} temp files of killed writes, ` : ''}${report.blobsRemoved} blobs gone; ${report.points} points untouched, in ${duration(report.durationMs)}`);
    return 0;
  },
};
