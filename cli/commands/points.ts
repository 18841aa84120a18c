import { ExitCode } from '../../engine/errors.js';
import { printJson, type CliContext, type OutputOptions } from '../context.js';
import { openRepo, type RepoOptions } from '../repo-option.js';
import { bytes } from '../format.js';
import type { CommandSpec } from '../command.js';

type Opts = RepoOptions & OutputOptions & { name?: string; policy?: string };

export const pointsCommand: CommandSpec<Opts> = {
  name: 'points',
  summary: 'list recovery points, newest last',
  options: [
    { flags: '--name <name>', description: 'only points of this name' },
    { flags: '--policy <name>', description: 'only points made by this policy' },
  ],
  exitCodes: '0 listed · 2 no repository · 3 listed, but a damaged point file was skipped (named on stderr)',
  async run(ctx: CliContext, opts: Opts) {
    const repo = await openRepo(ctx, opts);
    const { points, damaged } = await repo.listPoints();
    const shown = points.filter((p) => (!opts.name || p.name === opts.name) && (!opts.policy || p.policy === opts.policy));
    for (const id of damaged) ctx.stderr.write(`warning: point file ${id.slice(0, 12)} is damaged and was skipped - run \`drctl check\`\n`);
    const code = damaged.length > 0 ? ExitCode.partial : ExitCode.ok;
    if (opts.json) {
      printJson(ctx, shown);
      return code;
    }
    if (shown.length === 0) {
      if (!opts.quiet) ctx.stdout.write(`no recovery points${opts.name ? ` named ${opts.name}` : ''} in ${repo.location}\n`);
      return code;
    }
    const withPolicy = shown.some((p) => p.policy);
    const rows = shown.map((p) => [
      p.id.slice(0, 12), p.time.replace(/\.\d+Z$/, 'Z'), p.kind, withPolicy ? `${p.policy ?? '-'}/${p.name}` : p.name, bytes(p.stats.logicalBytes), bytes(p.stats.storedNewBytes),
      [p.errors.length ? `partial(${p.errors.length})` : '', p.fallback ? 'fallback' : '', p.placement?.fallbackFrom ? `fallback-from:${p.placement.fallbackFrom}` : '', p.changeTracking?.mode === 'changed-extents' ? 'incremental' : '', p.safetyFor ? `safety:${p.safetyFor.slice(0, 12)}` : ''].filter(Boolean).join(',') || '-',
    ]);
    const head = ['ID', 'TIME', 'KIND', withPolicy ? 'POLICY/NAME' : 'NAME', 'SIZE', 'NEW', 'FLAGS'];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
    for (const r of [head, ...rows]) ctx.stdout.write(r.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd() + '\n');
    return code;
  },
};
