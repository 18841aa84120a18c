/**
 * One libvirt pull-mode backup job: freeze the guest file systems through the agent, start
 * `backup-begin` with a new checkpoint (incremental from the previous one when given), thaw
 * at once (the point in time is fixed when backup-begin returns), then serve every disk as an
 * NBD export on a Unix socket on the host, which drctl reads through SSH streamlocal
 * forwarding. `finish()` ends the job; the new checkpoint stays for the next incremental.
 *
 * A job outlives nothing that started it. Before the freeze drctl starts a *lease* on the
 * host: a shell loop in its own SSH session that writes a byte a second to drctl. When drctl
 * is gone (kill -9, a second Ctrl-C, the connection lost) sshd closes that pipe, the write
 * fails, and the lease thaws the guest, aborts this job (only if it is still this job) and
 * removes its files. The lease's command line names the job's tag, which is how another run
 * tells a live job of drctl from an orphan (see `clearStaleJob`).
 *
 * Disks that cannot carry a checkpoint (anything not qcow2: libvirt keeps dirty bitmaps only
 * in qcow2 images) are left out of it and read in full every time, with the reason.
 */
import { randomBytes } from 'node:crypto';
import { DrError, ExitCode } from '../../errors.js';
import { shq, RemoteCommandError } from '../../ssh/index.js';
import type { DiskSource, Extent } from '../types.js';
import type { LibvirtHost } from './libvirt-host.js';
import { parseDomain, type DomainDisk, type DomainInfo } from './domain-xml.js';
import { NbdClient } from './nbd-client.js';

export class QuiesceError extends DrError {
  readonly code = 'QUIESCE_FAILED';
  readonly exitCode = ExitCode.failed;
}

/** Another job runs on the VM (a drctl backup in progress, a migration, a foreign backup). */
export class VmBusyError extends DrError {
  readonly code = 'VM_BUSY';
  readonly exitCode = ExitCode.failed;
}

export interface BackupJobOptions {
  /** Checkpoint of the previous point: export the dirty bitmap since it. */
  incrementalFrom?: string;
  quiesce: 'required' | 'preferred';
  /** Folder on the host for the NBD socket; QEMU (user libvirt-qemu) must be able to create files there. */
  workDir?: string;
  /** Written into the new checkpoint's description: whose chain it is (the repository id). */
  owner?: string;
  /** Interrupts `backup-begin` (the guest is thawed before the error is thrown). */
  signal?: AbortSignal;
  /** What was cleaned up on the host (an orphaned job of a drctl run that died). */
  log?: (line: string) => void;
  /** Called while the guest is frozen (tests observe the freeze here). */
  onFrozen?: () => Promise<void>;
}

export interface BackupJob {
  vm: string;
  uuid: string;
  /** Inactive domain XML, stored on the point. */
  xml: string;
  domain: DomainInfo;
  /** The checkpoint this job created; undefined when no disk can have one (all raw). */
  checkpoint?: string;
  /** Disks read in full whatever the chain says, and why (not qcow2: no checkpoint). */
  fullReadDisks: Map<string, string>;
  quiesced: boolean;
  warnings: string[];
  diskSizes: Map<string, number>;
  /** The disk as a DiskSource; `changed` = dirty-bitmap extents when incremental. */
  openDisk(dev: string): Promise<{ source: DiskSource; changed?: Extent[] }>;
  /** End the job. `keepCheckpoint: false` after a failure: the next run starts from the older one. */
  finish(keepCheckpoint: boolean): Promise<void>;
}

const DEFAULT_WORK_DIR = '/var/lib/libvirt/qemu';
/** backup-begin returns in well under a second once no other job holds the VM (checked first). */
const BEGIN_TIMEOUT_MS = 30_000;
const FREEZE_TIMEOUT_MS = 60_000;
/** Last resort of the lease: thaw a guest frozen this long even while drctl still answers. */
const LEASE_MAX_FROZEN_S = 150;

