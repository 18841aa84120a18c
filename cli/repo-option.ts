import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Repository, type LockWait } from '../engine/repo/index.js';
import { UsageError } from '../engine/errors.js';
import { openLocalTarget } from '../targets/registry.js';
import type { CliContext, OutputOptions } from './context.js';
import type { OptionSpec } from './command.js';
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

/** How long a command waits for a lock held by another job unless --lock-wait says otherwise: prune's final step is short. */
export const DEFAULT_LOCK_WAIT_S = 600;

/**
 * `--lock-wait SECONDS`, the one definition every command that takes a lock lists in its
 * options (with cliLockWait, or lockWaitSeconds for its own use). `what` says what waits.
 */
export function lockWaitOption(defaultSeconds = DEFAULT_LOCK_WAIT_S, what = 'wait for a lock held by another job'): OptionSpec {
  return { flags: '--lock-wait <seconds>', description: `how long to ${what}; 0 fails at once (default ${defaultSeconds})` };
}

/** --lock-wait in seconds, checked; a bad value is a usage error before anything is locked. */
export function lockWaitSeconds(opts: { lockWait?: string }, defaultSeconds = DEFAULT_LOCK_WAIT_S): number {
  if (opts.lockWait === undefined) return defaultSeconds;
  const s = Number(opts.lockWait);
  if (opts.lockWait.trim() === '' || !Number.isFinite(s) || s < 0) throw new UsageError(`--lock-wait ${opts.lockWait}: expected seconds (0 or more)`, 'e.g. --lock-wait 60, or --lock-wait 0 to fail at once when the repository is locked');
  return s;
}

export interface CliLockOptions extends OutputOptions {
  lockWait?: string;
}

/**
 * How CLI commands wait for a lock: up to --lock-wait seconds (default 10 minutes), saying why
 * on stderr. `readOnly`: the command only reads the repository (ls, check, restore), so on a
 * read-only filesystem (a snapshot, an offsite copy, a spare node mounting the volume ro) it
 * goes on without a lock and says so in one line.
 */
export function cliLockWait(ctx: CliContext, opts: CliLockOptions = {}, how: { readOnly?: boolean } = {}): LockWait {
  const seconds = lockWaitSeconds(opts);
  return {
    waitMs: seconds * 1000,
    signal: ctx.signal,
    onWait: (holder) => {
      if (!opts.quiet) ctx.stderr.write(`drctl: waiting for the repository lock held by ${holder} (up to ${waitText(seconds)}; --lock-wait SECONDS changes it, Ctrl-C stops)\n`);
    },
    ...(how.readOnly
      ? {
        onReadOnly: () => {
          if (!opts.quiet) ctx.stderr.write('drctl: the repository is on a read-only filesystem - reading it without a lock\n');
        },
      }
      : {}),
  };
}

/** 600 → "10 min", 90 → "90 s": a wait limit, not a clock time. */
function waitText(seconds: number): string {
  if (seconds >= 3600 && seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds >= 60 && seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}
