/**
 * Small wrappers around the system tools both attach strategies share: mount table, blkid,
 * mount/umount, loop devices, process checks. Every failure names the target.
 */
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { execFile, type ExecResult } from '../../engine/runtime/exec.js';
import { blockDeviceBytes } from '../../engine/runtime/block-device.js';
import { IscsiAttachError } from './errors.js';
import type { IscsiTargetConfig } from './types.js';

export async function run(t: Pick<IscsiTargetConfig, 'name'>, cmd: string, args: string[], what: string): Promise<ExecResult> {
  let r: ExecResult;
  try {
    r = await execFile(cmd, args);
  } catch (e) {
    throw new IscsiAttachError(`target ${t.name}: ${what} failed - cannot run ${cmd}: ${(e as Error).message}`,
      'install the missing tool (scripts/setup.sh lists the packages)', { cause: e });
  }
  if (r.code !== 0) throw new IscsiAttachError(`target ${t.name}: ${what} failed - ${cmd}: ${oneLine(r.stderr || r.stdout)}`, undefined);
  return r;
}

export function oneLine(s: string): string {
  return s.trim().split('\n').filter(Boolean).slice(-2).join('; ').slice(0, 300) || 'no output';
}

export interface MountEntry {
  mountpoint: string;
  source: string;
  fstype: string;
}

/** This mount namespace's mounts, from /proc/self/mountinfo (paths decoded). */
export async function mounts(): Promise<MountEntry[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const mp = left.split(' ')[4];
    const [fstype, src] = right.split(' ');
    if (mp && src && fstype) out.push({ mountpoint: decode(mp), source: decode(src), fstype });
  }
  return out;
}

/** Mount points → source device (of stacked mounts, the top one: what the path shows). */
export async function mountTable(): Promise<Map<string, string>> {
  return new Map((await mounts()).map((m) => [m.mountpoint, m.source]));
}

function decode(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export interface Signature {
  /** ext4, xfs, …, 'partition table (gpt)', 'unknown signature', or '' when blkid finds nothing. */
  type: string;
  uuid?: string;
}

/**
 * What blkid finds on a device, reading the device itself (-p), not its cache. `timeoutMs`:
 * for devices that are not ours (another volume whose storage is gone can block reads).
 */
export async function probeSignature(device: string, opts: { timeoutMs?: number } = {}): Promise<Signature> {
  const r = await execFile('blkid', ['-p', '-o', 'export', device], opts.timeoutMs ? { signal: AbortSignal.timeout(opts.timeoutMs) } : {});
  if (r.code === 2) return { type: '' };
  const fields = Object.fromEntries(r.stdout.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  if (fields.TYPE) return { type: fields.TYPE, ...(fields.UUID ? { uuid: fields.UUID } : {}) };
  if (fields.PTTYPE) return { type: `partition table (${fields.PTTYPE})` };
  return { type: r.code === 0 ? 'unknown signature' : '' };
}

/** The filesystem type blkid finds on a device ('' when none), or 'partition table'. */
export async function probeDevice(device: string): Promise<string> {
  return (await probeSignature(device)).type;
}

/**
 * Unmount if mounted. A plain umount only, unless `lazy` (`--force`, or the device is already
 * dead): then a busy mount is detached lazily and whoever still uses it gets I/O errors.
 * 'busy': a plain umount was refused because something uses the filesystem; nothing changed.
 */
export async function unmount(t: Pick<IscsiTargetConfig, 'name'>, mountpoint: string, opts: { lazy?: boolean } = {}): Promise<'done' | 'busy'> {
  if (!(await mountTable()).has(mountpoint)) return 'done';
  const r = await execFile('umount', [mountpoint]);
  if (r.code === 0) return 'done';
  if (!opts.lazy) {
    if (/busy/i.test(r.stderr)) return 'busy';
    throw new IscsiAttachError(`target ${t.name}: unmounting ${mountpoint} failed - umount: ${oneLine(r.stderr)}`, 'see `findmnt` and the kernel log (dmesg)');
  }
  await run(t, 'umount', ['-l', mountpoint], `unmounting ${mountpoint}`);
  return 'done';
}

/** The file behind a loop device ('' when it is not a loop device or not set up). */
export async function loopBackingFile(device: string): Promise<string> {
  if (!/^\/dev\/loop\d+$/.test(device)) return '';
  const r = await execFile('losetup', ['--noheadings', '--output', 'BACK-FILE', device]);
  return r.code === 0 ? r.stdout.trim() : '';
}

export function pidAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True when pid is alive and runs `name` (a recycled pid of another program is not ours to kill). */
export async function pidRuns(pid: number | undefined, name: string): Promise<boolean> {
  if (!pid || !pidAlive(pid)) return false;
  const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmd.split('\0')[0]?.endsWith(name) ?? false;
}

/** undefined when a TCP connection to host:port opens, else why not ("connection refused"). */
export function probePortal(portal: string, timeoutMs: number): Promise<string | undefined> {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(portal);
  return new Promise((resolve) => {
    const sock = connect({ host: m?.[1] ?? m?.[2] ?? portal, port: Number(m?.[3]) });
    const done = (why: string | undefined): void => {
      sock.destroy();
      resolve(why);
    };
    sock.setTimeout(timeoutMs, () => done(`no answer within ${timeoutMs / 1000} s`));
    sock.once('connect', () => done(undefined));
    sock.once('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED' ? 'connection refused' : e.code ?? e.message));
  });
}

/** A block device's size in bytes (undefined when neither sysfs nor blockdev can tell). */
export async function deviceSize(device: string): Promise<number | undefined> {
  const size = await blockDeviceBytes(device).catch(() => ({ why: 'no such device' }));
  return 'bytes' in size ? size.bytes : undefined;
}
