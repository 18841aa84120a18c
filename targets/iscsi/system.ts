/**
 * Small wrappers around the system tools both attach strategies share: mount table, blkid,
 * fsck, mount/umount, loop devices, process checks. Every failure names the target.
 */
import { readFile } from 'node:fs/promises';
import { makeDirs } from '../../engine/runtime/fs.js';
import { connect } from 'node:net';
import { execFile, type ExecResult } from '../../engine/runtime/exec.js';
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

/** Mount points (decoded) → source device, from /proc/self/mountinfo. */
export async function mountTable(): Promise<Map<string, string>> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const mp = left.split(' ')[4];
    const src = right.split(' ')[1];
    if (mp && src) out.set(decode(mp), decode(src));
  }
  return out;
}

function decode(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The filesystem type blkid finds on a device ('' when none), or 'partition table'. */
export async function probeDevice(device: string): Promise<string> {
  const r = await execFile('blkid', ['-p', '-o', 'export', device]);
  if (r.code === 2) return '';
  const fields = Object.fromEntries(r.stdout.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  if (fields.TYPE) return fields.TYPE;
  if (fields.PTTYPE) return `partition table (${fields.PTTYPE})`;
  return r.code === 0 ? 'unknown signature' : '';
}

/** Check the filesystem (replaying the journal after a crash), then mount it. */
export async function checkAndMount(t: IscsiTargetConfig, device: string): Promise<void> {
  const found = await probeDevice(device);
  if (!found) {
    throw new IscsiAttachError(`target ${t.name}: LUN ${t.lun} of ${t.iqn} at ${t.portal} holds no filesystem`,
      `format it once with \`drctl target format ${t.name} --format\``);
  }
  if (found !== t.filesystem) {
    throw new IscsiAttachError(`target ${t.name}: LUN ${t.lun} holds ${found}, but ${t.file} says filesystem: ${t.filesystem}`,
      `correct filesystem: in ${t.file}, or reformat with \`drctl target format ${t.name} --format --force\` (erases the LUN)`);
  }
  if (t.filesystem === 'ext4') {
    // -p repairs what is safe to repair without asking; 1 and 2 mean "errors corrected".
    const r = await execFile('fsck.ext4', ['-p', device]);
    if (r.code >= 4) {
      throw new IscsiAttachError(`target ${t.name}: the ext4 filesystem on LUN ${t.lun} has errors fsck cannot fix automatically - ${oneLine(r.stdout + r.stderr)}`,
        `run \`fsck.ext4 ${device}\` by hand while the target is attached block-only, then attach again`);
    }
  }
  // xfs replays its log at mount time; xfs_repair is only for a filesystem that will not mount.
  await makeDirs(t.mountpoint);
  await run(t, 'mount', ['-t', t.filesystem, device, t.mountpoint], `mounting ${device} on ${t.mountpoint}`);
}

/** Unmount if mounted; a lazy unmount when the device is gone or busy (after a crash). */
export async function unmount(t: IscsiTargetConfig): Promise<void> {
  if (!(await mountTable()).has(t.mountpoint)) return;
  const r = await execFile('umount', [t.mountpoint]);
  if (r.code === 0) return;
  await run(t, 'umount', ['-l', t.mountpoint], `unmounting ${t.mountpoint}`);
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
