/**
 * Restore a VM-level point of a libvirt VM onto a host:
 *  - as a new VM (`--as NAME`): new qcow2 images, written through qemu-nbd on the host (only
 *    non-zero chunks cross the network), and a new domain from the stored XML with a new UUID
 *    and new MAC addresses;
 *  - onto the original VM: check its disks (each present, same size as in the point, or
 *    resized on request), optionally take a safety point, shut it down (graceful, then hard
 *    after a timeout), then compare each chunk of the current disk with the point (hash) and
 *    write only those that differ; restart the VM if it was running.
 * Name, networks and disk sizes are checked before anything on the host is changed.
 */
import { dirname } from 'node:path';
import type { Repository, Point, DiskRecord } from '../repo/index.js';
import { HASH_BYTES, hashHex } from '../repo/index.js';
import { runBounded } from '../runtime/concurrency.js';
import { UsageError, InterruptedError } from '../errors.js';
import { shq, RemoteCommandError } from '../ssh/index.js';
import type { LibvirtHost } from '../hosts/libvirt/libvirt-host.js';
import { parseDomain, rewriteForNewVm, type DomainDisk, type DomainNetworkLink } from '../hosts/libvirt/domain-xml.js';
import { NbdClient } from '../hosts/libvirt/nbd-client.js';
import type { ProgressFn } from '../progress.js';

export interface VmRestoreResult {
  vm: string;
  disks: { dev: string; path: string }[];
  /** Bytes written to the disks on the host. */
  bytesWritten: number;
  /** Bytes of the current disks read back to compare (restore to the original). */
  bytesCompared: number;
  logicalBytes: number;
  started: boolean;
  durationMs: number;
}

export interface NewVmOptions {
  name: string;
  /** Folder on the host for the new images, or the name of a libvirt storage pool (default: next to the original images). */
  storage?: string;
  noNetwork?: boolean;
  start?: boolean;
  signal?: AbortSignal;
  onProgress?: ProgressFn;
}