export async function beginBackupJob(host: LibvirtHost, vm: string, opts: BackupJobOptions): Promise<BackupJob> {
  const xml = await host.domainXml(vm, true);
  const live = parseDomain(await host.domainXml(vm, false));
  const state = await host.state(vm);
  // A paused VM can be backed up (libvirt allows it), but its agent cannot freeze anything.
  if (state !== 'running' && state !== 'paused') {
    throw new VmStateError(`${host.label}: VM ${vm} is ${state} - a pull-mode backup needs a running (or paused) VM`,
      state === 'pmsuspended' ? `wake it with \`virsh dompmwakeup ${vm}\` on the host` : 'start the VM, or back up its disk images with an `image:` source');
  }
  const workDir = opts.workDir ?? DEFAULT_WORK_DIR;
  await clearStaleJob(host, vm, workDir, opts.log);
  const disks = live.disks;
  const diskSizes = new Map<string, number>();
  for (const d of disks) diskSizes.set(d.dev, await host.diskSize(vm, d.dev));
  const fullReadDisks = new Map(disks.filter((d) => !canCheckpoint(d)).map((d) => [d.dev, `disk ${d.dev} is ${d.format}: no checkpoint (incrementals need qcow2), read in full`]));
  const spec = jobXml(disks, workDir, opts);
  const lease = await startLease(host, vm, spec.tag, workDir);
  const warnings: string[] = [];
  let quiesced = false;
  try {
    await host.sh(`printf '%s' ${shq(spec.backupXml)} > ${shq(`${lease.dir}/backup.xml`)} && printf '%s' ${shq(spec.checkpointXml ?? '')} > ${shq(`${lease.dir}/checkpoint.xml`)}`, 'writing the backup XML');
    const frozen = state === 'running' ? await freeze(host, vm, live, lease, opts.quiesce, warnings)
      : await notFrozen(host, vm, opts.quiesce, 'the VM is paused', `resume it with \`virsh resume ${vm}\` on the host, or set quiesce: preferred`, warnings);
    try {
      if (frozen) await opts.onFrozen?.();
      await begin(host, vm, lease.dir, !!spec.checkpointXml, opts.signal);
      quiesced = frozen;
    } finally {
      if (frozen) await thaw(host, vm, lease);
    }
  } catch (e) {
    // Nothing to hand on: the lease ends a job that started after all (a begin that timed out)
    // and removes the files; its checkpoint, if any, goes with the next successful backup.
    await lease.end(true);
    throw e;
  }
  const clients: NbdClient[] = [];
  return {
    vm, uuid: live.uuid, xml, domain: live, ...(spec.checkpoint ? { checkpoint: spec.checkpoint } : {}), fullReadDisks, quiesced, warnings, diskSizes,
    async openDisk(dev) {
      const stream = await host.transport.openUnixSocket(spec.socket);
      const incremental = !!opts.incrementalFrom && !fullReadDisks.has(dev);
      const metas = ['base:allocation', ...(incremental ? [`qemu:dirty-bitmap:backup-${dev}`] : [])];
      const nbd = await NbdClient.connect(stream, dev, metas);
      clients.push(nbd);
      // Bit 1 of base:allocation = reads as zeros: never read, never sent.
      const data = await nbd.extents('base:allocation', (f) => (f & 2) === 0);
      const changed = incremental ? await nbd.extents(`qemu:dirty-bitmap:backup-${dev}`, (f) => (f & 1) === 1) : undefined;
      const format = disks.find((d) => d.dev === dev)?.format ?? 'raw';
      return { source: nbdDiskSource(dev, format, nbd, data), ...(changed ? { changed } : {}) };
    },
    async finish(keepCheckpoint) {
      for (const c of clients) await c.close().catch(() => undefined);
      await abortJobIfOurs(host, vm, spec.tag);
      if (!keepCheckpoint && spec.checkpoint) await host.virsh(['checkpoint-delete', vm, spec.checkpoint]).catch(() => undefined);
      await lease.end(true); // the socket and scratch files too (libvirt leaves them when it fails)
    },
  };
}

