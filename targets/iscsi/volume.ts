/**
 * One attach of a LUN shared by every drctl process on this machine. The state lives in
 * `<stateDir>/targets/NAME/attach.json` (attach-record.ts) and is changed only under a lock
 * next to it, so concurrent runs share one attach: the first job attaches, the last one
 * detaches (unless `keepAttached`, or the volume was attached by hand with `drctl target attach`).
 *
 * Crash safety: the record is written before anything is started and completed step by step;
 * users whose process is gone are dropped; a record that is not healthy (daemon dead, mount
 * gone, attach never finished) — or leftovers without a record — are torn down by evidence
 * (teardown.ts) before anything else, so `detach` and the next `attach` always work.
 *
 * Safety: a LUN another target of this state folder has attached is refused; filesystem.ts
 * refuses a filesystem mounted elsewhere; detaching never pulls a busy filesystem out from
 * under its users unless --force.
 */
import { readFile } from 'node:fs/promises';
import { UsageError, errnoCode } from '../../engine/errors.js';
import { IscsiAttachError, IscsiInUseError } from './errors.js';
import {
  clearDirty, describeAttach, drctlAttachOf, locked, otherAttachOfLun, readDirty, readState, targetStateDir, writeState,
} from './attach-record.js';
import { describeUsers, lockHolders, processesUsing, volumeUsers, type VolumeUser } from './busy.js';
import { checkAndMount, refuseMountedHere } from './filesystem.js';
import { attachKernel, kernelInitiatorWorks } from './kernel.js';
import { mountTable, pidAlive, probeSignature } from './system.js';
import { isHealthy, orphanState, teardown } from './teardown.js';
import { attachUserspace, userspacePaths } from './userspace.js';
import { lunIdOf, type AttachState, type IscsiTargetConfig } from './types.js';

export { targetStateDir };

export interface VolumeLease {
  readonly state: AttachState;
  /** Give the volume back; the last user detaches it (unless something still uses it). Idempotent. */
  release(): Promise<void>;
}

export interface AcquireOptions {
  /** `drctl target attach`: stays attached until `drctl target detach`. */
  manual?: boolean;
  /** false: attach the block device only, for repairs (`target attach --no-mount`). */
  mount?: boolean;
  /** The operator says no other machine has the filesystem mounted (`target attach --force`). */
  force?: boolean;
}

/** Attach (or join an existing attach) and count this process as a user; `manual` keeps it attached. */
export async function acquireVolume(t: IscsiTargetConfig, stateDir: string, opts: AcquireOptions = {}): Promise<VolumeLease> {
  const dir = targetStateDir(stateDir, t.name);
  const blockOnly = opts.mount === false;
  const state = await locked(dir, async () => {
    let s = await healthyState(t, dir);
    if (s?.phase === 'block' && !blockOnly) {
      throw new IscsiInUseError(`target ${t.name} is attached without mounting (for repairs) as ${s.device}`, `when done, \`drctl target detach ${t.name}\`, then attach it again`);
    }
    if (s && s.phase !== 'block' && blockOnly) {
      throw new IscsiInUseError(`target ${t.name} is attached and mounted on ${s.mountpoint}`, `detach it first (\`drctl target detach ${t.name}\`) to attach it without mounting`);
    }
    s ??= await attachNew(t, stateDir, dir, opts);
    if (opts.manual || blockOnly) s.manual = true;
    else s.users.push(process.pid);
    await writeState(dir, s);
    return s;
  });
  let released = !!opts.manual || blockOnly;
  return {
    state,
    release: async () => {
      if (released) return;
      released = true;
      await locked(dir, async () => {
        const s = await readState(dir);
        if (!s) return;
        s.users = s.users.filter((p) => p !== process.pid && pidAlive(p));
        if (s.users.length || s.manual || t.keepAttached) return writeState(dir, s);
        const dead = !(await isHealthy(s));
        // Something (a shell, a restore --target) still uses it: it stays attached for them.
        if ((await teardown(t, dir, s, { lazy: dead, dead })).outcome === 'busy') await writeState(dir, s);
      });
    },
  };
}

export interface DetachResult {
  wasAttached: boolean;
  /** --force on a busy volume: who was using it (they now get I/O errors). */
  forcedUsers: VolumeUser[];
}

