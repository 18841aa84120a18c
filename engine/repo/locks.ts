/**
 * Repository locks. Backups, restores and checks take a shared lock; prune takes an
 * exclusive one. A lock file carries host, pid and a heartbeat that is refreshed while the
 * holder runs. A lock is stale — and removed by the next process that meets it — when its
 * holder is on this host and the pid is gone (kill -9), or when its heartbeat is older than
 * STALE_AFTER_MS (a holder on another host that died). Nobody ever has to remove a lock by hand.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Keys } from './format.js';
import { RepositoryLockedError } from '../errors.js';
import type { Clock } from '../runtime/clock.js';
import type { TargetDriver } from '../../targets/types.js';

export type LockKind = 'shared' | 'exclusive';

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

export interface Lock {
  readonly id: string;
  release(): Promise<void>;
}

export async function acquireLock(target: TargetDriver, kind: LockKind, command: string, clock: Clock): Promise<Lock> {
  const id = randomBytes(16).toString('hex');
  const host = hostname();
  const startedAt = clock.now().toISOString();
  const record = (): LockRecord => ({ kind, host, pid: process.pid, command, startedAt, heartbeatAt: clock.now().toISOString() });
  await target.put(Keys.lock(id), Buffer.from(JSON.stringify(record())), { replace: true });
  try {
    const blocker = await findConflict(target, id, kind, clock);
    if (blocker) throw new RepositoryLockedError(target.location, describe(blocker));
  } catch (e) {
    await target.remove(Keys.lock(id)).catch(() => undefined);
    throw e;
  }
  const timer = setInterval(() => {
    target.put(Keys.lock(id), Buffer.from(JSON.stringify(record())), { replace: true }).catch(() => undefined);
  }, HEARTBEAT_MS);
  timer.unref();
  return {
    id,
    release: async () => {
      clearInterval(timer);
      await target.remove(Keys.lock(id)).catch(() => undefined);
    },
  };
}

async function findConflict(target: TargetDriver, ownId: string, kind: LockKind, clock: Clock): Promise<LockRecord | undefined> {
  for await (const info of target.list('locks/')) {
    const otherId = info.key.slice('locks/'.length).replace(/\.json$/, '');
    if (otherId === ownId) continue;
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
    if (kind === 'exclusive' || rec.kind === 'exclusive') return rec;
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
