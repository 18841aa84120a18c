import { Repository } from '../../engine/repo/index.js';
import { openLocalTarget } from '../../targets/index.js';
import { printJson, say, type CliContext, type OutputOptions } from '../context.js';
import { repoPath, type RepoOptions } from '../repo-option.js';
import type { CommandSpec } from '../command.js';

type Opts = RepoOptions & OutputOptions;

export const initCommand: CommandSpec<Opts> = {
  name: 'init',
  summary: 'create a new, empty repository',
  exitCodes: '0 created · 2 the folder already holds a repository or other files',
  options: [],
  async run(ctx: CliContext, opts: Opts) {
    const path = await repoPath(ctx, opts);
    const repo = await Repository.init(await openLocalTarget(path), { clock: ctx.clock });
    if (opts.json) printJson(ctx, { repo: path, id: repo.config.id, formatVersion: repo.config.formatVersion });
    say(ctx, opts, `created repository ${path} (format ${repo.config.formatVersion}, id ${repo.config.id.slice(0, 8)})`);
    return 0;
  },
};
