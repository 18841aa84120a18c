import { ExitCode } from '../../engine/errors.js';
import { repairIndex } from '../../engine/repo/index.js';
import { printJson, say, type CliContext, type OutputOptions } from '../context.js';
import { cliLockWait, lockWaitOption, openRepo, type RepoOptions } from '../repo-option.js';
import { progressLine } from '../progress.js';
import { duration } from '../format.js';
import type { CommandSpec } from '../command.js';

type Opts = RepoOptions & OutputOptions;

export const repairIndexCommand: CommandSpec<Opts> = {
  name: 'repair index',
  summary: 'rebuild the index from the packs\' own headers (index files lost or damaged: points that cannot restore because their data is "not in the index")',
  options: [lockWaitOption()],
  exitCodes: '0 rebuilt from every pack · 1 failed (the old index files stay) · 2 no repository · 3 rebuilt, but some packs could not be read (listed)',
  async run(ctx: CliContext, opts: Opts) {
    const repo = await openRepo(ctx, opts);
    const progress = progressLine(ctx, opts, { counts: { repair: 'packs' } });
    let report;
    try {
      report = await repairIndex(repo, { lockWait: cliLockWait(ctx, opts), signal: ctx.signal, onProgress: progress.update });
    } finally {
      progress.done();
    }
    if (opts.json) printJson(ctx, report);
    say(ctx, opts, `index of ${repo.location} rebuilt from ${report.packsIndexed} of ${report.packs} packs: ${report.blobs} blobs in ${report.indexFilesAfter} index file(s), replacing ${report.indexFilesBefore}, in ${duration(report.durationMs)}`);
    if (report.unreadable.length === 0) {
      say(ctx, opts, 'next: `drctl check` (or `check --read-data`) shows whether every point is whole again');
      return ExitCode.ok;
    }
    for (const u of report.unreadable) ctx.stderr.write(`pack ${u.pack.slice(0, 12)} ${u.why}: its blobs are not indexed\n`);
    ctx.stderr.write(`${report.unreadable.length} pack(s) could not be indexed; \`drctl check\` names the points that miss their data\n`);
    return ExitCode.partial;
  },
};
