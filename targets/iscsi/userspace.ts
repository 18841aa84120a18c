/**
 * The userspace strategy, for machines without the iSCSI kernel modules (containers, this test
 * sandbox): qemu-storage-daemon opens the LUN with libiscsi and exports it through FUSE onto a
 * regular file; a loop device over that file is the block device.
 *
 * - The CHAP secret reaches QEMU as a `secret` object read from a 0600 file, never on argv;
 *   the copy is removed as soon as the daemon is up (libiscsi keeps it for reconnects), and
 *   by every later attach or detach if a killed drctl left it behind.
 * - The loop device must be buffered (`--direct-io=off`): O_DIRECT on a FUSE file fails or
 *   crawls, depending on the kernel.
 * - The daemon runs detached (`--daemonize`), so the volume outlives the drctl process that
 *   attached it; attach.json (volume.ts) records its pid.
 * - Cleanup goes by evidence, not only by what attach.json says (a drctl killed half way
 *   never wrote it all): loop devices backed by the export file, a FUSE mount on it, the
 *   daemon named in the pid file (only when it really is our daemon for that export file).
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { makeDirs } from '../../engine/runtime/fs.js';
import { join } from 'node:path';
import { execFile } from '../../engine/runtime/exec.js';
import { IscsiAttachError, IscsiAuthError } from './errors.js';
import { mountTable, oneLine, pidRuns, probePortal } from './system.js';
import { DEFAULT_INITIATOR, parsePortal, type BlockAttachment, type IscsiTargetConfig } from './types.js';

export const QSD = 'qemu-storage-daemon';

/** qemu-storage-daemon's argv. `secretPath` is a file holding exactly the secret. */
export function qsdArgs(t: IscsiTargetConfig, exportFile: string, pidFile: string, secretPath?: string): string[] {
  const { host, port } = parsePortal(t.portal);
  const portal = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const blockdev = [
    'driver=iscsi', 'node-name=lun', 'transport=tcp', `portal=${portal}`, `target=${t.iqn}`, `lun=${t.lun}`,
    `initiator-name=${t.initiatorName ?? DEFAULT_INITIATOR}`,
    ...(t.chap && secretPath ? [`user=${t.chap.user}`, 'password-secret=chap'] : []),
  ].join(',');
  return [
    '--daemonize', '--pidfile', pidFile,
    ...(t.chap && secretPath ? ['--object', `secret,id=chap,file=${secretPath}`] : []),
    '--blockdev', blockdev,
    '--export', `type=fuse,id=lunexport,node-name=lun,mountpoint=${exportFile},writable=on`,
  ];
}

/** Where the userspace strategy keeps its files in a target's state folder (recorded before attaching). */
export function userspacePaths(runDir: string): { exportFile: string; pidFile: string; secretFile: string } {
  return { exportFile: join(runDir, 'lun.raw'), pidFile: join(runDir, 'qsd.pid'), secretFile: join(runDir, 'chap.secret') };
}

export async function attachUserspace(t: IscsiTargetConfig, runDir: string, secret: string | undefined): Promise<BlockAttachment> {
  const unreachable = await probePortal(t.portal, 5000);
  if (unreachable) {
    throw new IscsiAttachError(`target ${t.name}: portal ${t.portal} is unreachable (${unreachable})`, `check that the storage is up and that ${t.portal} is reachable from this machine`);
  }
  await makeDirs(runDir, 0o700);
  const { exportFile, pidFile, secretFile } = userspacePaths(runDir);
  if ((await mountTable()).has(exportFile)) {
    throw new IscsiAttachError(`target ${t.name}: ${exportFile} is still mounted from an earlier attach that could not be cleaned up`, `run \`fusermount3 -u -z ${exportFile}\`, then attach again`);
  }
  await writeFile(exportFile, '');
  await rm(pidFile, { force: true });
  if (secret !== undefined) await writeFile(secretFile, secret, { mode: 0o600 });
  let r;
  try {
    r = await execFile(QSD, qsdArgs(t, exportFile, pidFile, secret !== undefined ? secretFile : undefined));
  } catch (e) {
    throw new IscsiAttachError(`target ${t.name}: cannot run ${QSD} - ${(e as Error).message}`,
      'install qemu-system-common and qemu-block-extra (scripts/setup.sh), or use attach: kernel', { cause: e });
  } finally {
    await rm(secretFile, { force: true });
  }
  if (r.code !== 0) throw qsdError(t, r.stderr);
  const qsdPid = Number((await readFile(pidFile, 'utf8')).trim());
  const loop = await execFile('losetup', ['--find', '--show', '--direct-io=off', exportFile]);
  if (loop.code !== 0) {
    await detachUserspace({ qsdPid, exportFile, pidFile });
    throw new IscsiAttachError(`target ${t.name}: no loop device for the LUN export - ${oneLine(loop.stderr)}`, 'free a loop device (losetup -a lists them)');
  }
  return { strategy: 'userspace', device: loop.stdout.trim(), qsdPid, exportFile };
}

