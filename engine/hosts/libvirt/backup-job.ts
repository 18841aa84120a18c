/**
 * One libvirt pull-mode backup job: freeze the guest file systems through the agent, start
 * `backup-begin` with a new checkpoint (incremental from the previous one when given), thaw
 * at once (the point in time is fixed when backup-begin returns), then serve every disk as an
 * NBD export on a Unix socket on the host, which drctl reads through SSH streamlocal
 * forwarding. `finish()` ends the job; the new checkpoint stays for the next incremental.
 */
import { randomBytes } from 'node:crypto';
import { DrError, ExitCode } from '../../errors.js';
import { shq, RemoteCommandError } from '../../ssh/index.js';
import type { DiskSource, Extent } from '../types.js';
import type { LibvirtHost } from './libvirt-host.js';
import { parseDomain, type DomainInfo } from './domain-xml.js';
import { NbdClient } from './nbd-client.js';

export class QuiesceError extends DrError {
  readonly code = 'QUIESCE_FAILED';
  readonly exitCode = ExitCode.failed;
}

export interface BackupJobOptions {
  /** Checkpoint of the previous point: export the dirty bitmap since it. */
  incrementalFrom?: string;
  quiesce: 'required' | 'preferred';
  /** Folder on the host for the NBD socket; QEMU (user libvirt-qemu) must be able to create files there. */
  workDir?: string;
  /** Called while the guest is frozen (tests observe the freeze here). */
  onFrozen?: () => Promise<void>;
}

export interface BackupJob {
  vm: string;
  uuid: string;
  /** Inactive domain XML, stored on the point. */
  xml: string;
  domain: DomainInfo;
  checkpoint: string;
  quiesced: boolean;
  warnings: string[];
  diskSizes: Map<string, number>;
  /** The disk as a DiskSource; `changed` = dirty-bitmap extents when incremental. */
  openDisk(dev: string): Promise<{ source: DiskSource; changed?: Extent[] }>;
  /** End the job. `keepCheckpoint: false` after a failure: the next run starts from the older one. */
  finish(keepCheckpoint: boolean): Promise<void>;
}

export async function beginBackupJob(host: LibvirtHost, vm: string, opts: BackupJobOptions): Promise<BackupJob> {
  const xml = await host.domainXml(vm, true);
  const live = parseDomain(await host.domainXml(vm, false));
  const state = await host.state(vm);
  if (state !== 'running') {
    throw new VmStateError(`${host.label}: VM ${vm} is ${state} - a pull-mode backup needs a running VM`, 'start the VM, or back up its disk images with an `image:` source');
  }
  const disks = live.disks;
  const diskSizes = new Map<string, number>();
  for (const d of disks) diskSizes.set(d.dev, await host.diskSize(vm, d.dev));
  const { checkpoint, socket, backupXml, checkpointXml } = jobXml(disks.map((d) => d.dev), opts.workDir ?? '/var/lib/libvirt/qemu', opts.incrementalFrom);
  const dir = (await host.sh('mktemp -d /tmp/drctl-job.XXXXXX', 'creating a temp folder')).trim();
  const warnings: string[] = [];
  let quiesced = false;
  try {
    await host.sh(`printf '%s' ${shq(backupXml)} > ${shq(`${dir}/backup.xml`)} && printf '%s' ${shq(checkpointXml)} > ${shq(`${dir}/checkpoint.xml`)}`, 'writing the backup XML');
    const frozen = await freeze(host, vm, live, opts.quiesce, warnings);
    try {
      if (frozen) await opts.onFrozen?.();
      try {
        await host.virsh(['backup-begin', vm, `${dir}/backup.xml`, `${dir}/checkpoint.xml`]);
      } catch (e) {
        if (!(e instanceof RemoteCommandError) || !/job|already/i.test(e.message)) throw e;
        throw new RemoteCommandError(e.message, `another job runs on VM ${vm}; if no backup of it is running (a drctl process that died), end it with \`virsh domjobabort ${vm}\` on the host`);
      }
      quiesced = frozen;
    } finally {
      if (frozen) await thaw(host, vm);
    }
  } finally {
    await host.transport.exec(`rm -rf ${shq(dir)}`).catch(() => undefined);
  }
  const clients: NbdClient[] = [];
  return {
    vm, uuid: live.uuid, xml, domain: live, checkpoint, quiesced, warnings, diskSizes,
    async openDisk(dev) {
      const stream = await host.transport.openUnixSocket(socket);
      const metas = ['base:allocation', ...(opts.incrementalFrom ? [`qemu:dirty-bitmap:backup-${dev}`] : [])];
      const nbd = await NbdClient.connect(stream, dev, metas);
      clients.push(nbd);
      // Bit 1 of base:allocation = reads as zeros: never read, never sent.
      const data = await nbd.extents('base:allocation', (f) => (f & 2) === 0);
      const changed = opts.incrementalFrom ? await nbd.extents(`qemu:dirty-bitmap:backup-${dev}`, (f) => (f & 1) === 1) : undefined;
      const format = disks.find((d) => d.dev === dev)?.format ?? 'raw';
      return { source: nbdDiskSource(dev, format, nbd, data), ...(changed ? { changed } : {}) };
    },
    async finish(keepCheckpoint) {
      for (const c of clients) await c.close().catch(() => undefined);
      await host.virsh(['domjobabort', vm]).catch(() => undefined); // ends a pull-mode job
      if (!keepCheckpoint) await host.virsh(['checkpoint-delete', vm, checkpoint]).catch(() => undefined);
    },
  };
}

