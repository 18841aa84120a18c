/**
 * Restore a VM-level point of a libvirt VM onto a host:
 *  - as a new VM (`--as NAME`): new qcow2 images, written through qemu-nbd on the host (only
 *    non-zero chunks cross the network), and a new domain from the stored XML with a new UUID
 *    and new MAC addresses;
 *  - onto the original VM: shut it down (graceful, then hard after a timeout), optionally take
 *    a safety point first, then compare each chunk of the current disk with the point (hash)
 *    and write only those that differ; restart the VM if it was running.
 */
import { dirname } from 'node:path';
import type { Repository, Point, DiskRecord } from '../repo/index.js';
import { HASH_BYTES, hashHex } from '../repo/index.js';
import { runBounded } from '../runtime/concurrency.js';
import { UsageError, InterruptedError } from '../errors.js';
import { shq, RemoteCommandError } from '../ssh/index.js';
import type { LibvirtHost } from '../hosts/libvirt/libvirt-host.js';
import { parseDomain, rewriteForNewVm } from '../hosts/libvirt/domain-xml.js';
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
  if (await host.exists(o.name)) throw new UsageError(`${host.label} already has a VM named ${o.name}`, 'choose another --as NAME, or restore onto that VM without --as');
  const stored = parseDomain(rec.xml);
  const paths = new Map<string, string>();
  const storage = o.storage && !o.storage.startsWith('/') ? await poolPath(host, o.storage) : o.storage;
  for (const d of point.disks ?? []) {
    const orig = stored.disks.find((x) => x.dev === d.name)?.source;
    const folder = storage ?? (orig ? dirname(orig) : undefined);
    if (!folder) throw new UsageError(`disk ${d.name} of point ${point.id.slice(0, 8)} had no file on the host`, 'give --storage FOLDER');
    const path = `${folder.replace(/\/+$/, '')}/${o.name}-${d.name}.qcow2`;
    const exists = await host.transport.exec(`test -e ${shq(path)}`);
    if (exists.code === 0) throw new UsageError(`${host.label}: ${path} already exists`, 'remove it, or choose another --as NAME or --storage');
    paths.set(d.name, path);
  }
  let written = 0;
  const created: string[] = [];
  try {
    for (const d of point.disks ?? []) {
      const path = paths.get(d.name) as string;
      await host.sh(`mkdir -p ${shq(dirname(path))} && qemu-img create -q -f qcow2 ${shq(path)} ${d.sizeBytes}`, `creating ${path}`);
      created.push(path);
      written += (await writeDisk(repo, host, d, path, 'qcow2', 'new', o.signal, o.onProgress)).written;
    }
    const xml = rewriteForNewVm(rec.xml, { name: o.name, diskPaths: paths, noNetwork: o.noNetwork });
    const dir = (await host.sh('mktemp -d /tmp/drctl-restore.XXXXXX', 'creating a temp folder')).trim();
    try {
      await host.sh(`cat > ${shq(`${dir}/domain.xml`)}`, 'writing the domain XML', { stdin: xml });
      await host.virsh(['define', `${dir}/domain.xml`]);
    } finally {
      await host.transport.exec(`rm -rf ${shq(dir)}`);
    }
  } catch (e) {
    for (const p of created) await host.transport.exec(`rm -f ${shq(p)}`).catch(() => undefined);
    throw e;
  }
  if (storage !== o.storage) await host.virsh(['pool-refresh', o.storage as string]).catch(() => undefined);
  if (o.start) await host.virsh(['start', o.name]);
  return {
    vm: o.name, disks: [...paths].map(([dev, path]) => ({ dev, path })), bytesWritten: written, bytesCompared: 0,
    logicalBytes: (point.disks ?? []).reduce((a, d) => a + d.sizeBytes, 0), started: !!o.start, durationMs: Math.round(performance.now() - t0),
  };
}

export interface OriginalVmOptions {
  force?: boolean;
  /** Seconds to wait for a graceful shutdown before a hard stop. */
  shutdownTimeoutS?: number;
  /** Take a point of the current state first (default on); called with the VM still running or off. */
  safetyPoint?: () => Promise<Point>;
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
  let safety: Point | undefined;
  if (o.safetyPoint) {
    o.log?.(`taking a safety point of ${rec.name} before overwriting it`);
    safety = await o.safetyPoint();
  }
  if (state !== 'shut off') await stopVm(host, rec.name, o.shutdownTimeoutS ?? 60);
  const live = parseDomain(await host.domainXml(rec.name, true));
  // Disk writes below bypass libvirt's dirty bitmaps: forget drctl's checkpoints so the next
  // backup reads everything (its point records why) instead of trusting a stale bitmap.
  for (const c of await host.checkpoints(rec.name)) {
    if (c.startsWith('drctl-')) await host.virsh(['checkpoint-delete', rec.name, c, '--metadata']).catch(() => undefined);
  }
  let written = 0;
  let compared = 0;
  const disks: { dev: string; path: string }[] = [];
  for (const d of point.disks ?? []) {
    const cur = live.disks.find((x) => x.dev === d.name);
    if (!cur?.source) throw new UsageError(`VM ${rec.name} has no disk ${d.name} any more`, `restore it as a new VM with --as`);
    for (const c of (await host.transport.exec(`qemu-img info --output=json ${shq(cur.source)}`)).stdout.match(/"name": "drctl-[^"]+"/g) ?? []) {
      await host.transport.exec(`qemu-img bitmap --remove ${shq(cur.source)} ${shq(c.slice(9, -1))}`);
    }
    const r = await writeDisk(repo, host, d, cur.source, cur.format, 'diff', o.signal, o.onProgress);
    written += r.written;
    compared += r.compared;
    disks.push({ dev: d.name, path: cur.source });
  }
  if (wasRunning) await host.virsh(['start', rec.name]);
  return {
    vm: rec.name, disks, bytesWritten: written, bytesCompared: compared, started: wasRunning,
    logicalBytes: (point.disks ?? []).reduce((a, d) => a + d.sizeBytes, 0), durationMs: Math.round(performance.now() - t0),
    ...(safety ? { safetyPoint: safety.id } : {}),
  };
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