export interface UserspaceEvidence {
  exportFile?: string;
  qsdPid?: number;
  pidFile?: string;
  secretFile?: string;
}

/**
 * Undo an attachment, whole or half done: every loop device backed by the export file, the
 * daemon serving it, the FUSE mount, the secret copy. Idempotent. The caller has unmounted
 * the filesystem.
 */
export async function detachUserspace(a: UserspaceEvidence): Promise<void> {
  if (a.secretFile) await rm(a.secretFile, { force: true });
  if (!a.exportFile) return;
  for (const device of await loopsBackedBy(a.exportFile)) await execFile('losetup', ['--detach', device]);
  const pids = new Set([a.qsdPid, await readPid(a.pidFile)].filter((p): p is number => !!p));
  for (const pid of pids) if (await servesExport(pid, a.exportFile)) await stopQsd(pid);
  // A daemon that died (or was killed) leaves its FUSE mount behind, answering ENOTCONN.
  if ((await mountTable()).has(a.exportFile)) await execFile('fusermount3', ['-u', '-z', a.exportFile]).catch(() => undefined);
  if (a.pidFile) await rm(a.pidFile, { force: true });
  if (!(await mountTable()).has(a.exportFile)) await rm(a.exportFile, { force: true });
}

/** Loop devices whose backing file is exportFile. */
export async function loopsBackedBy(exportFile: string): Promise<string[]> {
  const r = await execFile('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE']);
  return r.stdout.split('\n').map((l) => l.trim().split(/\s+/)).filter(([, back]) => back === exportFile).map(([name]) => name as string);
}

async function readPid(pidFile: string | undefined): Promise<number | undefined> {
  if (!pidFile) return undefined;
  const n = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

/** A qemu-storage-daemon whose command line exports onto exportFile: ours to stop. */
async function servesExport(pid: number, exportFile: string): Promise<boolean> {
  if (!(await pidRuns(pid, QSD))) return false;
  const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmd.includes(`mountpoint=${exportFile},`);
}

async function stopQsd(pid: number): Promise<void> {
  killQuietly(pid, 'SIGTERM');
  for (let i = 0; i < 50 && (await pidRuns(pid, QSD)); i++) await new Promise((r) => setTimeout(r, 100));
  if (await pidRuns(pid, QSD)) killQuietly(pid, 'SIGKILL');
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** Kill the daemon at once: I/O blocked on the FUSE file then fails with EIO instead of hanging. */
export function killQsd(pid: number | undefined): void {
  if (pid) killQuietly(pid, 'SIGKILL');
}

/** libiscsi's login errors, as qemu-storage-daemon prints them, mapped to operator messages. */
function qsdError(t: IscsiTargetConfig, stderr: string): Error {
  const detail = oneLine(stderr.replace(/^.*?: --blockdev [^ ]+: /m, ''));
  if (/Authentication failure/i.test(stderr)) return new IscsiAuthError(t, 'the portal rejected the CHAP login');
  if (/Target not found/i.test(stderr)) {
    return new IscsiAttachError(`target ${t.name}: ${t.portal} has no target ${t.iqn}`, `check iqn: in ${t.file} (iscsi-ls iscsi://${t.portal} lists the targets)`);
  }
  // libiscsi reports a missing LUN as "Failed to connect to LUN : … LOGICAL_UNIT_NOT_SUPPORTED":
  // the portal answered and the login worked, so it must not fall through to "unreachable".
  if (/LOGICAL_UNIT_NOT_SUPPORTED/.test(stderr)) {
    return new IscsiAttachError(`target ${t.name}: LUN ${t.lun} does not exist on ${t.iqn} at ${t.portal} (the login worked; the target answered LOGICAL_UNIT_NOT_SUPPORTED)`,
      `check lun: in ${t.file} (\`iscsi-ls -s iscsi://${t.portal}\` lists each target's LUNs)`);
  }
  if (/Failed to connect to LUN/i.test(stderr)) {
    return new IscsiAttachError(`target ${t.name}: LUN ${t.lun} of ${t.iqn} at ${t.portal} could not be opened - ${detail}`, `check lun: in ${t.file} and the LUN's state on the storage`);
  }
  if (/connect|reconnect|refused|unreachable|timed out/i.test(stderr)) {
    return new IscsiAttachError(`target ${t.name}: portal ${t.portal} is unreachable - ${detail}`, `check that the storage is up and that ${t.portal} is reachable from this machine`);
  }
  return new IscsiAttachError(`target ${t.name}: attaching LUN ${t.lun} of ${t.iqn} at ${t.portal} failed - ${detail}`, `check portal, iqn and lun in ${t.file}`);
}