export async function restoreAsNewVm(repo: Repository, point: Point, host: LibvirtHost, o: NewVmOptions): Promise<VmRestoreResult> {
  const t0 = performance.now();
  const rec = requireVm(point);
  // Everything that can be checked is checked before the first byte is written.
  checkVmName(o.name);
  if (await host.exists(o.name)) throw new UsageError(`${host.label} already has a VM named ${o.name}`, 'choose another --as NAME, or restore onto that VM without --as');
  const stored = parseDomain(rec.xml);
  if (!o.noNetwork) await checkNetworkLinks(host, stored.links, !!o.start);
  const paths = new Map<string, string>();
  const storage = o.storage && !o.storage.startsWith('/') ? await poolPath(host, o.storage) : o.storage;
  for (const d of point.disks ?? []) {
    const orig = stored.disks.find((x) => x.dev === d.name)?.source;
    const folder = storage ?? (orig ? dirname(orig) : undefined);
    if (!folder) throw new UsageError(`disk ${d.name} of point ${point.id.slice(0, 8)} had no file on the host`, 'give --storage FOLDER');
    const path = `${folder.replace(/\/+$/, '')}/${o.name}-${d.name}.qcow2`;
    await requireFree(host, path);
    paths.set(d.name, path);
  }
  const nvram = await planNvram(host, stored.nvram, storage, o.name);
  let written = 0;
  const created: string[] = [];
  try {
    if (nvram.copyFrom && nvram.path) {
      created.push(nvram.path);
      await host.sh(`mkdir -p ${shq(dirname(nvram.path))} && cp ${shq(nvram.copyFrom)} ${shq(nvram.path)}`, `copying the UEFI variables to ${nvram.path}`);
    }
    for (const d of point.disks ?? []) {
      const path = paths.get(d.name) as string;
      await host.sh(`mkdir -p ${shq(dirname(path))} && qemu-img create -q -f qcow2 ${shq(path)} ${d.sizeBytes}`, `creating ${path}`);
      created.push(path);
      written += (await writeDisk(repo, host, d, path, 'qcow2', 'new', o.signal, o.onProgress)).written;
    }
    const xml = rewriteForNewVm(rec.xml, { name: o.name, diskPaths: paths, noNetwork: o.noNetwork, ...(nvram.path ? { nvramPath: nvram.path } : {}) });
    const dir = (await host.sh('mktemp -d /tmp/drctl-restore.XXXXXX', 'creating a temp folder')).trim();
    try {
      await host.sh(`cat > ${shq(`${dir}/domain.xml`)}`, 'writing the domain XML', { stdin: xml });
      await host.virsh(['define', `${dir}/domain.xml`]);
    } finally {
      await host.transport.exec(`rm -rf ${shq(dir)}`);
    }
  } catch (e) {
    for (const p of created) await host.transport.exec(`rm -f ${shq(p)}`).catch(() => undefined);
    if (o.signal?.aborted) throw new InterruptedError(`interrupted - new VM ${o.name} was not created on ${host.label} (its image files were removed)`, 'run the restore again; the repository is unchanged');
    throw e;
  }
  if (storage !== o.storage) await host.virsh(['pool-refresh', o.storage as string]).catch(() => undefined);
  if (o.start) {
    await host.virsh(['start', o.name]).catch((e: unknown) => {
      throw new RemoteCommandError(`new VM ${o.name} was restored and defined on ${host.label} but did not start - ${(e as Error).message.replace(/^.*?virsh start failed - /, '')}`,
        `fix the cause and start it (\`virsh start ${o.name}\` on the host), or remove it (\`virsh undefine ${o.name} --nvram\` and delete ${[...paths.values()].join(', ')}) and restore again`, { cause: e });
    });
  }
  return {
    vm: o.name, disks: [...paths].map(([dev, path]) => ({ dev, path })), bytesWritten: written, bytesCompared: 0,
    logicalBytes: (point.disks ?? []).reduce((a, d) => a + d.sizeBytes, 0), started: !!o.start, durationMs: Math.round(performance.now() - t0),
  };
}

/**
 * libvirt's rules for a domain name (not empty, no '/', printable) plus what makes it unsafe
 * here: the name becomes part of the new image file names, and a leading '-' would be read
 * as an option by virsh.
 */
function checkVmName(name: string): void {
  const why = name === '' ? 'it is empty'
    : name.includes('/') ? 'it contains "/" (a path, not a name)'
      : /[\x00-\x1f\x7f]/.test(name) ? 'it contains control characters'
        : name === '.' || name === '..' ? 'it is a path, not a name'
          : name.startsWith('-') ? 'it starts with "-"' : undefined;
  if (why) throw new UsageError(`invalid VM name ${JSON.stringify(name)} for --as - ${why}; nothing was written`, 'give --as a plain name such as web01-copy; the new image files are named after it (NAME-vda.qcow2)');
}

/** The libvirt networks, bridges and host NICs the interfaces need must exist on the target host (else `virsh start` fails after every disk was written). */
async function checkNetworkLinks(host: LibvirtHost, links: DomainNetworkLink[], start: boolean): Promise<void> {
  const missing: string[] = [];
  const inactive: string[] = [];
  for (const l of links) {
    if (l.type === 'network') {
      const info = await host.virsh(['net-info', l.name]).catch(() => undefined);
      if (info === undefined) missing.push(`network ${l.name}`);
      else if (start && /^Active:\s+no/m.test(info)) inactive.push(l.name);
    } else {
      const r = await host.transport.exec(`ip link show dev ${shq(l.name)}`);
      if (r.code !== 0 && r.code !== 127) missing.push(`${l.type === 'bridge' ? 'bridge' : 'network interface'} ${l.name}`);
    }
  }
  if (missing.length) {
    throw new UsageError(`${host.label} has no ${missing.join(', ')} for the network interfaces of the new VM - nothing was written`,
      'create it on the host (`virsh net-list --all`, `ip link`), or restore without network interfaces: add --no-network');
  }
  if (inactive.length) {
    throw new UsageError(`network ${inactive.join(', ')} on ${host.label} is not active, so --start would fail - nothing was written`,
      `start it on the host (\`virsh net-start ${inactive[0]}\`), or leave out --start, or add --no-network`);
  }
}

