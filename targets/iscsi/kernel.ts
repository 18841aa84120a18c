/**
 * The kernel strategy: open-iscsi (`iscsiadm` + iscsid + the iscsi_tcp module). The commands are
 * built by pure functions (unit-tested: the kernel initiator cannot run in the test sandbox) and
 * run in order: iface (initiator name) → discovery → node settings → login → wait for the
 * by-path device. The CHAP secret never goes on a command line (other users can read argv in
 * /proc): it is written into the node record file, which iscsiadm keeps mode 0600.
 */
import { access, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from '../../engine/runtime/exec.js';
import { IscsiAttachError, IscsiAuthError } from './errors.js';
import { oneLine } from './system.js';
import { parsePortal, type BlockAttachment, type IscsiTargetConfig } from './types.js';

export type Argv = [cmd: string, ...args: string[]];

/** The iface drctl creates when an initiatorName is configured. */
export const IFACE = 'drctl';

function portalArg(t: IscsiTargetConfig): string {
  const { host, port } = parsePortal(t.portal);
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

function ifaceArgs(t: IscsiTargetConfig): string[] {
  return t.initiatorName ? ['-I', IFACE] : [];
}

export function ifaceCommands(t: IscsiTargetConfig): Argv[] {
  if (!t.initiatorName) return [];
  return [
    ['iscsiadm', '-m', 'iface', '-I', IFACE, '-o', 'new'],
    ['iscsiadm', '-m', 'iface', '-I', IFACE, '-o', 'update', '-n', 'iface.initiatorname', '-v', t.initiatorName],
  ];
}

export function discoveryCommand(t: IscsiTargetConfig): Argv {
  return ['iscsiadm', '-m', 'discovery', '-t', 'sendtargets', '-p', portalArg(t), ...ifaceArgs(t)];
}

function nodeArgs(t: IscsiTargetConfig): string[] {
  return ['-m', 'node', '-T', t.iqn, '-p', portalArg(t), ...ifaceArgs(t)];
}

/** Node settings: CHAP method and user (the secret goes into the record file), I/O timeout, manual start. */
export function nodeUpdateCommands(t: IscsiTargetConfig): Argv[] {
  const set = (name: string, value: string): Argv => ['iscsiadm', ...nodeArgs(t), '-o', 'update', '-n', name, '-v', value];
  return [
    set('node.startup', 'manual'),
    // After this many seconds without the portal, the kernel fails queued I/O (the job fails
    // instead of hanging in D state).
    set('node.session.timeo.replacement_timeout', String(t.ioTimeoutSeconds)),
    ...(t.chap ? [set('node.session.auth.authmethod', 'CHAP'), set('node.session.auth.username', t.chap.user)] : [set('node.session.auth.authmethod', 'None')]),
  ];
}

export function loginCommand(t: IscsiTargetConfig): Argv {
  return ['iscsiadm', ...nodeArgs(t), '--login'];
}

export function logoutCommand(t: IscsiTargetConfig): Argv {
  return ['iscsiadm', ...nodeArgs(t), '--logout'];
}

/** udev's stable name of the LUN's block device. */
export function byPathDevice(t: IscsiTargetConfig): string {
  const { host, port } = parsePortal(t.portal);
  return `/dev/disk/by-path/ip-${host}:${port}-iscsi-${t.iqn}-lun-${t.lun}`;
}

/** The node record text with node.session.auth.password set (replaced or added). */
export function withPassword(record: string, secret: string): string {
  const lines = record.split('\n').filter((l) => !/^node\.session\.auth\.password\s*=/.test(l));
  const end = lines.findIndex((l) => l.trim() === '# END RECORD');
  const line = `node.session.auth.password = ${secret}`;
  if (end >= 0) lines.splice(end, 0, line);
  else lines.splice(lines.length && lines.at(-1) === '' ? lines.length - 1 : lines.length, 0, line);
  return lines.join('\n');
}

/** Node records live in /etc/iscsi/nodes/IQN/HOST,PORT,TPGT/IFACE (or `default`). */
export async function nodeRecordFile(t: IscsiTargetConfig, root = '/etc/iscsi/nodes'): Promise<string> {
  const { host, port } = parsePortal(t.portal);
  const dir = join(root, t.iqn);
  const entries = await readdir(dir).catch(() => [] as string[]);
  const portalDir = entries.find((e) => e.startsWith(`${host},${port},`));
  if (!portalDir) throw new IscsiAttachError(`target ${t.name}: discovery at ${t.portal} did not list ${t.iqn}`, `check iqn: in ${t.file} against the storage's target names`);
  return join(dir, portalDir, t.initiatorName ? IFACE : 'default');
}

/** iscsiadm present, iscsid answering, the iscsi_tcp transport in the kernel. */
export async function kernelInitiatorWorks(): Promise<boolean> {
  if (!(await access('/sys/class/iscsi_transport/tcp').then(() => true, () => false))) return false;
  const r = await execFile('iscsiadm', ['-m', 'session']).catch(() => undefined);
  // 21: "no active sessions" — iscsid answered.
  return r !== undefined && (r.code === 0 || r.code === 21);
}

export async function attachKernel(t: IscsiTargetConfig, secret: string | undefined, waitMs = 30_000): Promise<BlockAttachment> {
  const device = byPathDevice(t);
  if (await exists(device)) return { strategy: 'kernel', device };
  for (const c of ifaceCommands(t)) await iscsiadm(t, c, true);
  await iscsiadm(t, discoveryCommand(t));
  for (const c of nodeUpdateCommands(t)) await iscsiadm(t, c);
  if (t.chap && secret !== undefined) {
    const rec = await nodeRecordFile(t);
    await writeFile(rec, withPassword(await readFile(rec, 'utf8'), secret), { mode: 0o600 });
  }
  await iscsiadm(t, loginCommand(t));
  for (let waited = 0; waited < waitMs; waited += 200) {
    if (await exists(device)) return { strategy: 'kernel', device };
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new IscsiAttachError(`target ${t.name}: logged in to ${t.iqn} at ${t.portal}, but ${device} did not appear within ${waitMs / 1000} s`,
    `check that LUN ${t.lun} exists on the target and that udev runs`);
}

export async function detachKernel(t: IscsiTargetConfig): Promise<void> {
  const [cmd, ...args] = logoutCommand(t);
  const r = await execFile(cmd, args);
  // 21: no matching session (already logged out) — detaching is idempotent.
  if (r.code !== 0 && r.code !== 21) throw new IscsiAttachError(`target ${t.name}: logout from ${t.iqn} at ${t.portal} failed - ${oneLine(r.stderr)}`, 'run `iscsiadm -m session` to see what is left');
}

async function iscsiadm(t: IscsiTargetConfig, argv: Argv, tolerate = false): Promise<void> {
  const [cmd, ...args] = argv;
  const r = await execFile(cmd, args);
  if (r.code === 0 || tolerate) return;
  // 24: iSCSI login failed due to authorization failure
  if (r.code === 24 || /authoriz|authenticat/i.test(r.stderr)) throw new IscsiAuthError(t, oneLine(r.stderr));
  throw new IscsiAttachError(`target ${t.name}: ${args.slice(0, 2).join(' ')} at ${t.portal} failed - ${oneLine(r.stderr)}`, `check portal: and iqn: in ${t.file}`);
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(() => true, () => false);
}