/**
 * A pull-mode backup job of `devs` (NBD export `dev`, dirty bitmap `backup-dev`, scratch files
 * and socket in `workDir`) and the checkpoint it creates, named for this run.
 */
function jobXml(devs: string[], workDir: string, incrementalFrom?: string): { checkpoint: string; socket: string; backupXml: string; checkpointXml: string } {
  const tag = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  const checkpoint = `drctl-${tag}`;
  const socket = `${workDir}/drctl-${tag}.sock`;
  const backupXml = `<domainbackup mode='pull'>${incrementalFrom ? `<incremental>${incrementalFrom}</incremental>` : ''}`
    + `<server transport='unix' socket='${socket}'/><disks>`
    + devs.map((dev) => `<disk name='${dev}' backup='yes' type='file' exportname='${dev}' exportbitmap='backup-${dev}'><scratch file='${workDir}/drctl-${tag}-${dev}.scratch'/></disk>`).join('')
    + '</disks></domainbackup>';
  const checkpointXml = `<domaincheckpoint><name>${checkpoint}</name><disks>${devs.map((dev) => `<disk name='${dev}' checkpoint='bitmap'/>`).join('')}</disks></domaincheckpoint>`;
  return { checkpoint, socket, backupXml, checkpointXml };
}

class VmStateError extends DrError {
  readonly code = 'VM_STATE';
  readonly exitCode = ExitCode.failed;
}

async function freeze(host: LibvirtHost, vm: string, dom: DomainInfo, mode: 'required' | 'preferred', warnings: string[]): Promise<boolean> {
  const why = !dom.hasAgentChannel ? 'the VM has no guest-agent channel'
    : !(await host.agentResponsive(vm)) ? 'the guest agent does not answer' : undefined;
  if (!why) {
    try {
      await host.virsh(['domfsfreeze', vm], { timeoutMs: 60_000 });
      return true;
    } catch (e) {
      await thaw(host, vm);
      if (mode === 'required') throw new QuiesceError(`${host.label}: cannot quiesce VM ${vm} - ${(e as Error).message}`, 'check qemu-guest-agent in the guest, or set quiesce: preferred to accept crash-consistent points');
      warnings.push(`not quiesced (fsfreeze failed: ${(e as Error).message}): crash-consistent point`);
      return false;
    }
  }
  if (mode === 'required') {
    throw new QuiesceError(`${host.label}: cannot quiesce VM ${vm} - ${why}`, 'install and start qemu-guest-agent in the guest (and add the org.qemu.guest_agent.0 channel), or set quiesce: preferred');
  }
  warnings.push(`not quiesced (${why}): crash-consistent point`);
  return false;
}

async function thaw(host: LibvirtHost, vm: string): Promise<void> {
  // Thaw is retried: a guest left frozen blocks every write in it.
  for (let i = 0; i < 3; i++) {
    try {
      await host.virsh(['domfsthaw', vm], { timeoutMs: 30_000 });
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