async function requireFree(host: LibvirtHost, path: string): Promise<void> {
  const exists = await host.transport.exec(`test -e ${shq(path)}`);
  if (exists.code === 0) throw new UsageError(`${host.label}: ${path} already exists`, 'remove it, or choose another --as NAME or --storage');
}

/**
 * The new VM's UEFI variable store: a copy of the original's file when this host has it (same
 * boot entries), next to the new images; else no path, and libvirt creates NAME_VARS.fd from
 * the firmware template. The original's file is only ever read.
 */
async function planNvram(host: LibvirtHost, original: string | undefined, storage: string | undefined, name: string): Promise<{ path?: string; copyFrom?: string }> {
  if (!original) return {};
  if ((await host.transport.exec(`test -r ${shq(original)}`)).code !== 0) return {};
  const path = `${(storage ?? dirname(original)).replace(/\/+$/, '')}/${name}_VARS.fd`;
  await requireFree(host, path);
  return { path, copyFrom: original };
}

export interface OriginalVmOptions {
  force?: boolean;
  /** Seconds to wait for a graceful shutdown before a hard stop. */
  shutdownTimeoutS?: number;
  /** Take a point of the current state first (default on); called with the VM still running or off. */
  safetyPoint?: () => Promise<Point>;
  /** A disk whose size differs from the point's is resized to it (while the VM is off) instead of refused. */
  resizeDisks?: boolean;
  /** Start the VM after the restore even if it was off (it is always started again when it was running). */
  start?: boolean;
  signal?: AbortSignal;
  onProgress?: ProgressFn;
  log?: (line: string) => void;
}

