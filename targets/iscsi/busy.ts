/**
 * Who uses a mounted volume, so `target detach` can refuse and name them instead of pulling
 * the filesystem out from under a restore, a shell or a copy tool.
 *
 * - Processes: a cwd, root, executable, open file or mapped file under the mountpoint (what
 *   `fuser -vm` shows). Only /proc links are read — nothing on the volume is touched, so a
 *   hung volume cannot hang this scan.
 * - drctl commands that hold a repository lock (backup, restore, check: engine/repo/locks.ts
 *   writes `locks/ID.json` with host and pid) on this host: between two reads a restore may
 *   have no file open, but it holds its lock from start to end.
 */
import { readFile, readdir, readlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { execFile } from '../../engine/runtime/exec.js';
import { pidAlive } from './system.js';

export interface VolumeUser {
  pid: number;
  /** The command line, shortened. */
  command: string;
  /** How it uses the volume: 'cwd', 'open file …', 'repository lock (restore)'. */
  how: string;
  /** A copy of the mount in this process's mount namespace, mounted there on this path. */
  copyAt?: string;
}

/** Processes on this machine using anything under mountpoint (not this process). */
export async function processesUsing(mountpoint: string): Promise<VolumeUser[]> {
  const under = (p: string): boolean => p === mountpoint || p.startsWith(`${mountpoint}/`);
  const out: VolumeUser[] = [];
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const how = await howUsed(pid, under);
    if (how) out.push({ pid, command: await commandOf(pid), how });
  }
  return out;
}

async function howUsed(pid: number, under: (p: string) => boolean): Promise<string | undefined> {
  const base = `/proc/${pid}`;
  for (const link of ['cwd', 'root', 'exe']) {
    const target = await readlink(join(base, link)).catch(() => '');
    if (target && under(target)) return link === 'cwd' ? `working directory ${target}` : `${link} ${target}`;
  }
  const fds = await readdir(join(base, 'fd')).catch(() => [] as string[]);
  for (const fd of fds) {
    const target = (await readlink(join(base, 'fd', fd)).catch(() => '')).replace(/ \(deleted\)$/, '');
    if (target && under(target)) return `open file ${target}`;
  }
  const maps = await readFile(join(base, 'maps'), 'utf8').catch(() => '');
  const mapped = maps.split('\n').filter((l) => l.includes('/')).map((l) => l.slice(l.indexOf('/'))).find(under);
  return mapped ? `mapped file ${mapped}` : undefined;
}

/** drctl processes on this host holding a repository lock in the repository at mountpoint. */
export async function lockHolders(mountpoint: string): Promise<VolumeUser[]> {
  const dir = join(mountpoint, 'locks');
  const host = hostname();
  const out: VolumeUser[] = [];
  for (const f of await readdir(dir).catch(() => [] as string[])) {
    if (!f.endsWith('.json')) continue;
    try {
      const rec = JSON.parse(await readFile(join(dir, f), 'utf8')) as { host?: string; pid?: number; command?: string };
      if (rec.host !== host || !rec.pid || rec.pid === process.pid || !pidAlive(rec.pid)) continue;
      out.push({ pid: rec.pid, command: await commandOf(rec.pid), how: `repository lock (${rec.command ?? 'drctl'})` });
    } catch {
      // a lock being written or removed right now
    }
  }
  return out;
}

/** Every user, each pid once (a restore holds a lock and has packs open). */
export async function volumeUsers(mountpoint: string): Promise<VolumeUser[]> {
  const byPid = new Map<number, VolumeUser>();
  for (const u of [...(await lockHolders(mountpoint)), ...(await processesUsing(mountpoint))]) if (!byPid.has(u.pid)) byPid.set(u.pid, u);
  return [...byPid.values()];
}

export function describeUsers(users: VolumeUser[]): string {
  const shown = users.slice(0, 5).map((u) => `pid ${u.pid} (${u.command}: ${u.how})`);
  return shown.join(', ') + (users.length > 5 ? ` and ${users.length - 5} more` : '');
}

async function commandOf(pid: number): Promise<string> {
  const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean);
  // `node /usr/lib/drctl/cli/main.js restore …` reads better as `drctl restore …`.
  const script = argv[1] ?? '';
  const [program = '', ...rest] = /node$/.test(argv[0] ?? '') && /cli\/main\.js$/.test(script) ? ['drctl', ...argv.slice(2)] : argv;
  const text = [program.slice(program.lastIndexOf('/') + 1), ...rest].join(' ').trim();
  return text.length > 60 ? `${text.slice(0, 57)}…` : text || `pid ${pid}`;
}

/**
 * Copies of the mount at mountpoint in other mount namespaces that unmounting it here leaves
 * alive. A process that creates a mount namespace (a container, a service with a private
 * /tmp, libvirt's QEMU) copies every mount there is; unless the copy is a propagation slave of
 * ours, our umount only drops our reference: the filesystem stays mounted, unflushed, and
 * stopping the storage under it loses what it had not written yet. releaseCopies() unmounts
 * them there, as propagation would have.
 */
export async function mountCopiesElsewhere(mountpoint: string): Promise<VolumeUser[]> {
  const own = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8')).filter((m) => m.mountpoint === mountpoint).at(-1);
  if (!own) return [];
  const seen = new Set([await readlink('/proc/self/ns/mnt').catch(() => '')]);
  const out: VolumeUser[] = [];
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const ns = await readlink(`/proc/${pid}/ns/mnt`).catch(() => '');
    if (!ns || seen.has(ns)) continue;
    seen.add(ns);
    const theirs = parseMountInfo(await readFile(`/proc/${pid}/mountinfo`, 'utf8').catch(() => ''));
    // Same filesystem (device number); a slave or peer of our mount goes away with it.
    const copy = theirs.find((m) => m.devId === own.devId && !(own.peer && (m.tags.includes(`master:${own.peer}`) || m.tags.includes(`shared:${own.peer}`))));
    if (copy) out.push({ pid, command: await commandOf(pid), how: `a copy of the mount in its mount namespace, on ${copy.mountpoint}`, copyAt: copy.mountpoint });
  }
  return out;
}

interface MountInfoLine {
  devId: string;
  mountpoint: string;
  tags: string[];
  /** Our peer group, when the mount is shared. */
  peer?: string;
}

function parseMountInfo(text: string): MountInfoLine[] {
  const out: MountInfoLine[] = [];
  for (const line of text.split('\n')) {
    const [left] = line.split(' - ');
    const f = (left ?? '').split(' ');
    if (f.length < 6) continue;
    const tags = f.slice(6);
    const peer = tags.find((x) => x.startsWith('shared:'))?.slice('shared:'.length);
    out.push({ devId: f[2] as string, mountpoint: (f[4] as string).replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))), tags, ...(peer ? { peer } : {}) });
  }
  return out;
}

/**
 * Unmount copies of our mount in other mount namespaces (nsenter). A plain umount fails when a
 * process there uses the filesystem; `lazy` (--force) detaches it anyway. Returns the copies
 * that are still there.
 */
export async function releaseCopies(copies: VolumeUser[], opts: { lazy: boolean }): Promise<VolumeUser[]> {
  const left: VolumeUser[] = [];
  for (const c of copies) {
    if (!c.copyAt) continue;
    const r = await execFile('nsenter', ['-t', String(c.pid), '-m', 'umount', ...(opts.lazy ? ['-l'] : []), c.copyAt]).catch(() => undefined);
    if (r?.code !== 0) left.push(c);
  }
  return left;
}
