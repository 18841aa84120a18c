import { readFile } from 'node:fs/promises';
import { ConfigError, UsageError, errnoCode } from '../../engine/errors.js';
import { applyRetention, invalidFileError, loadRetentionFile, parseTimedPoints } from '../../policies/index.js';
import { printJson, type CliContext, type OutputOptions } from '../context.js';
import type { CommandSpec } from '../command.js';

type Opts = OutputOptions & { policy?: string; points?: string };

export const retentionSimulateCommand: CommandSpec<Opts> = {
  name: 'retention simulate',
  summary: 'show which points a policy\'s retention keeps and removes (no repository needed)',
  options: [
    { flags: '--policy <file>', description: 'a policy file (YAML or JSON); only name and retention are read' },
    { flags: '--points <file>', description: 'JSON list of points: [{"id": "...", "time": "2026-03-01T04:00:00Z"}, …] (drctl points --json works)' },
  ],
  exitCodes: '0 shown · 2 the policy or points file is invalid',
  async run(ctx: CliContext, opts: Opts) {
    if (!opts.policy || !opts.points) {
      throw new UsageError('retention simulate needs --policy FILE and --points FILE', 'e.g. `drctl retention simulate --policy policies/web.yaml --points points.json`');
    }
    const { name, retention } = await loadRetentionFile(opts.policy);
    const pointsFile = opts.points;
    const text = await readFile(pointsFile, 'utf8').catch((e: unknown) => {
      throw new ConfigError(`cannot read points file ${pointsFile} - ${errnoCode(e) ?? (e as Error).message}`, [], 'check the --points path');
    });
    const { points, problems } = parseTimedPoints(pointsFile, text);
    if (problems.length) throw invalidFileError(pointsFile, 'points file', problems, 'fix the entries listed below; the file is a JSON list like [{"id": "a1", "time": "2026-03-01T04:00:00Z"}]');
    const { keep, remove } = applyRetention(points, retention, ctx.clock.now());
    if (opts.json) {
      printJson(ctx, {
        keep: keep.map((k) => ({ id: k.point.id, time: k.point.time, reasons: k.reasons })),
        remove: remove.map((p) => ({ id: p.id, time: p.time })),
      });
      return 0;
    }
    if (opts.quiet) return 0;
    // Newest first, kept and removed interleaved, as an operator reads a timeline.
    const rows = [
      ...keep.map((k) => ({ p: k.point, action: 'KEEP', why: k.reasons.join(', ') })),
      ...remove.map((p) => ({ p, action: 'REMOVE', why: '' })),
    ].sort((a, b) => Date.parse(b.p.time) - Date.parse(a.p.time)).map((r) => [r.p.id, r.p.time, r.action, r.why]);
    const head = ['ID', 'TIME', 'ACTION', 'REASONS'];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
    for (const r of [head, ...rows]) ctx.stdout.write(r.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd() + '\n');
    const rulesText = Object.entries(retention).filter(([, v]) => v !== undefined).map(([k, v]) => `${k} ${String(v)}`).join(', ');
    ctx.stdout.write(`keep ${keep.length}, remove ${remove.length} of ${points.length} point${points.length === 1 ? '' : 's'} (${name ? `policy ${name}: ` : ''}${rulesText})\n`);
    return 0;
  },
};