export async function restoreToOriginalVm(repo: Repository, point: Point, host: LibvirtHost, o: OriginalVmOptions): Promise<VmRestoreResult & { safetyPoint?: string }> {
  const t0 = performance.now();
  const rec = requireVm(point);
  if (!(await host.exists(rec.name))) {
    throw new UsageError(`${host.label} has no VM named ${rec.name}`, `restore it as a new VM: --as ${rec.name}`);
  }
  const uuid = (await host.virsh(['domuuid', rec.name])).trim();
  if (uuid !== rec.uuid && !o.force) {
    throw new UsageError(`VM ${rec.name} on ${host.label} is not the VM of point ${point.id.slice(0, 8)} (UUID ${uuid}, the point has ${rec.uuid}: recreated, or another host)`,
      `restore as a new VM with --as NAME, or add --force to overwrite this VM's disks anyway`);
  }
  const state = await host.state(rec.name);
  const wasRunning = state === 'running';
  if (state !== 'shut off' && !o.force) {
    throw new UsageError(`VM ${rec.name} on ${host.label} is ${state}`, 'shut it down first, or add --force (graceful shutdown, then a hard stop)');
  }
  // Every disk must be there with the point's size before anything is stopped or dropped.
  const plan = await planOriginalDisks(host, rec.name, point, !!o.resizeDisks);
  let safety: Point | undefined;
  if (o.safetyPoint) {
    o.log?.(`taking a safety point of ${rec.name} before overwriting it`);
    safety = await o.safetyPoint();
  }
  if (state !== 'shut off') await stopVm(host, rec.name, o.shutdownTimeoutS ?? 60);
  let written = 0;
  let compared = 0;
  const disks: { dev: string; path: string }[] = [];
  try {
    // Disk writes below bypass libvirt's dirty bitmaps: forget drctl's checkpoints so the next
    // backup reads everything (its point records why) instead of trusting a stale bitmap.
    for (const c of await host.checkpoints(rec.name)) {
      if (c.startsWith('drctl-')) await host.virsh(['checkpoint-delete', rec.name, c, '--metadata']).catch(() => undefined);
    }
    for (const { disk: d, cur, sizeBytes } of plan) {
      const path = cur.source as string;
      for (const c of (await host.transport.exec(`qemu-img info --output=json ${shq(path)}`)).stdout.match(/"name": "drctl-[^"]+"/g) ?? []) {
        await host.transport.exec(`qemu-img bitmap --remove ${shq(path)} ${shq(c.slice(9, -1))}`);
      }
      if (sizeBytes !== d.sizeBytes) {
        o.log?.(`resizing ${d.name} of ${rec.name} from ${sizeBytes} to ${d.sizeBytes} bytes (the point's size)`);
        await host.sh(`qemu-img resize -q -f ${shq(cur.format)}${d.sizeBytes < sizeBytes ? ' --shrink' : ''} ${shq(path)} ${d.sizeBytes}`, `resizing ${path}`);
      }
      const r = await writeDisk(repo, host, d, path, cur.format, 'diff', o.signal, o.onProgress);
      written += r.written;
      compared += r.compared;
      disks.push({ dev: d.name, path });
    }
  } catch (e) {
    throw leftOff(e, { host, point, vm: rec.name, devs: plan.map((p) => p.disk.name), wasRunning, force: uuid !== rec.uuid, signal: o.signal, log: o.log });
  }
  const start = wasRunning || !!o.start;
  if (start) await host.virsh(['start', rec.name]);
  return {
    vm: rec.name, disks, bytesWritten: written, bytesCompared: compared, started: start,
    logicalBytes: (point.disks ?? []).reduce((a, d) => a + d.sizeBytes, 0), durationMs: Math.round(performance.now() - t0),
    ...(safety ? { safetyPoint: safety.id } : {}),
  };
}

interface DiskPlan {
  disk: DiskRecord;
  cur: DomainDisk;
  /** The current size of the VM's disk. */
  sizeBytes: number;
}

/**
 * The VM's current disk for each disk of the point. A missing disk is refused; so is a size
 * that differs from the point's (a larger disk would keep data written after the point in
 * its tail, a smaller one cannot hold the point), unless `resize` is given.
 */
async function planOriginalDisks(host: LibvirtHost, vm: string, point: Point, resize: boolean): Promise<DiskPlan[]> {
  const live = parseDomain(await host.domainXml(vm, true));
  const plan: DiskPlan[] = [];
  const wrong: string[] = [];
  for (const d of point.disks ?? []) {
    const cur = live.disks.find((x) => x.dev === d.name);
    if (!cur?.source) throw new UsageError(`VM ${vm} on ${host.label} has no disk ${d.name} any more - nothing was changed`, `restore the point as a new VM with --as NAME`);
    const sizeBytes = await host.diskSize(vm, d.name).catch(() => 0);
    if (!sizeBytes) throw new UsageError(`cannot read the size of disk ${d.name} (${cur.source}) of VM ${vm} on ${host.label} - nothing was changed`, 'check the image on the host (`virsh domblkinfo VM DEV`)');
    if (sizeBytes !== d.sizeBytes && (!resize || cur.type !== 'file')) wrong.push(`${d.name} is ${size(sizeBytes)} on the VM but ${size(d.sizeBytes)} in the point${resize ? ` (a ${cur.type} disk cannot be resized)` : ''}`);
    plan.push({ disk: d, cur, sizeBytes });
  }
  if (wrong.length) {
    throw new UsageError(`VM ${vm} on ${host.label}: disk ${wrong.join('; disk ')} - nothing was changed`,
      'add --resize-disks to resize the disk to the point\'s size while the VM is off (shrinking drops what is past that size), or restore the point as a new VM with --as NAME');
  }
  return plan;
}

