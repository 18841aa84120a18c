import { UsageError } from '../../engine/errors.js';
// Not jobs/index.js, which loads the job runner: see engine/jobs/index.ts.
import { forgetById, forgetPoints } from '../../engine/jobs/forget.js';
import { applyRetention, parseWithin, type RetentionRules } from '../../policies/retention.js';
import { printJson, say, type CliContext, type OutputOptions } from '../context.js';
import { cliLockWait, lockWaitOption, openRepo, type RepoOptions } from '../repo-option.js';
import type { CommandSpec } from '../command.js';
import { configDir } from '../config-option.js';

type Opts = RepoOptions & OutputOptions & {
  name?: string; policy?: string; dryRun?: boolean;
  keepLast?: string; keepHourly?: string; keepDaily?: string; keepWeekly?: string; keepMonthly?: string; keepYearly?: string; keepWithin?: string;
};

export const forgetCommand: CommandSpec<Opts> = {
  name: 'forget',
  summary: 'apply retention rules: remove the recovery points no rule keeps, or the points given by id (data goes at the next prune)',
  args: '[points...]',
  options: [
    lockWaitOption(),
    { flags: '--policy <name>', description: 'apply this policy\'s retention to its points, on its target (not with --keep-*)' },
    { flags: '--name <name>', description: 'only points of this protected object' },
    { flags: '--keep-last <n>', description: 'keep the newest N points (a policy\'s `generations`)' },
    { flags: '--keep-hourly <n>', description: 'keep the newest point of each of the last N hours that have points' },
    { flags: '--keep-daily <n>', description: '… days' },
    { flags: '--keep-weekly <n>', description: '… ISO weeks' },
    { flags: '--keep-monthly <n>', description: '… months' },
    { flags: '--keep-yearly <n>', description: '… years' },
    { flags: '--keep-within <duration>', description: 'keep every point newer than the newest point minus DURATION (1y2m3d4h)' },
    { flags: '--dry-run', description: 'show what would be removed, remove nothing' },
  ],
  exitCodes: '0 done · 1 failed · 2 bad arguments (--policy with --keep-*, points with rules), an unknown or ambiguous point, an unknown or invalid policy, or no repository',
  async run(ctx: CliContext, opts: Opts, args: string[]) {
    if (args.length > 0) return forgetGiven(ctx, opts, args);
    let rules: RetentionRules;
    if (opts.policy && hasKeepFlags(opts)) {
      throw new UsageError('--policy and --keep-* cannot be combined: --policy applies that policy\'s own retention',
        `drop the --keep-* options to apply policy ${opts.policy}'s retention, or drop --policy and give --repo/--target (and --name) to apply --keep-* rules; \`drctl retention simulate\` tries other rules without removing anything`);
    }
    if (opts.policy) {
      // The policy's own retention, on the policy's target unless --repo / --target says otherwise.
      const { loadConfig, policyLookupError } = await import('../../policies/config.js');
      const config = await loadConfig(configDir(ctx, opts));
      const policy = config.policies.find((p) => p.name === opts.policy);
      if (!policy) throw policyLookupError(config, opts.policy);
      rules = policy.retention;
      if (!opts.repo && !opts.target) opts.target = policy.target;
    } else rules = rulesFromFlags(opts);
    const repo = await openRepo(ctx, opts);
    const now = ctx.clock.now();
    const groups = await forgetPoints(repo, {
      filter: (p) => (!opts.policy || p.policy === opts.policy) && (!opts.name || p.name === opts.name),
      retention: (points) => applyRetention(points, rules, now),
      dryRun: opts.dryRun,
      lockWait: cliLockWait(ctx, opts),
      now,
    });
    if (opts.json) {
      printJson(ctx, { dryRun: !!opts.dryRun, groups });
      return 0;
    }
    for (const g of groups) {
      say(ctx, opts, `${g.policy ? `policy ${g.policy}, ` : ''}${g.name}: keep ${g.keep.length}, ${opts.dryRun ? 'would remove' : 'removed'} ${g.remove.length}`);
      for (const k of g.keep) say(ctx, opts, `  keep    ${k.id.slice(0, 12)}  ${k.time}  ${k.reasons.join(', ')}`);
      for (const r of g.remove) say(ctx, opts, `  ${opts.dryRun ? 'remove' : 'removed'} ${r.id.slice(0, 12)}  ${r.time}`);
    }
    if (groups.length === 0) say(ctx, opts, 'no matching points');
    else if (!opts.dryRun) say(ctx, opts, 'run `drctl prune` to free the space of removed points');
    return 0;
  },
};

/** `drctl forget ID…`: those points, damaged point files included; no retention rule is applied. */
async function forgetGiven(ctx: CliContext, opts: Opts, specs: string[]): Promise<number> {
  if (opts.policy || opts.name || hasKeepFlags(opts)) {
    throw new UsageError('points given by id cannot be combined with --policy, --name or --keep-*', 'give either point ids, or retention rules; nothing was removed');
  }
  const repo = await openRepo(ctx, opts);
  const gone = await forgetById(repo, specs, { dryRun: opts.dryRun, lockWait: cliLockWait(ctx, opts) });
  if (opts.json) {
    printJson(ctx, { dryRun: !!opts.dryRun, removed: gone });
    return 0;
  }
  for (const p of gone) {
    say(ctx, opts, `${opts.dryRun ? 'would remove' : 'removed'} ${p.id.slice(0, 12)}  ${p.damaged ? '(damaged point file)' : `${p.name ?? ''}  ${p.time ?? ''}`}`);
  }
  if (!opts.dryRun) say(ctx, opts, 'run `drctl prune` to free the space of removed points');
  return 0;
}

function hasKeepFlags(opts: Opts): boolean {
  return [opts.keepLast, opts.keepHourly, opts.keepDaily, opts.keepWeekly, opts.keepMonthly, opts.keepYearly, opts.keepWithin].some((v) => v !== undefined);
}

function rulesFromFlags(opts: Opts): RetentionRules {
  const count = (flag: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) throw new UsageError(`--${flag} ${v}: expected a whole number of points (0 or more)`);
    return Number(v);
  };
  const rules: RetentionRules = {
    generations: count('keep-last', opts.keepLast), hourly: count('keep-hourly', opts.keepHourly), daily: count('keep-daily', opts.keepDaily),
    weekly: count('keep-weekly', opts.keepWeekly), monthly: count('keep-monthly', opts.keepMonthly), yearly: count('keep-yearly', opts.keepYearly),
    within: opts.keepWithin,
  };
  if (rules.within !== undefined) {
    try {
      parseWithin(rules.within);
    } catch (e) {
      throw new UsageError(`--keep-within: ${(e as Error).message}`);
    }
  }
  if (Object.values(rules).every((v) => v === undefined || v === 0)) {
    throw new UsageError('no retention rule given - forget would keep everything', 'give at least one --keep-* option, e.g. --keep-last 42 --keep-daily 14');
  }
  return rules;
}
