import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Repository, type LockWait } from '../engine/repo/index.js';
import { UsageError } from '../engine/errors.js';
import { openLocalTarget } from '../targets/index.js';
import type { CliContext } from './context.js';

export interface RepoOptions {
  repo?: string;
}

export function repoPath(ctx: CliContext, opts: RepoOptions): string {
  const p = opts.repo ?? ctx.env.DRCTL_REPO;
  if (!p) throw new UsageError('no repository given', 'pass --repo DIR or set DRCTL_REPO');
  return resolve(p);
}

export async function openRepo(ctx: CliContext, opts: RepoOptions): Promise<Repository> {
  const path = repoPath(ctx, opts);
  const target = await openLocalTarget(path);
  return Repository.open(target, { clock: ctx.clock }, {
    existsCheck: () => stat(path).then(() => true, () => false),
  });
}

/** How CLI commands wait for a lock: up to 10 minutes (prune's final step is short), saying why. */
export function cliLockWait(ctx: CliContext, opts: { quiet?: boolean } = {}): LockWait {
  return {
    waitMs: 10 * 60_000,
    signal: ctx.signal,
    onWait: (holder) => {
      if (!opts.quiet) ctx.stderr.write(`drctl: waiting for the repository lock held by ${holder}\n`);
    },
  };
}