/** Detach now. Refuses while a job or any process uses the volume, unless `force`. Idempotent. */
export async function detachVolume(t: IscsiTargetConfig, stateDir: string, opts: { force?: boolean } = {}): Promise<DetachResult> {
  const dir = targetStateDir(stateDir, t.name);
  return locked(dir, async () => {
    const s = (await readState(dir)) ?? (await orphanState(t, dir));
    if (!s) {
      await refuseMountedFromElsewhere(t, stateDir);
      return { wasAttached: false, forcedUsers: [] };
    }
    const healthy = await isHealthy(s);
    const jobs = s.users.filter((p) => pidAlive(p) && p !== process.pid);
    if (jobs.length && !opts.force) {
      throw new IscsiInUseError(`target ${t.name} is in use by running job process${jobs.length > 1 ? 'es' : ''} ${jobs.join(', ')}`,
        'wait for the jobs to finish (the last one detaches), or add --force to detach anyway (those jobs then fail)');
    }
    const mounted = healthy && s.phase !== 'block';
    if (!opts.force && mounted) {
      const holders = await lockHolders(s.mountpoint);
      if (holders.length) throw inUseError(t, s, holders);
    }
    const forcedUsers = opts.force && mounted ? await volumeUsers(s.mountpoint) : [];
    const r = await teardown(t, dir, s, { lazy: !!opts.force || !healthy, dead: !healthy });
    if (r.outcome === 'busy') throw inUseError(t, s, await busyReasons(s.mountpoint, r.copies ?? []));
    return { wasAttached: true, forcedUsers: r.lazy ? forcedUsers : [] };
  });
}

/** Processes using the volume, here or through a copy of the mount; a copy nobody is seen using is named itself. */
async function busyReasons(mountpoint: string, copies: VolumeUser[]): Promise<VolumeUser[]> {
  const users = await processesUsing(mountpoint);
  return [...users, ...copies.filter((c) => !users.some((u) => u.pid === c.pid))];
}

