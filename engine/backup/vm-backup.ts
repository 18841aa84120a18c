/**
 * VM-level backup of a libvirt domain: all its disks, quiesced through the guest agent, read
 * through a pull-mode backup job. Incremental when the chain holds: the previous point of this
 * name has a checkpoint that still exists on the host, the same VM (UUID) and the same disk
 * sizes; then only dirty-bitmap extents are read and the rest of each disk is taken from the
 * parent's chunk lists (a synthetic full). Any break → the whole disk is read, with the reason
 * on the point. A connection lost mid-way is retried (the job restarts from the old checkpoint).
 */
import type { BlobWriter, Repository, Point, DiskRecord } from '../repo/index.js';
import type { Placement } from '../repo/point.js';
import type { Clock } from '../runtime/clock.js';
import type { ProgressFn } from '../progress.js';
import { backupDisk } from './image-backup.js';
import { beginBackupJob, type BackupJob } from '../hosts/libvirt/backup-job.js';
import type { LibvirtHost } from '../hosts/libvirt/libvirt-host.js';
import { HostUnreachableError, RemoteCommandError } from '../ssh/index.js';
import { NbdError } from '../hosts/libvirt/nbd-client.js';
import { InterruptedError, isDrError } from '../errors.js';

export interface VmBackupOptions {
  /** Point name (the source name; defaults to the VM name). */
  name: string;
  vm: string;
  /** Host name from the config folder (recorded on the point). */
  hostName: string;
  quiesce?: 'required' | 'preferred';
  /** Which target the policy run wrote to (recorded on the point). */
  placement?: Placement;
  /** Guest paths asked for file-level: served VM-level on Linux guests (the fallback). */
  files?: string[];
  policy?: string;
  clock: Clock;
  hostname: string;
  signal?: AbortSignal;
  onProgress?: ProgressFn;
  /** Attempts when the connection drops mid-way (default 3). */
  attempts?: number;
  onFrozen?: () => Promise<void>;
  /** Log lines (retries). */
  log?: (line: string) => void;
  safetyFor?: string;
}

/** What every attempt of one job added up to: the point reports the whole job. */
interface JobTally {
  started: Date;
  wire0: number;
  newBytes: number;
  storedNewBytes: number;
}

export async function backupVm(repo: Repository, host: LibvirtHost, opts: VmBackupOptions): Promise<Point> {
  const attempts = opts.attempts ?? 3;
  await host.requireVm(opts.vm, opts.hostName);
  const tally: JobTally = { started: opts.clock.now(), wire0: host.transport.bytesIn, newBytes: 0, storedNewBytes: 0 };
  for (let i = 1; ; i++) {
    try {
      return await attempt(repo, host, opts, tally);
    } catch (e) {
      const retriable = e instanceof HostUnreachableError || e instanceof NbdError || (e instanceof Error && /connection|ECONNRESET|EPIPE|Not connected/i.test(e.message) && !isDrError(e));
      // A host command cut short by the interrupt fails as "unreachable": it was the interrupt.
      if (opts.signal?.aborted && (!isDrError(e) || e instanceof HostUnreachableError)) throw new InterruptedError();
      if (!retriable || i >= attempts || opts.signal?.aborted) throw wrap(host, opts.vm, e);
      opts.log?.(`${host.label}: VM ${opts.vm}: ${(e as Error).message} - retrying (attempt ${i + 1} of ${attempts})`);
      await new Promise((r) => setTimeout(r, 1000 * i));
    }
  }
}

function wrap(host: LibvirtHost, vm: string, e: unknown): unknown {
  if (isDrError(e)) return e;
  return new HostUnreachableError(host.label, `backup of VM ${vm} failed - ${(e as Error).message ?? String(e)}`, { cause: e });
}

