import { computeStatus } from '../../engine/jobs/index.js';
import { join } from 'node:path';
import { ExitCode } from '../../engine/errors.js';
import { displayPath, formatProblem, loadConfig, requireConfigFolder } from '../../policies/index.js';
import { Catalog } from '../../engine/catalog/index.js';
import { printJson, type CliContext, type OutputOptions } from '../context.js';
import { configDir, type ConfigOptions } from '../config-option.js';
import { catalogFile, cronSchedules, stateDir, type StateOptions } from '../wiring.js';
import { bytes, duration } from '../format.js';
import type { CommandSpec } from '../command.js';

type Opts = ConfigOptions & StateOptions & OutputOptions;

export const statusCommand: CommandSpec<Opts> = {
  name: 'status',
  summary: 'per policy and source: newest point, its age against the schedule (RPO), next run, running jobs, last error',
  options: [],
  exitCodes: '0 every source meets its RPO · 1 some source misses it or failed last time · 2 the config folder is missing or a file in it has problems (listed; the valid policies are still shown)',
  async run(ctx: CliContext, opts: Opts) {
    const dir = configDir(ctx, opts);
    // A mistyped --config must not look like "nothing to monitor" (exit 0) to a monitoring check.
    await requireConfigFolder(dir, 'point --config / DRCTL_CONFIG at the folder holding policies/, targets/ and hosts/');
    const config = await loadConfig(dir);
    const catalog = await Catalog.open(catalogFile(stateDir(ctx, opts)));
    const report = computeStatus(config.policies, await catalog.read(), ctx.clock.now(), cronSchedules());
    const problems = config.problems.map(formatProblem);
    const healthy = report.policies.every((p) => p.sources.every((s) => s.rpo.met && !s.lastError));
    // Invalid config files are a config error (2) even when the valid policies are healthy:
    // a policy that is left out is not monitored.
    const code = problems.length ? ExitCode.usage : healthy ? ExitCode.ok : ExitCode.failed;
    if (opts.json) {
      printJson(ctx, { ...report, invalidConfig: problems, problems: config.problems });
      return code;
    }
    if (report.policies.length === 0) {
      ctx.stdout.write(`no ${problems.length ? 'valid ' : ''}policies in ${displayPath(join(config.dir, 'policies'))}\n`);
    }
    for (const p of report.policies) {
      ctx.stdout.write(`policy ${p.name} → ${p.target}  (${p.schedule} ${p.timezone}; next run ${p.nextRun})${p.lastError ? `\n  last error: ${p.lastError}` : ''}\n`);
      for (const s of p.sources) {
        const age = s.ageSeconds === undefined ? 'no point yet' : `${duration(s.ageSeconds * 1000)} old`;
        const flags = [s.lastPoint?.partial ? 'partial' : '', s.lastPoint?.fallback ? `fallback: ${s.lastPoint.fallback}` : '',
          s.lastPoint?.placement?.fallbackFrom ? `on fallback target ${s.lastPoint.placement.target}: ${s.lastPoint.placement.reason ?? ''}` : ''].filter(Boolean).join(', ');
        ctx.stdout.write(`  ${s.rpo.met ? 'OK    ' : 'MISSED'} ${s.name} (${s.kind}): ${s.lastPoint ? `point ${s.lastPoint.id.slice(0, 12)} at ${s.lastPoint.time}, ` : ''}${age}${flags ? ` [${flags}]` : ''}\n`);
        if (s.running) ctx.stdout.write(`         running since ${s.running.startedAt ?? '?'}${s.running.doneBytes !== undefined ? `: ${bytes(s.running.doneBytes)}${s.running.totalBytes ? ` of ${bytes(s.running.totalBytes)}` : ''}` : ''}\n`);
        if (s.lastError) ctx.stdout.write(`         last run failed: ${s.lastError}\n`);
      }
    }
    for (const j of report.abandonedJobs) ctx.stdout.write(`job ${j.id} (${j.policy ?? ''} ${j.source ?? ''}) was running since ${j.startedAt ?? '?'} but its process is gone\n`);
    for (const pr of problems) ctx.stderr.write(`${pr}\n`);
    if (problems.length) {
      const n = problems.length;
      ctx.stderr.write(`drctl: ${n} problem${n === 1 ? '' : 's'} in the config folder ${displayPath(config.dir)}; a policy whose file has problems is not shown or monitored`
        + ` (fix ${n === 1 ? 'it' : 'them'}; \`drctl policy validate --config ${displayPath(config.dir)}\` checks without running anything)\n`);
    }
    return code;
  },
};