function inUseError(t: IscsiTargetConfig, s: AttachState, users: VolumeUser[]): IscsiInUseError {
  const them = users.length > 1 ? 'them' : 'it';
  const copy = users.find((u) => u.copyAt);
  return new IscsiInUseError(`target ${t.name} is in use: ${users.length ? describeUsers(users) : 'the filesystem is busy'} - it stays attached on ${s.mountpoint}`,
    `let ${them} finish (or close what uses ${s.mountpoint})${copy ? `, or end the copy of the mount (\`nsenter -t ${copy.pid} -m umount ${copy.copyAt}\`)` : ''}, then detach; --force detaches anyway and ${users.length > 1 ? 'those processes' : 'it'} then fail${users.length > 1 ? '' : 's'} with I/O errors`);
}

/** The recorded attach when it is healthy and mounted, else undefined (nothing is changed). */
export async function attachedState(t: IscsiTargetConfig, stateDir: string): Promise<AttachState | undefined> {
  const s = await recordedAttach(t, stateDir);
  return s && s.phase !== 'block' ? s : undefined;
}

/** The recorded attach when it is healthy, mounted or not (nothing is changed). */
export async function recordedAttach(t: IscsiTargetConfig, stateDir: string): Promise<AttachState | undefined> {
  const s = await readState(targetStateDir(stateDir, t.name));
  return s && (await isHealthy(s)) ? s : undefined;
}

/** Attach the block device only (for `target format` and `target test`), run fn, detach. Refuses an attached volume. */
export async function withBlockDevice<T>(t: IscsiTargetConfig, stateDir: string, fn: (device: string) => Promise<T>): Promise<T> {
  const dir = targetStateDir(stateDir, t.name);
  return locked(dir, async () => {
    const s = await healthyState(t, dir);
    if (s) {
      throw new IscsiInUseError(s.phase === 'block' ? `target ${t.name} is attached without mounting as ${s.device}` : `target ${t.name} is attached and mounted on ${t.mountpoint}`,
        `detach it first: \`drctl target detach ${t.name}\``);
    }
    await refuseSameLunAttached(t, stateDir);
    const rec = await recordIntent(t, dir);
    try {
      Object.assign(rec, await attachBlock(t, dir, rec));
      await writeState(dir, rec);
      return await fn(rec.device);
    } finally {
      await teardown(t, dir, rec, { lazy: true });
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

/** A fresh attach: checks, the intent record, the block device, then fsck and mount (or not). */
async function attachNew(t: IscsiTargetConfig, stateDir: string, dir: string, opts: AcquireOptions): Promise<AttachState> {
  if (opts.mount !== false) await refuseTakenMountpoint(t, stateDir);
  await refuseSameLunAttached(t, stateDir);
  const rec = await recordIntent(t, dir);
  try {
    Object.assign(rec, await attachBlock(t, dir, rec));
    await writeState(dir, rec);
    if (opts.mount === false) {
      await refuseMountedHere(t, await probeSignature(rec.device), stateDir);
      rec.phase = 'block';
    } else {
      const dirtyUuid = await readDirty(dir);
      const m = await checkAndMount(t, rec.device, { stateDir, ...(dirtyUuid ? { dirtyUuid } : {}), ...(opts.force ? { force: true } : {}) });
      Object.assign(rec, m, { phase: 'mounted' });
      await clearDirty(dir);
    }
    delete rec.attachingPid;
    return rec;
  } catch (e) {
    await teardown(t, dir, rec, { lazy: true });
    throw e;
  }
}

/** attach.json before anything is started: what a killed drctl would leave behind, and where. */
async function recordIntent(t: IscsiTargetConfig, dir: string): Promise<AttachState> {
  if (process.getuid?.() !== 0) {
    throw new UsageError(`target ${t.name}: attaching an iSCSI volume needs root (loop devices, mount)`, 'run drctl as root, or use a volume mounted by the system as a type: local target');
  }
  const strategy = await chooseStrategy(t);
  const rec: AttachState = {
    version: 1, phase: 'attaching', lunId: lunIdOf(t), strategy, device: '', ...(strategy === 'userspace' ? userspacePaths(dir) : {}),
    mountpoint: t.mountpoint, users: [], manual: false, attachedAt: new Date().toISOString(), attachingPid: process.pid,
  };
  await writeState(dir, rec);
  return rec;
}

async function attachBlock(t: IscsiTargetConfig, dir: string, rec: AttachState): Promise<Pick<AttachState, 'device' | 'qsdPid' | 'exportFile'>> {
  const secret = await readSecret(t);
  const block = rec.strategy === 'kernel' ? await attachKernel(t, secret) : await attachUserspace(t, dir, secret);
  return { device: block.device, ...(block.qsdPid ? { qsdPid: block.qsdPid } : {}), ...(block.exportFile ? { exportFile: block.exportFile } : {}) };
}

/** The recorded state, users pruned; a broken attach (or leftovers without a record) is torn down and undefined returned. */
async function healthyState(t: IscsiTargetConfig, dir: string): Promise<AttachState | undefined> {
  const s = (await readState(dir)) ?? (await orphanState(t, dir));
  if (!s) return undefined;
  s.users = s.users.filter(pidAlive);
  if (await isHealthy(s)) return s;
  await teardown(t, dir, s, { lazy: true, dead: true });
  return undefined;
}

/** Another target name of this state folder has the same LUN attached: attaching it twice corrupts it. */
async function refuseSameLunAttached(t: IscsiTargetConfig, stateDir: string): Promise<void> {
  const other = await otherAttachOfLun(stateDir, t.name, lunIdOf(t));
  if (!other) return;
  const s = other.state;
  const live = s.phase === 'attaching' ? pidAlive(s.attachingPid) : await isHealthy(s);
  if (!live) return;
  throw new IscsiInUseError(
    `target ${t.name}: LUN ${t.lun} of ${t.iqn} at ${t.portal} is already attached as target ${other.name}${s.phase === 'block' ? ` (without mounting, ${s.device})` : ` (mounted on ${s.mountpoint})`} - attaching one LUN twice corrupts its filesystem`,
    `it is the same LUN: use target ${other.name}, or detach it first (\`drctl target detach ${other.name}\`)`);
}

async function refuseTakenMountpoint(t: IscsiTargetConfig, stateDir: string): Promise<void> {
  const taken = (await mountTable()).get(t.mountpoint);
  if (!taken) return;
  const owner = await drctlAttachOf(taken);
  if (owner) {
    throw new IscsiInUseError(`target ${t.name}: mountpoint ${t.mountpoint} is already in use - ${taken} is mounted there by ${await describeAttach(owner, stateDir)}`,
      owner.name === t.name ? `that attach was made with --state ${owner.stateDir}: use the same --state, or detach it there (\`drctl target detach ${t.name} --state ${owner.stateDir}\`)`
        : `detach target ${owner.name} first, or choose another mountpoint: in ${t.file}`);
  }
  throw new IscsiInUseError(`target ${t.name}: mountpoint ${t.mountpoint} is already in use (${taken} is mounted there)`, `unmount it, or choose another mountpoint: in ${t.file}`);
}

/** Not attached in this state folder, yet the mountpoint is mounted: say by whom instead of "was not attached". */
async function refuseMountedFromElsewhere(t: IscsiTargetConfig, stateDir: string): Promise<void> {
  const src = (await mountTable()).get(t.mountpoint);
  if (!src) return;
  const owner = await drctlAttachOf(src);
  if (owner) {
    throw new IscsiInUseError(`target ${t.name} is not attached in state folder ${stateDir}, but its mountpoint ${t.mountpoint} is mounted (${src}) by ${await describeAttach(owner, stateDir)} - nothing was detached`,
      `detach it with the state folder that attached it: \`drctl target detach ${owner.name} --state ${owner.stateDir}\``);
  }
  throw new IscsiInUseError(`target ${t.name} is not attached in state folder ${stateDir}, but its mountpoint ${t.mountpoint} is mounted (${src}) - nothing was detached`,
    `if drctl attached it with another --state (or $DRCTL_STATE), detach it with that one; otherwise unmount it yourself (\`umount ${t.mountpoint}\`)`);
}