/** libvirt keeps checkpoints (persistent dirty bitmaps) only in qcow2 images. */
function canCheckpoint(d: DomainDisk): boolean {
  return d.format === 'qcow2';
}

interface JobSpec {
  tag: string;
  checkpoint?: string;
  socket: string;
  backupXml: string;
  /** Absent when no disk can have a checkpoint. */
  checkpointXml?: string;
}

/**
 * A pull-mode backup job of `disks` (NBD export `dev`, dirty bitmap `backup-dev`, scratch files
 * and socket in `workDir`) and the checkpoint it creates, named for this run. Disks that cannot
 * have a checkpoint are exported whole (`backupmode='full'` even in an incremental job).
 */
function jobXml(disks: DomainDisk[], workDir: string, opts: BackupJobOptions): JobSpec {
  const tag = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  const checkpoint = `drctl-${tag}`;
  const socket = `${workDir}/drctl-${tag}.sock`;
  const withCp = disks.filter(canCheckpoint);
  const incremental = opts.incrementalFrom && withCp.length ? opts.incrementalFrom : undefined;
  const backupXml = `<domainbackup mode='pull'>${incremental ? `<incremental>${incremental}</incremental>` : ''}`
    + `<server transport='unix' socket='${socket}'/><disks>`
    + disks.map((d) => `<disk name='${d.dev}' backup='yes' type='file' exportname='${d.dev}'`
      + (canCheckpoint(d) ? ` exportbitmap='backup-${d.dev}'` : incremental ? ` backupmode='full'` : '')
      + `><scratch file='${workDir}/drctl-${tag}-${d.dev}.scratch'/></disk>`).join('')
    + '</disks></domainbackup>';
  if (!withCp.length) return { tag, socket, backupXml };
  const description = opts.owner ? `<description>drctl ${escapeXml(opts.owner)}</description>` : '';
  const checkpointXml = `<domaincheckpoint><name>${checkpoint}</name>${description}<disks>`
    + disks.map((d) => `<disk name='${d.dev}' checkpoint='${canCheckpoint(d) ? 'bitmap' : 'no'}'/>`).join('') + '</disks></domaincheckpoint>';
  return { tag, checkpoint, socket, backupXml, checkpointXml };
}

async function begin(host: LibvirtHost, vm: string, dir: string, withCheckpoint: boolean, signal?: AbortSignal): Promise<void> {
  try {
    await host.virsh(['backup-begin', vm, `${dir}/backup.xml`, ...(withCheckpoint ? [`${dir}/checkpoint.xml`] : [])], { timeoutMs: BEGIN_TIMEOUT_MS, ...(signal ? { signal } : {}) });
  } catch (e) {
    if (!(e instanceof RemoteCommandError) || !/state change lock|job|already/i.test(e.message)) throw e;
    throw new VmBusyError(e.message, busyHint(vm), { cause: e });
  }
}

function busyHint(vm: string): string {
  return `another job runs on VM ${vm} (\`virsh domjobinfo ${vm}\` on the host); if it is a backup nobody reads any more, end it with \`virsh domjobabort ${vm}\``;
}

/**
 * Before anything is frozen: a job already running on the VM makes backup-begin wait 30 s for
 * libvirt's state lock and then fail. A drctl backup job whose lease is gone (its drctl died)
 * is ended here and its files removed; a live drctl job or a job of anyone else fails at once.
 */