function size(bytes: number): string {
  const mib = bytes / 2 ** 20;
  return `${Number.isInteger(mib) ? mib : mib.toFixed(1)} MiB (${bytes} bytes)`;
}

/**
 * What a failure after the VM was stopped leaves: the VM shut off with disks partly written.
 * An interrupt says so and gives the command that finishes the restore; other failures keep
 * their own message, and the log line says the same.
 */
function leftOff(e: unknown, c: { host: LibvirtHost; point: Point; vm: string; devs: string[]; wasRunning: boolean; force: boolean; signal?: AbortSignal; log?: (line: string) => void }): unknown {
  const hostName = /^host (\S+)/.exec(c.host.label)?.[1] ?? 'NODE';
  const again = `drctl restore ${c.point.id.slice(0, 12)} --host ${hostName}${c.force ? ' --force' : ''} --no-safety-point${c.wasRunning ? ' --start' : ''}`;
  const state = `VM ${c.vm} on ${c.host.label} is shut off and its disk${c.devs.length > 1 ? 's' : ''} ${c.devs.join(', ')} ${c.devs.length > 1 ? 'are' : 'is'} partly restored`;
  const start = c.wasRunning ? `; it was running before: --start starts it again when the restore is done (or \`virsh start ${c.vm}\` on the host)` : '';
  if (c.signal?.aborted || e instanceof InterruptedError) {
    return new InterruptedError(`interrupted - ${state}`, `finish the restore with \`${again}\`${start}; the repository is unchanged`);
  }
  c.log?.(`${state}: once the cause is fixed, finish with \`${again}\`${start}`);
  return e;
}

/** A libvirt storage pool of type dir (or any pool with a target path): its folder. */
async function poolPath(host: LibvirtHost, pool: string): Promise<string> {
  let xml: string;
  try {
    xml = await host.virsh(['pool-dumpxml', pool]);
  } catch {
    throw new UsageError(`${host.label} has no storage pool ${pool}`, 'give --storage an absolute folder on the host, or an existing pool (`virsh pool-list --all`)');
  }
  const path = /<target>[\s\S]*?<path>([^<]+)<\/path>/.exec(xml)?.[1];
  if (!path || !path.startsWith('/')) throw new UsageError(`storage pool ${pool} on ${host.label} has no folder to put images in`, 'give --storage an absolute folder, or a pool of type dir');
  return path;
}

function requireVm(point: Point): NonNullable<Point['vm']> {
  if (!point.vm) throw new UsageError(`point ${point.id.slice(0, 8)} is not a libvirt VM point`, 'restore it to an image file with --to FILE');
  return point.vm;
}

async function stopVm(host: LibvirtHost, vm: string, timeoutS: number): Promise<void> {
  await host.virsh(['shutdown', vm]).catch(() => undefined);
  const until = Date.now() + timeoutS * 1000;
  while (Date.now() < until) {
    if ((await host.state(vm)) === 'shut off') return;
    await new Promise((r) => setTimeout(r, 1000));
  }
  await host.virsh(['destroy', vm]).catch((e: unknown) => {
    if (!(e instanceof RemoteCommandError) || !/not running/.test(e.message)) throw e;
  });
}

const IN_FLIGHT = 8;

/**
 * Write a disk of a point to an image on the host through qemu-nbd. 'new': the image is
 * empty, only non-zero chunks are written. 'diff': each chunk of the current image is read
 * (holes are not) and hashed; only differing chunks are written, zeros as write-zeroes.
 */
