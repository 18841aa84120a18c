import { UsageError } from '../../engine/errors.js';
import { formatInZone, loadPolicyFile, planPolicy } from '../../policies/index.js';
import { printJson, type CliContext, type OutputOptions } from '../context.js';
import type { CommandSpec } from '../command.js';

type Opts = OutputOptions & { from?: string; runs?: string; days?: string };

export const policyPlanCommand: CommandSpec<Opts> = {
  name: 'policy plan',
  summary: 'show when a policy runs next and which points it keeps after a year of runs',
  args: '<file>',
  options: [
    { flags: '--from <iso>', description: 'start of the simulation (default: now), e.g. 2026-03-01T00:00:00Z' },
    { flags: '--runs <n>', description: 'how many next runs to list (default 10)' },
    { flags: '--days <n>', description: 'how many days of successful runs to simulate (default 365)' },
  ],
  exitCodes: '0 shown · 2 the policy file is invalid or a flag is wrong',
  async run(ctx: CliContext, opts: Opts, args: string[]) {
    const file = args[0] as string;
    const from = opts.from === undefined ? ctx.clock.now() : new Date(opts.from);
    if (Number.isNaN(from.getTime())) throw new UsageError(`--from ${opts.from} is not a date`, 'give an ISO 8601 time such as 2026-03-01T00:00:00Z');
    const runs = count('--runs', opts.runs, 10, 1000);
    const days = count('--days', opts.days, 365, 3660);
    const policy = await loadPolicyFile(file);
    const plan = planPolicy(policy, from, { nextRuns: runs, days });
    const byRule = new Map<string, number>();
    for (const k of plan.kept) {
      for (const kind of new Set(k.reasons.map((r) => r.split(' ')[0] as string))) byRule.set(kind, (byRule.get(kind) ?? 0) + 1);
    }
    const utc = (d: Date | string): string => new Date(d).toISOString().replace('.000Z', 'Z');
    const local = (d: Date | string): string => formatInZone(new Date(d), policy.timezone);
    if (opts.json) {
      printJson(ctx, {
        policy: policy.name, file: policy.file, schedule: policy.schedule, timezone: policy.timezone, retention: policy.retention,
        from: utc(from), days,
        nextRuns: plan.nextRuns.map((d) => ({ utc: utc(d), local: local(d) })),
        ...(plan.nextRunsNote ? { nextRunsNote: plan.nextRunsNote } : {}),
        simulated: { runs: plan.simulatedRuns, kept: plan.kept.length, removed: plan.simulatedRuns - plan.kept.length, byRule: Object.fromEntries(byRule) },
        kept: plan.kept.map((k) => ({ time: k.time, local: local(k.time), reasons: k.reasons })),
      });
      return 0;
    }
    if (opts.quiet) return 0;
    const out = (s: string): void => void ctx.stdout.write(s + '\n');
    out(`policy ${policy.name}: schedule "${policy.schedule}" in ${policy.timezone}, retention ${rules(policy.retention)}`);
    const n = plan.nextRuns.length;
    // In UTC both columns would be the same instant twice: print the zone and the time once.
    const isUtc = /^(Etc\/)?(UTC|UCT|GMT|Zulu|Universal)$/i.test(policy.timezone);
    out(`${n === 1 ? 'next run' : `next ${n} runs`} (${isUtc ? policy.timezone : `${policy.timezone} / UTC`}):`);
    for (const d of plan.nextRuns) out(isUtc ? `  ${utc(d)}` : `  ${local(d)}   ${utc(d)}`);
    if (plan.nextRunsNote) out(`  (${plan.nextRunsNote})`);
    out('');
    out(`after ${plural(days, 'day')} of successful runs from ${utc(from)}: ${plural(plan.simulatedRuns, 'point')} made, ${plan.kept.length} kept, ${plan.simulatedRuns - plan.kept.length} removed`);
    if (byRule.size) {
      out('kept by rule (a point kept by several rules counts for each):');
      const width = Math.max(...[...byRule.keys()].map((k) => k.length));
      for (const [kind, n] of byRule) out(`  ${kind.padEnd(width)}  ${n}`);
      out('kept points, newest first:');
      for (const k of plan.kept) out(`  ${utc(k.time)}  ${local(k.time)}  ${k.reasons.join(', ')}`);
    }
    return 0;
  },
};

function count(flag: string, value: string | undefined, dflt: number, max: number): number {
  if (value === undefined) return dflt;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${flag} ${value} is not a whole number from 1 to ${max}`);
  return n;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function rules(r: object): string {
  return Object.entries(r).filter(([, v]) => v !== undefined).map(([k, v]) => `${k} ${String(v)}`).join(', ');
}
