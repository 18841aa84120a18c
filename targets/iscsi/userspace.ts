/**
 * The userspace strategy, for machines without the iSCSI kernel modules (containers, this test
 * sandbox): qemu-storage-daemon opens the LUN with libiscsi and exports it through FUSE onto a
 * regular file; a loop device over that file is the block device.
 *
 * - The CHAP secret reaches QEMU as a `secret` object read from a 0600 file, never on argv;
 *   the copy is removed as soon as the daemon is up (libiscsi keeps it for reconnects).
 * - The loop device must be buffered (`--direct-io=off`): O_DIRECT on a FUSE file fails or
 *   crawls, depending on the kernel.
 * - The daemon runs detached (`--daemonize`), so the volume outlives the drctl process that
 *   attached it; attach.json (volume.ts) records its pid.
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

export async function attachUserspace(t: IscsiTargetConfig, runDir: string, secret: string | undefined): Promise<BlockAttachment> {
  const unreachable = await probePortal(t.portal, 5000);
  if (unreachable) {
    throw new IscsiAttachError(`target ${t.name}: portal ${t.portal} is unreachable (${unreachable})`, `check that the storage is up and that ${t.portal} is reachable from this machine`);
  }
  await makeDirs(runDir, 0o700);
  const exportFile = join(runDir, 'lun.raw');
  const pidFile = join(runDir, 'qsd.pid');
  const secretPath = join(runDir, 'chap.secret');
  await writeFile(exportFile, '');
  if (secret !== undefined) await writeFile(secretPath, secret, { mode: 0o600 });
  let r;
  try {
    r = await execFile(QSD, qsdArgs(t, exportFile, pidFile, secret !== undefined ? secretPath : undefined));
  } catch (e) {
    throw new IscsiAttachError(`target ${t.name}: cannot run ${QSD} - ${(e as Error).message}`,
      'install qemu-system-common and qemu-block-extra (scripts/setup.sh), or use attach: kernel', { cause: e });
  } finally {
    await rm(secretPath, { force: true });
  }
  if (r.code !== 0) throw qsdError(t, r.stderr);
  const qsdPid = Number((await readFile(pidFile, 'utf8')).trim());
  const loop = await execFile('losetup', ['--find', '--show', '--direct-io=off', exportFile]);
  if (loop.code !== 0) {
    await stopQsd(qsdPid, exportFile);
    throw new IscsiAttachError(`target ${t.name}: no loop device for the LUN export - ${oneLine(loop.stderr)}`, 'free a loop device (losetup -a lists them)');
  }
  return { strategy: 'userspace', device: loop.stdout.trim(), qsdPid, exportFile };
}

/** Undo an attachment: loop device, FUSE export, daemon. Safe on a half-done or crashed one. */
export async function detachUserspace(a: BlockAttachment): Promise<void> {
  if (a.device && a.exportFile) {
    const back = await execFile('losetup', ['--noheadings', '--output', 'BACK-FILE', a.device]);
    if (back.code === 0 && back.stdout.trim() === a.exportFile) await execFile('losetup', ['--detach', a.device]);
  }
  await stopQsd(a.qsdPid, a.exportFile);
}

async function stopQsd(pid: number | undefined, exportFile: string | undefined): Promise<void> {
  if (exportFile && (await mountTable()).has(exportFile)) await execFile('fusermount3', ['-u', '-z', exportFile]).catch(() => undefined);
  if (!pid || !(await pidRuns(pid, QSD))) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 50 && (await pidRuns(pid, QSD)); i++) await new Promise((r) => setTimeout(r, 100));
  if (await pidRuns(pid, QSD)) process.kill(pid, 'SIGKILL');
}

/** Kill the daemon at once: I/O blocked on the FUSE file then fails with EIO instead of hanging. */
export function killQsd(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** libiscsi's login errors, as qemu-storage-daemon prints them, mapped to operator messages. */
function qsdError(t: IscsiTargetConfig, stderr: string): Error {
  const detail = oneLine(stderr.replace(/^.*?: --blockdev [^ ]+: /m, ''));
  if (/Authentication failure/i.test(stderr)) return new IscsiAuthError(t, 'the portal rejected the CHAP login');
  if (/Target not found/i.test(stderr)) {
    return new IscsiAttachError(`target ${t.name}: ${t.portal} has no target ${t.iqn}`, `check iqn: in ${t.file} (iscsi-ls iscsi://${t.portal} lists the targets)`);
  }
  if (/connect|reconnect|refused|unreachable|timed out/i.test(stderr)) {
    return new IscsiAttachError(`target ${t.name}: portal ${t.portal} is unreachable - ${detail}`, `check that the storage is up and that ${t.portal} is reachable from this machine`);
  }
  return new IscsiAttachError(`target ${t.name}: attaching LUN ${t.lun} of ${t.iqn} at ${t.portal} failed - ${detail}`, `check portal, iqn and lun in ${t.file}`);
}