async function attempt(repo: Repository, host: LibvirtHost, opts: VmBackupOptions, tally: JobTally): Promise<Point> {
  const started = opts.clock.now();
  const { points } = await repo.listPoints();
  const parent = [...points].reverse().find((p) => p.name === opts.name && p.kind === 'vm' && p.vm?.host === opts.hostName && p.vm.checkpoint);
  const fallback = opts.files?.length ? await fallbackReason(host, opts.vm, opts.files) : undefined;
  const chain = parent ? await chainProblem(host, opts.vm, parent) : 'no previous point of this VM';
  let job: BackupJob;
  try {
    job = await beginBackupJob(host, opts.vm, {
      quiesce: opts.quiesce ?? 'preferred', owner: ownerTag(repo), onFrozen: opts.onFrozen, signal: opts.signal, log: opts.log,
      ...(chain ? {} : { incrementalFrom: parent?.vm?.checkpoint }),
    });
  } catch (e) {
    if (chain || !(e instanceof RemoteCommandError) || !/bitmap|checkpoint/i.test(e.message)) throw e;
    // The checkpoint exists in libvirt's metadata but its bitmap is gone (host crash): full read.
    return attemptFull(repo, host, opts, tally, `incremental backup refused by the host (${e.message}): the whole disk was read`);
  }
  let ok = false;
  const writer = repo.newWriter();
  try {
    const { disks, readBytes, logical, fullReasons } = await backupJobDisks(repo, writer, job, parent, chain, opts);
    await writer.finish();
    const warnings = [...job.warnings];
    const point = await repo.commitPoint({
      formatVersion: 1,
      name: opts.name,
      ...(opts.policy ? { policy: opts.policy } : {}),
      kind: 'vm',
      time: started.toISOString(),
      hostname: opts.hostname,
      source: { type: 'vm', path: `${opts.hostName}/${opts.vm}` },
      ...(opts.placement ? { placement: opts.placement } : {}),
      ...(parent && !chain ? { parent: parent.id } : {}),
      disks,
      stats: {
        logicalBytes: logical, readBytes,
        newBytes: tally.newBytes + writer.stats.rawBytesNew, storedNewBytes: tally.storedNewBytes + writer.stats.storedBytesNew,
        durationMs: opts.clock.now().getTime() - tally.started.getTime(), wireBytes: host.transport.bytesIn - tally.wire0,
      },
      errors: [],
      changeTracking: fullReasons.length ? { mode: 'full-read', reason: fullReasons.join('; ') } : { mode: 'changed-extents' },
      ...(fallback ? { fallback: { reason: fallback } } : {}),
      ...(warnings.length ? { warnings } : {}),
      vm: { host: opts.hostName, name: opts.vm, uuid: job.uuid, xml: job.xml, ...(job.checkpoint ? { checkpoint: job.checkpoint } : {}), quiesced: job.quiesced },
      ...(opts.safetyFor ? { safetyFor: opts.safetyFor } : {}),
    });
    ok = true;
    await job.finish(true);
    // The parent's checkpoint is no longer needed (libvirt merges its bitmap into the new one).
    // Checkpoints of other point names of this VM are left alone: they are other chains.
    if (parent?.vm?.checkpoint && !chain) await host.virsh(['checkpoint-delete', opts.vm, parent.vm.checkpoint]).catch(() => undefined);
    await sweepCheckpoints(repo, host, opts, [...points, point]);
    return point;
  } finally {
    if (!ok) {
      // Packs this attempt uploaded are in the in-memory index, so a retry dedups against them:
      // write their index file too, or the retry's point would use blobs no index lists.
      await writer.finish().catch(() => writer.abandon());
      tally.newBytes += writer.stats.rawBytesNew;
      tally.storedNewBytes += writer.stats.storedBytesNew;
      await job.finish(false);
    }
  }
}

/** Written into drctl's checkpoints: the chain belongs to this repository. */
function ownerTag(repo: Repository): string {
  return `repository ${repo.config.id}`;
}

/**
 * After a successful backup: drctl checkpoints on the VM that no point of this repository
 * records (a run that died, a point forgotten) only cost write overhead and block `virsh
 * undefine`; delete them. Checkpoints another repository made (its id in the description)
 * are its chain and stay; ones without a description come from drctl before it wrote one.
 */
