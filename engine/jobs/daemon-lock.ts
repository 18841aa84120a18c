/**
 * One daemon per state folder. Two daemons on one catalog each run every scheduled backup, at
 * the same moment on the same target, and each applies retention after it.
 *
 * The lock is the file <state>/daemon.lock, holding the repository locks' record (host, pid,
 * heartbeat) and judged stale by their rule (engine/repo/locks.ts isStale): its holder is on
 * this host and the pid is gone (kill -9), or its heartbeat stopped (a holder on another host
 * that died, when the state folder is shared). A stale lock is taken over at start; nobody
 * removes one by hand. `drctl backup --policy` does not take it: a run outside the schedule
 * meets the daemon's jobs at the repository lock, like any other command.
 *
 * The file is created by hard-linking a complete temp file, so it never exists half-written,
 * and a stale one is moved aside before it is deleted, so two starts that both found it stale
 * cannot delete each other's fresh lock.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { fsp, makeDirs } from '../runtime/fs.js';
import { HEARTBEAT_MS, isStale, type LockRecord } from '../repo/locks.js';
import { DaemonRunningError, DrError, UsageError, errnoCode } from '../errors.js';
import type { Clock } from '../runtime/clock.js';

export interface DaemonLock {
  /** The stale lock of a daemon that died, which this one replaced. */
  readonly replaced: LockRecord | undefined;
  /** Stop the heartbeat and remove the lock (only if it is still ours). */
  release(): Promise<void>;
}

export interface DaemonLockOptions {
  clock: Clock;
  /** The lock was found taken by someone else while this daemon ran (its heartbeat had stopped). */
  onLost?(holder: LockRecord | undefined): void;
}

const TAKEOVER_ATTEMPTS = 3;

/** Take the state folder's daemon lock, or throw DaemonRunningError naming the daemon that holds it. */
export async function acquireDaemonLock(stateDir: string, opts: DaemonLockOptions): Promise<DaemonLock> {
  const file = join(stateDir, 'daemon.lock');
  const { clock } = opts;
  const startedAt = clock.now().toISOString();
  const mine = (): LockRecord => ({
    kind: 'exclusive', host: hostname(), pid: process.pid, command: 'drctl daemon', startedAt, heartbeatAt: clock.now().toISOString(),
  });
  let replaced: LockRecord | undefined;
  try {
    await makeDirs(stateDir);
    for (let attempt = 1; !(await createExclusive(file, mine())); attempt++) {
      const held = await readLock(file);
      if (held === 'missing') continue;
      if (held !== 'unreadable' && !isStale(held, clock) && !isEarlierSelf(held)) throw new DaemonRunningError(stateDir, held);
      // Stale — or taken by someone else between our tries, seen as such on the next round.
      if (attempt >= TAKEOVER_ATTEMPTS && held !== 'unreadable') throw new DaemonRunningError(stateDir, held);
      if (await removeIfSame(file, held) && held !== 'unreadable') replaced = held;
    }
  } catch (e) {
    if (e instanceof DrError) throw e;
    throw new UsageError(`cannot start the daemon on state folder ${stateDir} - ${(e as Error).message}`,
      'give --state / DRCTL_STATE a writable folder', { cause: e });
  }
  const isMine = (rec: LockRecord | 'missing' | 'unreadable'): boolean =>
    typeof rec === 'object' && rec.pid === process.pid && rec.host === hostname() && rec.startedAt === startedAt;
  const heartbeat = setInterval(() => {
    void (async () => {
      const held = await readLock(file);
      if (!isMine(held)) {
        clearInterval(heartbeat);
        opts.onLost?.(typeof held === 'object' ? held : undefined);
        return;
      }
      await writeReplacing(file, mine());
    })().catch(() => undefined); // the next beat tries again; staleness takes 10 missed beats
  }, HEARTBEAT_MS);
  heartbeat.unref();
  return {
    replaced,
    release: async () => {
      clearInterval(heartbeat);
      if (isMine(await readLock(file))) await fsp.unlink(file).catch(() => undefined);
    },
  };
}

/**
 * A lock with our own pid on this host, met before ours was created: left by an earlier process
 * that had the same pid (a restarted container, where the daemon is pid 1 every time).
 */
function isEarlierSelf(rec: LockRecord): boolean {
  return rec.host === hostname() && rec.pid === process.pid;
}

/** Create `file` holding `rec` unless it exists. */
async function createExclusive(file: string, rec: LockRecord): Promise<boolean> {
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  await fsp.writeFile(tmp, JSON.stringify(rec) + '\n', { flag: 'wx' });
  try {
    await fsp.link(tmp, file);
    return true;
  } catch (e) {
    if (errnoCode(e) === 'EEXIST') return false;
    throw e;
  } finally {
    await fsp.unlink(tmp).catch(() => undefined);
  }
}

async function writeReplacing(file: string, rec: LockRecord): Promise<void> {
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  await fsp.writeFile(tmp, JSON.stringify(rec) + '\n', { flag: 'wx' });
  await fsp.rename(tmp, file).catch(async (e: unknown) => {
    await fsp.unlink(tmp).catch(() => undefined);
    throw e;
  });
}

async function readLock(file: string): Promise<LockRecord | 'missing' | 'unreadable'> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return 'missing';
    throw e;
  }
  try {
    const rec = JSON.parse(text) as LockRecord;
    return typeof rec.pid === 'number' && typeof rec.host === 'string' && typeof rec.heartbeatAt === 'string' ? rec : 'unreadable';
  } catch {
    return 'unreadable';
  }
}

/**
 * Remove the lock file if it still holds `seen`. It is moved aside first and compared there:
 * a fresh lock that another start created meanwhile is put back, not deleted.
 */
async function removeIfSame(file: string, seen: LockRecord | 'unreadable'): Promise<boolean> {
  const aside = `${file}.${randomBytes(6).toString('hex')}.stale`;
  try {
    await fsp.rename(file, aside);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return false;
    throw e;
  }
  const moved = await readLock(aside);
  const same = seen === 'unreadable'
    ? moved === 'unreadable'
    : typeof moved === 'object' && moved.pid === seen.pid && moved.host === seen.host && moved.startedAt === seen.startedAt;
  if (!same) await fsp.link(aside, file).catch(() => undefined); // EEXIST: a third start won; it is reported next round
  await fsp.unlink(aside).catch(() => undefined);
  return same;
}
