/**
 * Repository locks. Backups, restores and checks take a shared lock; prune takes an
 * exclusive one. A lock file carries host, pid and a heartbeat that is refreshed while the
 * holder runs. A lock is stale — and removed by the next process that meets it — when its
 * holder is on this host and the pid is gone (kill -9), or when its heartbeat is older than
 * STALE_AFTER_MS (a holder on another host that died). Nobody ever has to remove a lock by hand.
 *
 * A repository on a read-only filesystem cannot hold lock files. Commands that only read it may
 * then go on without one (LockWait.onReadOnly); a writer on this host cannot change it either,
 * though a host that mounts the same volume read-write still could.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Keys } from './format.js';
import { InterruptedError, RepositoryLockedError, TargetIoError, hasErrno } from '../errors.js';
import type { Clock } from '../runtime/clock.js';
import type { TargetDriver } from '../../targets/types.js';

/**
 * shared: backup, restore, check, forget — any number at once.
 * prune: the long mark and repack phase of prune — one at a time, alongside shared holders.
 * exclusive: prune's short final sweep — alone.
 */
export type LockKind = 'shared' | 'prune' | 'exclusive';

export interface LockRecord {
  kind: LockKind;
  host: string;
  pid: number;
  command: string;
  startedAt: string;
  heartbeatAt: string;
}

export const HEARTBEAT_MS = 30_000;
export const STALE_AFTER_MS = 5 * 60_000;
const POLL_MS = [100, 250, 500, 1000, 2000];

export interface Lock {
  readonly id: string;
  release(): Promise<void>;
}

export interface LockWait {
  /** How long to wait for conflicting holders to go away; 0 fails at once. */
  waitMs?: number;
  /** Called once when the lock has to wait, with who holds it. */
  onWait?: (holder: string) => void;
  /** Lock ids of this process that never conflict (prune upgrading its own lock). */
  ignore?: string[];
  signal?: AbortSignal;
  /**
   * Set by commands that only read (ls, check, restore), for a shared lock: when the lock file
   * cannot be written because the repository's filesystem is read-only (EROFS: a snapshot, an
   * offsite copy, a spare node mounting the volume ro), the command goes on without a lock.
   * This is called once, and the Lock returned holds nothing (its id is ''). Without it, a
   * read-only filesystem fails the lock with a TargetIoError saying so.
   */
  onReadOnly?: () => void;
}

function conflicts(mine: LockKind, theirs: LockKind): boolean {
  if (mine === 'exclusive' || theirs === 'exclusive') return true;
  return mine === 'prune' && theirs === 'prune';
}

/**
 * Take a lock. The lock file is written first, then the others are read, so two racing
 * processes always see each other. While a waiting exclusive lock keeps its file, new shared
 * holders see it and queue behind it: prune's final step is not starved by a stream of
 * backups, and backups wait at most that short step.
 */
export async function acquireLock(target: TargetDriver, kind: LockKind, command: string, clock: Clock, wait: LockWait = {}): Promise<Lock> {
  const id = randomBytes(16).toString('hex');
  const host = hostname();
  const startedAt = clock.now().toISOString();
  const record = (): LockRecord => ({ kind, host, pid: process.pid, command, startedAt, heartbeatAt: clock.now().toISOString() });
  const write = () => target.put(Keys.lock(id), Buffer.from(JSON.stringify(record())), { replace: true });
  const deadline = Date.now() + (wait.waitMs ?? 0);
  const ignore = new Set([id, ...(wait.ignore ?? [])]);
  let timer: NodeJS.Timeout | undefined;
  let waited = false;
  let present = false;
  try {
    for (let attempt = 0; ; attempt++) {
      if (!present) {
        try {
          await write();
        } catch (e) {
          if (!hasErrno(e, 'EROFS')) throw e;
          if (kind === 'shared' && wait.onReadOnly) {
            clearInterval(timer); // set if the filesystem turned read-only while this waited
            wait.onReadOnly();
            return { id: '', release: async () => undefined };
          }
          throw readOnlyError(target.location, command, e);
        }
        present = true;
        timer ??= setInterval(() => void write().catch(() => undefined), HEARTBEAT_MS);
        timer.unref();
      }
      const blocker = await findConflict(target, ignore, kind, clock);
      if (!blocker) break;
      // Only an exclusive lock holds its place while it waits, and only against shared and
      // prune holders (which finish); between two exclusives the younger one steps back.
      const keepPlace = kind === 'exclusive' && (blocker.kind !== 'exclusive' || older(startedAt, id, blocker));
      if (!keepPlace) {
        await target.remove(Keys.lock(id)).catch(() => undefined);
        present = false;
      }
      if (wait.signal?.aborted) throw new InterruptedError();
      if (Date.now() >= deadline) throw new RepositoryLockedError(target.location, describe(blocker));
      if (!waited) wait.onWait?.(describe(blocker));
      waited = true;
      await sleep(Math.min(POLL_MS[Math.min(attempt, POLL_MS.length - 1)] as number, Math.max(0, deadline - Date.now())), wait.signal);
    }
  } catch (e) {
    clearInterval(timer);
    await target.remove(Keys.lock(id)).catch(() => undefined);
    throw e;
  }
  return {
    id,
    release: async () => {
      clearInterval(timer);
      await target.remove(Keys.lock(id)).catch(() => undefined);
    },
  };
}

function older(startedAt: string, id: string, other: LockRecord & { id?: string }): boolean {
  return startedAt < other.startedAt || (startedAt === other.startedAt && id < (other.id ?? ''));
}

/** Resolves after `ms`, or at once when `signal` aborts; leaves no listener on `signal` either way. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    // A wait polls many times on one signal: a listener left per poll passes Node's limit of
    // 10 (MaxListenersExceededWarning after ~10 s) and keeps every timer's closure alive.
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** A command that writes met a read-only repository: say so plainly, and what still works. */
function readOnlyError(location: string, command: string, cause: unknown): TargetIoError {
  return new TargetIoError(`cannot lock repository ${location} for \`${command}\` - its filesystem is read-only (EROFS)`,
    'this command writes to the repository: mount it read-write (a volume the kernel remounted read-only after I/O errors needs a check first); ls, points, check and restore work on a read-only repository',
    { cause });
}

async function findConflict(target: TargetDriver, ignore: Set<string>, kind: LockKind, clock: Clock): Promise<(LockRecord & { id: string }) | undefined> {
  for await (const info of target.list('locks/')) {
    const otherId = info.key.slice('locks/'.length).replace(/\.json$/, '');
    if (ignore.has(otherId)) continue;
    let rec: LockRecord;
    try {
      rec = JSON.parse((await target.get(info.key)).toString('utf8')) as LockRecord;
    } catch {
      continue; // vanished or half-written by a dying process: not a holder
    }
    if (isStale(rec, clock)) {
      await target.remove(info.key).catch(() => undefined);
      continue;
    }
    if (conflicts(kind, rec.kind)) return { ...rec, id: otherId };
  }
  return undefined;
}

export function isStale(rec: LockRecord, clock: Clock): boolean {
  if (rec.host === hostname() && !pidAlive(rec.pid)) return true;
  return clock.now().getTime() - new Date(rec.heartbeatAt).getTime() > STALE_AFTER_MS;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === 'EPERM';
  }
}

function describe(rec: LockRecord): string {
  return `\`${rec.command}\` (${rec.kind}, pid ${rec.pid} on ${rec.host}, since ${rec.startedAt})`;
}
