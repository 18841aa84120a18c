import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Repository, type LockWait } from '../engine/repo/index.js';
import { UsageError } from '../engine/errors.js';
import { openLocalTarget } from '../targets/registry.js';
import type { CliContext } from './context.js';
import { configDir } from './config-option.js';

export interface RepoOptions {
  repo?: string;
  /** A target of the config folder instead of a path. */
  target?: string;
  config?: string;
  /** State folder (an iSCSI target's attach state). */
  state?: string;
}

/** --repo DIR, else --target NAME (its path, from the config folder), else $DRCTL_REPO. */
export async function repoPath(ctx: CliContext, opts: RepoOptions): Promise<string> {
  if (opts.repo && opts.target) throw new UsageError('give --repo or --target, not both');
  if (opts.target) {
    const { loadConfig } = await import('../policies/config.js');
    const dir = configDir(ctx, opts);
    const config = await loadConfig(dir);
    const t = config.targets.get(opts.target);
    if (!t) {
      throw new UsageError(`target ${opts.target} is not defined in ${dir}/targets`,
        config.targets.size ? `known targets: ${[...config.targets.keys()].join(', ')}` : `create ${dir}/targets/${opts.target}.yaml (see README, "Policies")`);
    }
    if (t.type === 'iscsi') {
      // Commands that take --target read an attached volume; jobs and `drctl target` attach.
      const { attachedState } = await import('../targets/iscsi/index.js');
      const { stateDir } = await import('./wiring.js');
      if (!(await attachedState(t, stateDir(ctx, opts)))) {
        throw new UsageError(`target ${t.name} is an iSCSI volume that is not attached`, `attach it with \`drctl target attach ${t.name}\` (and detach it afterwards)`);
      }
      return t.mountpoint;
    }
    return t.path;
  }
  const p = opts.repo ?? ctx.env.DRCTL_REPO;
  if (!p) throw new UsageError('no repository given', 'pass --repo DIR or --target NAME, or set DRCTL_REPO');
  return resolve(p);
}

export async function openRepo(ctx: CliContext, opts: RepoOptions): Promise<Repository> {
  const path = await repoPath(ctx, opts);
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
