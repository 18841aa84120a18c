/**
 * The files in `<stateDir>/targets/NAME/`:
 *
 * - attach.json — the attach (types.ts AttachState), replaced atomically;
 * - attach.lock — proper-lockfile's lock directory, with attach.lock.owner naming the pid
 *   that holds it, so a holder killed with -9 does not make the next command wait the 30 s
 *   until the lock goes stale;
 * - dirty.json — this machine lost the mounted filesystem (daemon died, forced or lazy
 *   unmount, crash): its journal needs replaying, and that is our own doing, not another
 *   machine that has it mounted (filesystem.ts decides with it);
 * - lun.raw, qsd.pid, chap.secret — the userspace strategy's export file, daemon pid and
 *   CHAP secret copy (userspace.ts).
 */
import { readFile, readdir, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { makeDirs } from '../../engine/runtime/fs.js';
import { errnoCode } from '../../engine/errors.js';
import { loopBackingFile, pidAlive } from './system.js';
import { sameLun, type AttachState, type LunId } from './types.js';

export function targetStateDir(stateDir: string, name: string): string {
  return join(stateDir, 'targets', name);
}

export async function readState(dir: string): Promise<AttachState | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, 'attach.json'), 'utf8')) as AttachState;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  }
}

export async function writeState(dir: string, s: AttachState): Promise<void> {
  const tmp = join(dir, `attach.json.${process.pid}`);
  await writeFile(tmp, JSON.stringify(s, null, 1) + '\n');
  await rename(tmp, join(dir, 'attach.json'));
}

export async function removeState(dir: string): Promise<void> {
  await rm(join(dir, 'attach.json'), { force: true });
}

/** The UUID of a filesystem this machine lost while mounted (see the header), if any. */
export async function readDirty(dir: string): Promise<string | undefined> {
  const text = await readFile(join(dir, 'dirty.json'), 'utf8').catch(() => '');
  return text ? ((JSON.parse(text) as { uuid?: string }).uuid ?? '') : undefined;
}

export async function markDirty(dir: string, uuid: string | undefined): Promise<void> {
  if (uuid) await writeFile(join(dir, 'dirty.json'), JSON.stringify({ uuid, at: new Date().toISOString() }) + '\n');
}

export async function clearDirty(dir: string): Promise<void> {
  await rm(join(dir, 'dirty.json'), { force: true });
}

/** Run fn holding the target's lock. */
export async function locked<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  await makeDirs(dir);
  const lockPath = join(dir, 'attach.lock');
  let release: () => Promise<void>;
  // Up to about 3 minutes, looking for a dead holder every few seconds.
  for (let attempt = 0; ; attempt++) {
    await breakDeadLock(lockPath);
    try {
      release = await lockfile.lock(join(dir, 'attach.json'), {
        realpath: false, stale: 30_000, update: 5_000, lockfilePath: lockPath,
        retries: { retries: 10, minTimeout: 100, maxTimeout: 500 },
      });
      break;
    } catch (e) {
      if (errnoCode(e) !== 'ELOCKED' || attempt >= 40) throw e;
    }
  }
  try {
    const st = await stat(lockPath);
    await writeFile(`${lockPath}.owner`, JSON.stringify({ pid: process.pid, ino: st.ino, born: st.birthtimeMs }) + '\n');
    return await fn();
  } finally {
    await rm(`${lockPath}.owner`, { force: true });
    await release();
  }
}

/**
 * A lock whose owner file names a dead pid of this machine is removed at once. The owner file
 * records the lock directory's inode and birth time, so an owner file left by an earlier
 * holder never vouches for a newer lock.
 */
async function breakDeadLock(lockPath: string): Promise<void> {
  const owner = await readFile(`${lockPath}.owner`, 'utf8').then((s) => JSON.parse(s) as { pid: number; ino: number; born: number }, () => undefined);
  if (!owner || pidAlive(owner.pid)) return;
  const st = await stat(lockPath).catch(() => undefined);
  if (st && st.ino === owner.ino && st.birthtimeMs === owner.born) await rm(lockPath, { recursive: true, force: true });
  await rm(`${lockPath}.owner`, { force: true });
}

/** Another target of this state folder that has the same LUN attached (or is attaching it). */
export async function otherAttachOfLun(stateDir: string, name: string, lun: LunId): Promise<{ name: string; state: AttachState } | undefined> {
  const root = join(stateDir, 'targets');
  for (const other of await readdir(root).catch(() => [] as string[])) {
    if (other === name) continue;
    const s = await readState(join(root, other)).catch(() => undefined);
    if (s?.lunId && sameLun(s.lunId, lun)) return { name: other, state: s };
  }
  return undefined;
}

/**
 * The drctl attach a device belongs to, found from the device alone: a userspace attach's loop
 * device is backed by `<stateDir>/targets/NAME/lun.raw`.
 */
export async function drctlAttachOf(device: string): Promise<{ stateDir: string; name: string } | undefined> {
  const back = await loopBackingFile(device);
  const m = /^(.*)\/targets\/([^/]+)\/lun\.raw$/.exec(back);
  return m ? { stateDir: m[1] as string, name: m[2] as string } : undefined;
}

/** "target san1" when it is in our state folder, else "target san1 of state folder /x". */
export async function describeAttach(a: { stateDir: string; name: string }, ourStateDir: string): Promise<string> {
  const ours = await realpath(ourStateDir).catch(() => ourStateDir);
  return a.stateDir === ours || a.stateDir === ourStateDir ? `target ${a.name}` : `target ${a.name} of state folder ${a.stateDir}`;
}