async function sweepCheckpoints(repo: Repository, host: LibvirtHost, opts: VmBackupOptions, points: Point[]): Promise<void> {
  const used = new Set(points.map((p) => p.vm?.checkpoint).filter((c): c is string => !!c));
  const mine = `drctl ${ownerTag(repo)}`;
  for (const c of await host.checkpoints(opts.vm).catch(() => [])) {
    if (!c.startsWith('drctl-') || used.has(c)) continue;
    const owner = await host.checkpointDescription(opts.vm, c).catch(() => undefined);
    if (owner !== mine && owner !== '') continue;
    try {
      await host.virsh(['checkpoint-delete', opts.vm, c]);
      opts.log?.(`${host.label}: VM ${opts.vm}: deleted checkpoint ${c}, which no point uses (left by a run that did not finish)`);
    } catch {
      // the next successful backup tries again
    }
  }
}

/**
 * Every disk of the job into `writer`: from its changed extents when the previous point can be
 * the base, else whole (the reasons are returned per disk).
 */
async function backupJobDisks(repo: Repository, writer: BlobWriter, job: BackupJob, parent: Point | undefined, chain: string | undefined, opts: VmBackupOptions):
  Promise<{ disks: DiskRecord[]; readBytes: number; logical: number; fullReasons: string[] }> {
  const out = { disks: [] as DiskRecord[], readBytes: 0, logical: 0, fullReasons: [] as string[] };
  for (const d of job.domain.disks) {
    if (opts.signal?.aborted) throw new InterruptedError();
    const size = job.diskSizes.get(d.dev) ?? 0;
    const parentDisk = parent?.disks?.find((x) => x.name === d.dev);
    let diskReason = job.fullReadDisks.get(d.dev) ?? chain;
    if (!diskReason && parentDisk && parentDisk.sizeBytes !== size) diskReason = `disk ${d.dev} was resized from ${parentDisk.sizeBytes} to ${size} bytes`;
    if (!diskReason && !parentDisk) diskReason = `disk ${d.dev} is new since the previous point`;
    const { source, changed } = await job.openDisk(d.dev);
    try {
      const r = await backupDisk(repo, writer, source, {
        ...(diskReason ? {} : { changedExtents: changed, parentDisk }),
        signal: opts.signal,
        onProgress: opts.onProgress,
      });
      out.disks.push(r.disk);
      out.readBytes += r.readBytes;
      out.logical += source.sizeBytes;
      const why = diskReason ?? r.fullReadReason;
      if (why) out.fullReasons.push(`${d.dev}: ${why}`);
    } finally {
      await source.close();
    }
  }
  return out;
}

/** A run whose incremental was refused: forget drctl's checkpoints and read everything. */
async function attemptFull(repo: Repository, host: LibvirtHost, opts: VmBackupOptions, tally: JobTally, reason: string): Promise<Point> {
  for (const c of await host.checkpoints(opts.vm)) if (c.startsWith('drctl-')) await host.virsh(['checkpoint-delete', opts.vm, c, '--metadata']).catch(() => undefined);
  const p = await attempt(repo, host, opts, tally);
  return p.changeTracking?.mode === 'full-read' ? p : { ...p, changeTracking: { mode: 'full-read', reason } };
}

/** Why the previous point cannot be the base of an incremental; undefined when it can. */
async function chainProblem(host: LibvirtHost, vm: string, parent: Point): Promise<string | undefined> {
  const rec = parent.vm;
  if (!rec?.checkpoint) return 'the previous point has no checkpoint';
  const uuid = (await host.virsh(['domuuid', vm])).trim();
  if (uuid !== rec.uuid) return `VM ${vm} was recreated (UUID ${rec.uuid} → ${uuid})`;
  const cps = await host.checkpoints(vm);
  if (!cps.includes(rec.checkpoint)) return `checkpoint ${rec.checkpoint} of the previous point is missing on the host (deleted outside drctl, or lost in a host crash)`;
  return undefined;
}

/** Linux guests have no VSS: a file-level request is served VM-level, with this reason. */
async function fallbackReason(host: LibvirtHost, vm: string, files: string[]): Promise<string | undefined> {
  const os = await host.osFamily(vm);
  const what = `file-level source (${files.join(', ')})`;
  if (os === 'linux') return `${what} on a Linux guest: no consistent file-level view from the host, backed up VM-level; files are restorable from this point`;
  if (os === 'windows') return `${what} on a Windows guest: VSS file-level backup is not available for libvirt hosts yet, backed up VM-level`;
  return `${what}: guest OS unknown (no guest agent answer), backed up VM-level`;
}