async function clearStaleJob(host: LibvirtHost, vm: string, workDir: string, log?: (line: string) => void): Promise<void> {
  const job = await host.activeJob(vm);
  if (!job) return;
  const socket = job.operation === 'Backup' ? await host.backupJobSocket(vm) : undefined;
  const tag = socket ? /\/drctl-([a-z0-9]+)\.sock$/.exec(socket)?.[1] : undefined;
  if (!tag) {
    throw new VmBusyError(`${host.label}: VM ${vm} has a ${job.operation ?? job.type} job running that drctl did not start - cannot start a backup`, busyHint(vm));
  }
  if (await leaseAlive(host, tag)) {
    throw new VmBusyError(`${host.label}: VM ${vm} is being backed up by another drctl run (job drctl-${tag})`, 'wait for that backup to finish, then run this one again');
  }
  await abortJobIfOurs(host, vm, tag);
  await removeJobFiles(host, tag, socket ? socket.slice(0, socket.lastIndexOf('/')) : workDir);
  log?.(`${host.label}: VM ${vm}: ended the backup job drctl-${tag} of a drctl run that is gone (domjobabort) and removed its socket and scratch files`);
}

/** domjobabort, only while the running backup job is still the one of `tag`. */
async function abortJobIfOurs(host: LibvirtHost, vm: string, tag: string): Promise<void> {
  const socket = await host.backupJobSocket(vm).catch(() => undefined);
  if (socket?.endsWith(`/drctl-${tag}.sock`)) await host.virsh(['domjobabort', vm]).catch(() => undefined);
}

async function removeJobFiles(host: LibvirtHost, tag: string, workDir: string): Promise<void> {
  await host.transport.exec(`rm -rf ${shq(`${workDir}/drctl-${tag}.sock`)} ${shq(workDir)}/drctl-${tag}-*.scratch ${shq(leaseDir(tag))}`).catch(() => undefined);
}

interface Lease {
  dir: string;
  /** Stop the lease (thaws if still frozen); `cleanUp`: also end this job if it runs and remove its files. */
  end(cleanUp?: boolean): Promise<void>;
}

const leaseDir = (tag: string): string => `/tmp/drctl-job.${tag}`;

/**
 * The dead man's switch described at the top. `$dir/lease` exists while drctl holds the job;
 * `$dir/frozen` while the guest may be frozen. The marker `drctl-lease:TAG` in its command
 * line is what `leaseAlive` looks for.
 */
async function startLease(host: LibvirtHost, vm: string, tag: string, workDir: string): Promise<Lease> {
  const dir = leaseDir(tag);
  await host.sh(`mkdir -m 700 ${shq(dir)} && : > ${shq(`${dir}/lease`)}`, 'creating the job folder');
  const virsh = `virsh -q -c ${shq(host.uri)}`;
  const cleanup = `{ [ -e "$d/frozen" ] && ${virsh} domfsthaw ${shq(vm)}; `
    + `${virsh} backup-dumpxml ${shq(vm)} 2>/dev/null | grep -qF ${shq(`/drctl-${tag}.sock`)} && ${virsh} domjobabort ${shq(vm)}; `
    + `rm -rf ${shq(`${workDir}/drctl-${tag}.sock`)} ${shq(workDir)}/drctl-${tag}-*.scratch "$d"; } >/dev/null 2>&1`;
  const script = `: drctl-lease:${tag}; trap '' PIPE HUP; d=${shq(dir)}; n=0; : > "$d/running"; `
    + `while [ -e "$d/lease" ]; do `
    + `if ! printf . 2>/dev/null; then rm -f "$d/lease"; ${cleanup}; exit 0; fi; `
    + `if [ -e "$d/frozen" ]; then n=$((n+1)); if [ $n -ge ${LEASE_MAX_FROZEN_S} ]; then ${virsh} domfsthaw ${shq(vm)} >/dev/null 2>&1; rm -f "$d/frozen"; fi; else n=0; fi; `
    + `sleep 1; done; [ -e "$d/frozen" ] && ${virsh} domfsthaw ${shq(vm)} >/dev/null 2>&1; `
    + `[ -e "$d/abort" ] && ${cleanup}; rm -rf "$d"; exit 0`;
  // Aborted in end() at the latest, so no channel (and no timer of it) outlives the job.
  const stop = new AbortController();
  const done = host.transport.exec(script, { timeoutMs: 7 * 24 * 3600_000, signal: stop.signal }).then(() => undefined, () => undefined);
  return {
    dir,
    async end(cleanUp) {
      const flag = cleanUp ? `: > ${shq(`${dir}/abort`)}; ` : '';
      await host.transport.exec(`${flag}rm -f ${shq(`${dir}/lease`)}`).catch(() => undefined);
      // The loop notices within a second; a lease that cannot answer (connection lost) ran its own cleanup.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([done, new Promise((r) => (timer = setTimeout(r, 10_000)))]);
      clearTimeout(timer);
      stop.abort();
      await host.transport.exec(`rm -rf ${shq(dir)}`).catch(() => undefined);
    },
  };
}