async function writeDisk(repo: Repository, host: LibvirtHost, disk: DiskRecord, path: string, format: string, mode: 'new' | 'diff', signal?: AbortSignal, onProgress?: ProgressFn): Promise<{ written: number; compared: number }> {
  const dir = (await host.sh('mktemp -d /tmp/drctl-nbd.XXXXXX', 'creating a temp folder')).trim();
  const sock = `${dir}/nbd.sock`;
  // Without --persistent qemu-nbd exits when we disconnect; --fork returns once it listens.
  await host.sh(`qemu-nbd --fork --pid-file=${shq(`${dir}/pid`)} --cache=writeback -f ${shq(format)} -k ${shq(sock)} ${shq(path)}`, `starting qemu-nbd on ${path}`);
  let nbd: NbdClient | undefined;
  try {
    nbd = await NbdClient.connect(await host.transport.openUnixSocket(sock), '', mode === 'diff' ? ['base:allocation'] : []);
    const client = nbd;
    const allocated = mode === 'diff' ? await client.extents('base:allocation', (f) => (f & 2) === 0) : [];
    const t: ChunkTarget = { repo, client, mode, allocated, written: 0, compared: 0 };
    let done = 0;
    for (const [seg, listHash] of disk.lists.entries()) {
      const entries = await repo.readBlob(listHash);
      const first = seg * (entries.length / HASH_BYTES);
      function* jobs(): Iterable<() => Promise<void>> {
        for (let j = 0; j * HASH_BYTES < entries.length; j++) {
          if (signal?.aborted) throw new InterruptedError();
          const start = (first + j) * disk.chunkBytes;
          const want = entries.subarray(j * HASH_BYTES, (j + 1) * HASH_BYTES);
          yield () => restoreChunk(t, start, Math.min(disk.chunkBytes, disk.sizeBytes - start), want);
        }
      }
      await runBounded(jobs(), IN_FLIGHT, signal);
      done += (entries.length / HASH_BYTES) * disk.chunkBytes;
      onProgress?.({ phase: 'restore', doneBytes: Math.min(done, disk.sizeBytes), totalBytes: disk.sizeBytes, item: disk.name });
    }
    await client.flush();
    return { written: t.written, compared: t.compared };
  } finally {
    await nbd?.close().catch(() => undefined);
    // qemu-nbd holds the image lock until it exits: wait for it (5 s at most), so the VM can start.
    await host.transport.exec(`p=$(cat ${shq(`${dir}/pid`)} 2>/dev/null); i=0; while [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; rm -rf ${shq(dir)}`).catch(() => undefined);
  }
}

/** Where writeDisk writes, and what it counted so far. */
interface ChunkTarget {
  repo: Repository;
  client: NbdClient;
  mode: 'new' | 'diff';
  /** 'diff': the ranges of the image that hold data. */
  allocated: { offset: number; length: number }[];
  written: number;
  compared: number;
}

/** One chunk onto the image: left alone when it already holds it ('diff'), else written (zeros as write-zeroes). */
async function restoreChunk(t: ChunkTarget, start: number, len: number, want: Buffer): Promise<void> {
  const wantZero = want.equals(ZERO_HASH);
  if (t.mode === 'diff') {
    const hasData = overlaps(t.allocated, start, len);
    if (!hasData && wantZero) return;
    if (hasData) {
      const cur = Buffer.alloc(len);
      await t.client.read(start, len, cur, 0);
      t.compared += len;
      const curZero = cur.every((b) => b === 0);
      if (curZero && wantZero) return;
      if (!wantZero && hashHex(cur) === want.toString('hex')) return;
    }
    if (wantZero) {
      await t.client.writeZeroes(start, len);
      t.written += len;
      return;
    }
  } else if (wantZero) {
    return;
  }
  const data = await t.repo.readBlob(want.toString('hex'));
  await t.client.write(start, data.subarray(0, len));
  t.written += len;
}

const ZERO_HASH = Buffer.alloc(HASH_BYTES);

function overlaps(sorted: { offset: number; length: number }[], start: number, len: number): boolean {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const e = sorted[mid] as { offset: number; length: number };
    if (e.offset + e.length <= start) lo = mid + 1;
    else hi = mid;
  }
  const e = sorted[lo];
  return e !== undefined && e.offset < start + len;
}
