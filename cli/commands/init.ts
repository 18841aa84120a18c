import { stat } from 'node:fs/promises';
import { Repository } from '../../engine/repo/index.js';
import { UsageError } from '../../engine/errors.js';
import { makeDirs } from '../../engine/runtime/index.js';
import { openLocalTarget } from '../../targets/index.js';
import { printJson, say, type CliContext, type OutputOptions } from '../context.js';
import { repoPath, type RepoOptions } from '../repo-option.js';
import type { CommandSpec } from '../command.js';

type Opts = RepoOptions & OutputOptions;

/** The folder `init` creates the repository in, made if missing; a usage error when it cannot be. */
async function makeRepoFolder(path: string): Promise<void> {
  const fail = (why: string, cause?: unknown): UsageError => new UsageError(`cannot create repository folder ${path} - ${why}`,
    'give --repo a new or empty folder on a mounted, writable volume; nothing was written', { cause });
  await makeDirs(path).catch((e: unknown) => {
    throw fail((e as Error).message, e);
  });
  if (!(await stat(path)).isDirectory()) throw fail('a file of that name is in the way');
}

export const initCommand: CommandSpec<Opts> = {
  name: 'init',
  summary: 'create a new, empty repository',
  exitCodes: '0 created · 2 the folder already holds a repository or other files, or cannot be created',
  options: [],
  async run(ctx: CliContext, opts: Opts) {
    const path = await repoPath(ctx, opts);
    await makeRepoFolder(path);
    const repo = await Repository.init(await openLocalTarget(path), { clock: ctx.clock });
    if (opts.json) printJson(ctx, { repo: path, id: repo.config.id, formatVersion: repo.config.formatVersion });
    say(ctx, opts, `created repository ${path} (format ${repo.config.formatVersion}, id ${repo.config.id.slice(0, 8)})`);
    return 0;
  },
};
