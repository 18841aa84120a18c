import { resolve } from 'node:path';
import { Repository } from '../../engine/repo/index.js';
import { Catalog, CatalogError, type CatalogData, type CatalogPoint } from '../../engine/catalog/index.js';
import { catalogPoint } from '../../engine/jobs/index.js';
import { ExitCode } from '../../engine/errors.js';
import { loadConfig } from '../../policies/config.js';
import { openLocalTarget } from '../../targets/index.js';
import { printJson, say, type CliContext, type OutputOptions } from '../context.js';
import { configDir, type ConfigOptions } from '../config-option.js';
import { catalogFile, openTargetConfig, stateDir, type StateOptions } from '../wiring.js';
import type { RepoOptions } from '../repo-option.js';
import type { CommandSpec } from '../command.js';

type Opts = ConfigOptions & StateOptions & OutputOptions & RepoOptions;

export const catalogRebuildCommand: CommandSpec<Opts> = {
  name: 'catalog rebuild',
  summary: 'recreate the catalog\'s recovery points from the repositories alone (every target of the config folder, and --repo)',
  options: [],
  exitCodes: '0 rebuilt · 1 a repository could not be read · 2 bad config folder · 3 rebuilt, but a damaged point file was skipped (named on stderr; it is not in the catalog)',
  async run(ctx: CliContext, opts: Opts) {
    const config = await loadConfig(configDir(ctx, opts));
    const sources: { target: string; open: () => Promise<Repository> }[] = [];
    for (const t of config.targets.values()) {
      // An iSCSI target is attached for the moment (or an existing attach joined) and given back below.
      sources.push({
        target: t.name,
        open: async () => {
          const driver = await openTargetConfig(t, stateDir(ctx, opts));
          return Repository.open(driver, { clock: ctx.clock }).catch(async (e: unknown) => {
            await driver.close();
            throw e;
          });
        },
      });
    }
    const extra = opts.repo ?? ctx.env.DRCTL_REPO;
    if (extra) sources.push({ target: resolve(extra), open: async () => Repository.open(await openLocalTarget(resolve(extra)), { clock: ctx.clock }) });
    const points: CatalogPoint[] = [];
    const perTarget: { target: string; location?: string; points: number; skipped?: string; damaged?: string[] }[] = [];
    let damagedCount = 0;
    for (const s of sources) {
      let repo: Repository;
      try {
        repo = await s.open();
      } catch (e) {
        // A target whose folder holds no repository yet has nothing to list.
        perTarget.push({ target: s.target, points: 0, skipped: (e as Error).message });
        continue;
      }
      const { points: ps, damaged } = await repo.listPoints().finally(() => repo.target.close());
      for (const id of damaged) ctx.stderr.write(`warning: point file ${id.slice(0, 12)} in ${repo.location} is damaged and was skipped - run \`drctl check\`\n`);
      for (const p of ps) points.push(catalogPoint(p, s.target, repo.location));
      damagedCount += damaged.length;
      perTarget.push({ target: s.target, location: repo.location, points: ps.length, ...(damaged.length ? { damaged } : {}) });
    }
    const catalog = await Catalog.open(catalogFile(stateDir(ctx, opts)));
    const replacePoints = (d: CatalogData): void => {
      d.points = points;
    };
    try {
      await catalog.update(replacePoints);
    } catch (e) {
      if (!(e instanceof CatalogError)) throw e;
      ctx.stderr.write(`warning: ${e.message} - starting a fresh catalog (job history is lost)\n`);
      await catalog.update(replacePoints, { replace: true });
    }
    if (opts.json) printJson(ctx, { catalog: catalog.file, targets: perTarget, points: points.length });
    for (const t of perTarget) {
      say(ctx, opts, `${t.target}: ${t.skipped ? `skipped (${t.skipped})` : `${plural(t.points, 'point')} from ${t.location}${t.damaged ? `, ${t.damaged.length} damaged point file${t.damaged.length === 1 ? '' : 's'} skipped` : ''}`}`);
    }
    say(ctx, opts, `catalog ${catalog.file}: ${plural(points.length, 'recovery point')}`);
    return damagedCount > 0 ? ExitCode.partial : ExitCode.ok;
  },
};

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
