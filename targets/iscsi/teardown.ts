/**
 * Taking an attach apart — a healthy one (`detach`, the last job), a broken one (daemon died,
 * storage lost) or a half-made one (drctl killed while attaching) — by what is really there,
 * not only by what attach.json managed to record: the filesystem is unmounted only where it is
 * mounted from one of *our* devices, loop devices are found by their backing file, the daemon
 * by its pid file and command line.
 *
 * Unmounting is plain unless `lazy`: a busy volume is left attached and reported ('busy'), so
 * nothing is pulled out from under a process that uses it. Lazy is for --force and for
 * attaches whose device is dead anyway.
 */
import { readFile, realpath, rm, stat } from 'node:fs/promises';
import { markDirty, removeState } from './attach-record.js';
import { mountCopiesElsewhere, releaseCopies, type VolumeUser } from './busy.js';
import { detachKernel } from './kernel.js';
import { mounts, pidAlive, pidRuns, unmount } from './system.js';
import { QSD, detachUserspace, loopsBackedBy, userspacePaths } from './userspace.js';
import type { AttachState, IscsiTargetConfig } from './types.js';

export interface TeardownResult {
  /** 'busy': something uses the filesystem; nothing was changed. */
  outcome: 'done' | 'busy';
  /** busy: copies of the mount in other mount namespaces (processes using it are found by the caller). */
  copies?: VolumeUser[];
  /** A busy filesystem was detached lazily (its users get I/O errors). */
  lazy: boolean;
}

export async function teardown(t: IscsiTargetConfig, dir: string, s: AttachState, opts: { lazy: boolean; dead?: boolean }): Promise<TeardownResult> {
  const ours = await ourDevices(s);
  let lazy = false;
  // The recorded mountpoint first, then anywhere else our device is mounted (by hand, after --no-mount).
  const where = (await mounts()).filter((m) => ours.has(m.source)).map((m) => m.mountpoint);
  for (const mp of [...new Set(where)].sort((a, b) => (a === s.mountpoint ? -1 : b === s.mountpoint ? 1 : b.length - a.length))) {
    // Copies in other mount namespaces first: after our umount they would keep it alive unseen.
    const copies = await releaseCopies(await mountCopiesElsewhere(mp), { lazy: false });
    if (copies.length && !opts.lazy) return { outcome: 'busy', copies, lazy: false };
    if (!copies.length && (await unmount(t, mp, { lazy: false })) === 'done') continue;
    if (!opts.lazy) return { outcome: 'busy', lazy: false };
    await releaseCopies(copies, { lazy: true });
    await unmount(t, mp, { lazy: true });
    lazy = true;
  }
  if (s.strategy === 'kernel') await detachKernel(t);
  else await detachUserspace({ ...(s.exportFile ? { exportFile: s.exportFile } : {}), ...(s.qsdPid ? { qsdPid: s.qsdPid } : {}), ...(s.pidFile ? { pidFile: s.pidFile } : {}), ...(s.secretFile ? { secretFile: s.secretFile } : {}) });
  // The journal was not closed cleanly: remember it was us, so the next attach may replay it.
  if (s.phase !== 'attaching' && s.phase !== 'block' && (lazy || opts.dead)) await markDirty(dir, s.uuid);
  await removeState(dir);
  return { outcome: 'done', lazy };
}

/**
 * The devices of this attach. userspace: the loop devices on its export file — the recorded
 * name is not trusted, since a loop device that was freed may already serve someone else.
 */
export async function ourDevices(s: AttachState): Promise<Set<string>> {
  if (s.strategy === 'userspace') return new Set(s.exportFile ? await loopsBackedBy(s.exportFile) : []);
  return new Set(s.device ? [await realpath(s.device).catch(() => s.device)] : []);
}

/** The device still serves the LUN (userspace: our daemon runs and the loop device is on its export). */
export async function deviceAlive(s: AttachState): Promise<boolean> {
  if (!s.device) return false;
  if (s.strategy === 'kernel') return realpath(s.device).then(() => true, () => false);
  if (!(await pidRuns(s.qsdPid, QSD)) || !s.exportFile) return false;
  return (await loopsBackedBy(s.exportFile)).includes(s.device);
}

/** Healthy: device alive, and (unless attached without mounting) mounted on the mountpoint. */
export async function isHealthy(s: AttachState): Promise<boolean> {
  if (s.phase === 'attaching') return false;
  if (!(await deviceAlive(s))) return false;
  if (s.phase === 'block') return true;
  const src = (await mounts()).filter((m) => m.mountpoint === s.mountpoint).at(-1)?.source;
  return !!src && src === (await realpath(s.device).catch(() => ''));
}

/**
 * Leftovers of a userspace attach without attach.json (a drctl killed before it wrote one, by
 * an older version): its loop devices, FUSE mount, daemon pid file or secret copy, as a record
 * teardown() can take apart. undefined when there is nothing.
 */
export async function orphanState(t: IscsiTargetConfig, dir: string): Promise<AttachState | undefined> {
  const paths = userspacePaths(dir);
  const loops = await loopsBackedBy(paths.exportFile);
  const fuse = (await mounts()).some((m) => m.mountpoint === paths.exportFile);
  const pid = Number((await readFile(paths.pidFile, 'utf8').catch(() => '')).trim());
  const secret = await stat(paths.secretFile).then(() => true, () => false);
  if (!loops.length && !fuse && !(pid > 0 && pidAlive(pid))) {
    // Only the CHAP secret copy of an attach that got no further: remove it, nothing else is there.
    if (secret) await rm(paths.secretFile, { force: true });
    return undefined;
  }
  return {
    version: 1, phase: 'attaching', strategy: 'userspace', device: loops[0] ?? '', ...paths,
    mountpoint: t.mountpoint, users: [], manual: false, attachedAt: '',
  };
}