async function leaseAlive(host: LibvirtHost, tag: string): Promise<boolean> {
  // The bracket keeps grep from matching its own command line.
  const r = await host.transport.exec(`[ -e ${shq(`${leaseDir(tag)}/lease`)} ] && grep -qs 'drctl-lease[:]${tag}' /proc/[0-9]*/cmdline`);
  return r.code === 0;
}

class VmStateError extends DrError {
  readonly code = 'VM_STATE';
  readonly exitCode = ExitCode.failed;
}

async function freeze(host: LibvirtHost, vm: string, dom: DomainInfo, lease: Lease, mode: 'required' | 'preferred', warnings: string[]): Promise<boolean> {
  const why = !dom.hasAgentChannel ? 'the VM has no guest-agent channel'
    : !(await host.agentResponsive(vm)) ? 'the guest agent does not answer' : undefined;
  if (why) return notFrozen(host, vm, mode, why, 'install and start qemu-guest-agent in the guest (and add the org.qemu.guest_agent.0 channel), or set quiesce: preferred', warnings);
  try {
    // The lease must be running (it thaws if drctl dies) before anything is frozen.
    await host.sh(`i=0; while [ ! -e ${shq(`${lease.dir}/running`)} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; [ -e ${shq(`${lease.dir}/running`)} ] && : > ${shq(`${lease.dir}/frozen`)}`, 'starting the thaw guard');
    await host.virsh(['domfsfreeze', vm], { timeoutMs: FREEZE_TIMEOUT_MS });
    return true;
  } catch (e) {
    await thaw(host, vm, lease);
    if (mode === 'required') throw new QuiesceError(`${host.label}: cannot quiesce VM ${vm} - ${(e as Error).message}`, 'check qemu-guest-agent in the guest, or set quiesce: preferred to accept crash-consistent points');
    warnings.push(`not quiesced (fsfreeze failed: ${(e as Error).message}): crash-consistent point`);
    return false;
  }
}

async function notFrozen(host: LibvirtHost, vm: string, mode: 'required' | 'preferred', why: string, hint: string, warnings: string[]): Promise<false> {
  if (mode === 'required') throw new QuiesceError(`${host.label}: cannot quiesce VM ${vm} - ${why}`, hint);
  warnings.push(`not quiesced (${why}): crash-consistent point`);
  return false;
}

async function thaw(host: LibvirtHost, vm: string, lease: Lease): Promise<void> {
  // Thaw is retried: a guest left frozen blocks every write in it. If all fail, the lease thaws.
  for (let i = 0; i < 3; i++) {
    try {
      await host.virsh(['domfsthaw', vm], { timeoutMs: 30_000 });
      await host.transport.exec(`rm -f ${shq(`${lease.dir}/frozen`)}`);
      return;
    } catch {
      // the next attempt; the agent may be busy
    }
  }
}

function nbdDiskSource(dev: string, format: string, nbd: NbdClient, data: Extent[]): DiskSource {
  return {
    name: dev, sizeBytes: nbd.sizeBytes, format, warnings: [],
    dataExtents: async () => data,
    read: (offset, length, into, at) => nbd.read(offset, length, into, at),
    close: () => nbd.close(),
  };
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
