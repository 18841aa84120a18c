import { checkRepository, startCodecPool } from '../../engine/repo/index.js';
import { walkFilesForCheck } from '../../engine/restore/index.js';
import { ExitCode } from '../../engine/errors.js';
import { printJson, say, type CliContext, type OutputOptions } from '../context.js';
import { cliLockWait, lockWaitOption, openRepo, type RepoOptions } from '../repo-option.js';
import { progressLine } from '../progress.js';
import { bytes, duration, rate } from '../format.js';
import type { CommandSpec } from '../command.js';

type Opts = RepoOptions & OutputOptions & { readData?: boolean; lockWait?: string };

export const checkCommand: CommandSpec<Opts> = {
  name: 'check',
  summary: 'verify the repository structure; with --read-data also re-hash every stored chunk',
  options: [
    { flags: '--read-data', description: 'read every pack and verify every chunk (names the points and files / disk ranges a damaged chunk affects)' },
    lockWaitOption(),
  ],
  exitCodes: '0 no problems · 1 problems found (listed, with the affected points), or the repository stayed locked (--lock-wait) · 2 no repository',
  async run(ctx: CliContext, opts: Opts) {
    const lockWait = cliLockWait(ctx, opts, { readOnly: true });
    if (opts.readData) startCodecPool(); // its workers start while the repository opens
    const repo = await openRepo(ctx, opts);
    const lock = await repo.lock('shared', 'drctl check', lockWait);
    const progress = progressLine(ctx, opts);
    const t0 = performance.now();
    let report;
    try {
      report = await checkRepository(repo, { readData: opts.readData, walkFiles: walkFilesForCheck, onProgress: progress.update, signal: ctx.signal });
    } finally {
      progress.done();
      await lock.release();
    }
    const ms = performance.now() - t0;
    if (opts.json) printJson(ctx, { ...report, durationMs: Math.round(ms) });
    say(ctx, opts, `checked ${repo.location}: ${report.points} points, ${report.packs} packs, ${report.blobs} blobs${report.readData ? `, ${bytes(report.bytesRead)} read and verified in ${duration(ms)} (${rate(report.bytesRead, ms)})` : ' (structure only; --read-data verifies content)'}`);
    // Packs in no index beside points that miss data: lost or damaged index files, which the packs' own headers can rebuild.
    const indexLost = report.unindexedPacks > 0 && report.problems.some((p) => p.kind === 'missing-blob' || p.kind === 'damaged-index');
    if (report.unindexedPacks && !indexLost) say(ctx, opts, `  ${report.unindexedPacks} pack(s) left by interrupted backups are not referenced (harmless; prune removes them)`);
    if (report.ok) {
      say(ctx, opts, 'no problems found');
      return ExitCode.ok;
    }
    for (const p of report.problems) ctx.stderr.write(`error: ${p.message}\n`);
    for (const a of report.affected) {
      ctx.stderr.write(`affected point ${a.id.slice(0, 12)} (${a.name}, ${a.time}):\n`);
      for (const item of a.items.slice(0, 50)) ctx.stderr.write(`  ${item}\n`);
      if (a.items.length > 50) ctx.stderr.write(`  … and ${a.items.length - 50} more (see --json)\n`);
    }
    if (indexLost) {
      // Packs whose trailer shows damage stay out of any rebuilt index: sending the user to
      // `repair index` for them would go in a circle.
      const damaged = report.unindexedDamaged;
      const rebuildable = report.unindexedPacks - damaged.length;
      if (rebuildable > 0) {
        ctx.stderr.write(`${rebuildable} pack(s) are in no index: if index files were lost or damaged, \`drctl repair index\` rebuilds the index from the packs' own headers (packs it names as damaged cannot be indexed)\n`);
      }
      for (const d of damaged) ctx.stderr.write(`pack ${d.pack.slice(0, 12)} is in no index because it is damaged: it ${d.why}\n`);
      if (damaged.length) {
        ctx.stderr.write(`${damaged.length} damaged pack(s) cannot be indexed, \`drctl repair index\` leaves them out too: the data of the affected points above that was in them is lost from this repository; restore those points from another copy of the repository, or use other points\n`);
      }
    }
    ctx.stderr.write(`check found ${report.problems.length} problem(s) affecting ${report.affected.length} point(s); other points restore normally\n`);
    return ExitCode.failed;
  },
};
