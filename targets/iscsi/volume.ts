/**
 * One attach of a LUN shared by every drctl process on this machine. The state lives in
 * `<stateDir>/targets/NAME/attach.json` (strategy, device, daemon pid, mountpoint, the pids of
 * the jobs using it) and is changed only under a lock file next to it, so concurrent runs
 * share one attach: the first job attaches, the last one detaches (unless `keepAttached`, or
 * the volume was attached by hand with `drctl target attach`).
 *
 * Crash safety: users whose process is gone are dropped; a recorded attach that is no longer
 * healthy (daemon dead, mount gone) is torn down — unmount, loop device, FUSE export, daemon
 * or kernel session — before a fresh one, so `detach` and the next `attach` always work.
 */
import { readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { makeDirs } from '../../engine/runtime/fs.js';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { UsageError, errnoCode } from '../../engine/errors.js';
import { IscsiAttachError } from './errors.js';
import { attachKernel, detachKernel, kernelInitiatorWorks } from './kernel.js';
import { checkAndMount, mountTable, pidAlive, pidRuns, unmount } from './system.js';
import { QSD, attachUserspace, detachUserspace } from './userspace.js';
import type { AttachState, BlockAttachment, IscsiTargetConfig } from './types.js';

export interface VolumeLease {
  readonly state: AttachState;
  /** Give the volume back; the last user detaches it. Idempotent. */
  release(): Promise<void>;
}

export function targetStateDir(stateDir: string, name: string): string {
  return join(stateDir, 'targets', name);
}

/** Attach (or join an existing attach) and count this process as a user; `manual` keeps it attached. */
export async function acquireVolume(t: IscsiTargetConfig, stateDir: string, opts: { manual?: boolean } = {}): Promise<VolumeLease> {
  const dir = targetStateDir(stateDir, t.name);
  const state = await locked(dir, async () => {
    let s = await healthyState(t, dir);
    if (!s) {
      const taken = (await mountTable()).get(t.mountpoint);
      if (taken) {
        throw new IscsiAttachError(`target ${t.name}: mountpoint ${t.mountpoint} is already in use (${taken} is mounted there)`,
          `unmount it, or choose another mountpoint: in ${t.file}`);
      }
      const block = await attachBlock(t, dir);
      try {
        await checkAndMount(t, block.device);
      } catch (e) {
        await detachBlock(t, block);
        throw e;
      }
      s = { version: 1, ...block, mountpoint: t.mountpoint, users: [], manual: false, attachedAt: new Date().toISOString() };
    }
    if (opts.manual) s.manual = true;
    else s.users.push(process.pid);
    await writeState(dir, s);
    return s;
  });
  let released = !!opts.manual;
  return {
    state,
    release: async () => {
      if (released) return;
      released = true;
      await locked(dir, async () => {
        const s = await readState(dir);
        if (!s) return;
        const i = s.users.indexOf(process.pid);
        if (i >= 0) s.users.splice(i, 1);
        s.users = s.users.filter(pidAlive);
        if (s.users.length === 0 && !s.manual && !t.keepAttached) await teardown(t, dir, s);
        else await writeState(dir, s);
      });
    },
  };
}

/** Detach now. Refuses while a live job uses the volume unless `force`. Idempotent. */
export async function detachVolume(t: IscsiTargetConfig, stateDir: string, opts: { force?: boolean } = {}): Promise<{ wasAttached: boolean }> {
  const dir = targetStateDir(stateDir, t.name);
  return locked(dir, async () => {
    const s = await readState(dir);
    if (!s) return { wasAttached: false };
    const users = s.users.filter((p) => pidAlive(p) && p !== process.pid);
    if (users.length && !opts.force) {
      throw new IscsiAttachError(`target ${t.name} is in use by running job process${users.length > 1 ? 'es' : ''} ${users.join(', ')}`,
        'wait for the jobs to finish (the last one detaches), or add --force to detach anyway (those jobs then fail)');
    }
    await teardown(t, dir, s);
    return { wasAttached: true };
  });
}

/** The recorded attach when it is healthy, else undefined (nothing is changed). */
export async function attachedState(t: IscsiTargetConfig, stateDir: string): Promise<AttachState | undefined> {
  const s = await readState(targetStateDir(stateDir, t.name));
  return s && (await isHealthy(s)) ? s : undefined;
}

/** Attach the block device only (for `target format`), run fn, detach. Refuses a mounted volume. */
export async function withBlockDevice<T>(t: IscsiTargetConfig, stateDir: string, fn: (device: string) => Promise<T>): Promise<T> {
  const dir = targetStateDir(stateDir, t.name);
  return locked(dir, async () => {
    if (await healthyState(t, dir)) {
      throw new IscsiAttachError(`target ${t.name} is attached and mounted on ${t.mountpoint}`, `detach it first: \`drctl target detach ${t.name}\``);
    }
    const block = await attachBlock(t, dir);
    try {
      return await fn(block.device);
    } finally {
      await detachBlock(t, block);
    }
  });
}

export async function readSecret(t: IscsiTargetConfig): Promise<string | undefined> {
  if (!t.chap) return undefined;
  try {
    // A trailing newline (echo secret > file) is not part of the secret.
    return (await readFile(t.chap.secretFile, 'utf8')).replace(/\r?\n$/, '');
  } catch (e) {
    throw new UsageError(`target ${t.name}: cannot read the CHAP secret file ${t.chap.secretFile} (chap.secretFile in ${t.file}) - ${errnoCode(e) ?? (e as Error).message}`,
      'create it with the secret as its only content, mode 0600');
  }
}

export async function chooseStrategy(t: IscsiTargetConfig): Promise<'kernel' | 'userspace'> {
  if (t.attach !== 'auto') return t.attach;
  return (await kernelInitiatorWorks()) ? 'kernel' : 'userspace';
}

async function attachBlock(t: IscsiTargetConfig, dir: string): Promise<BlockAttachment> {
  if (process.getuid?.() !== 0) {
    throw new UsageError(`target ${t.name}: attaching an iSCSI volume needs root (loop devices, mount)`, 'run drctl as root, or use a volume mounted by the system as a type: local target');
  }
  const secret = await readSecret(t);
  return (await chooseStrategy(t)) === 'kernel' ? attachKernel(t, secret) : attachUserspace(t, dir, secret);
}

async function detachBlock(t: IscsiTargetConfig, b: BlockAttachment): Promise<void> {
  if (b.strategy === 'kernel') await detachKernel(t);
  else await detachUserspace(b);
}

async function teardown(t: IscsiTargetConfig, dir: string, s: AttachState): Promise<void> {
  const src = (await mountTable()).get(s.mountpoint);
  if (src && src === (await realpath(s.device).catch(() => s.device))) await unmount({ ...t, mountpoint: s.mountpoint });
  await detachBlock(t, s);
  await rm(join(dir, 'attach.json'), { force: true });
}

async function isHealthy(s: AttachState): Promise<boolean> {
  const src = (await mountTable()).get(s.mountpoint);
  if (!src || src !== (await realpath(s.device).catch(() => ''))) return false;
  return s.strategy === 'kernel' || (await pidRuns(s.qsdPid, QSD));
}

/** The recorded state, users pruned; a broken attach is torn down and undefined returned. */
async function healthyState(t: IscsiTargetConfig, dir: string): Promise<AttachState | undefined> {
  const s = await readState(dir);
  if (!s) return undefined;
  s.users = s.users.filter(pidAlive);
  if (await isHealthy(s)) return s;
  await teardown(t, dir, s);
  return undefined;
}

async function readState(dir: string): Promise<AttachState | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, 'attach.json'), 'utf8')) as AttachState;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  }
}

async function writeState(dir: string, s: AttachState): Promise<void> {
  const tmp = join(dir, `attach.json.${process.pid}`);
  await writeFile(tmp, JSON.stringify(s, null, 1) + '\n');
  const { rename } = await import('node:fs/promises');
  await rename(tmp, join(dir, 'attach.json'));
}

async function locked<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  await makeDirs(dir);
  const release = await lockfile.lock(join(dir, 'attach.json'), {
    realpath: false, stale: 30_000, update: 5_000, lockfilePath: join(dir, 'attach.lock'),
    retries: { retries: 400, minTimeout: 100, maxTimeout: 500 },
  });
  try {
    return await fn();
  } finally {
    await release();
  }
}
