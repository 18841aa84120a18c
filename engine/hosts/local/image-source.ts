/**
 * Local disk images (raw, qcow2, and whatever qemu-img reads). `qemu-img map` tells which
 * guest ranges hold data and where they sit in the file; for raw images and uncompressed
 * qcow2 without a backing chain we read the file directly at those offsets (no conversion,
 * holes never read; a raw image with a changed-extent list is not mapped at all). Anything
 * else (compressed clusters, backing files) is first converted to a sparse raw temp file next
 * to the system temp dir, with a warning on the point. A file or device is known to be raw by
 * qemu's own rule (no other format's signature in its first sectors), without `qemu-img info`.
 */
import { basename, join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { fsp, type FileHandle } from '../../runtime/fs.js';
import { execFile } from '../../runtime/exec.js';
import { blockDeviceBytes } from '../../runtime/block-device.js';
import { SourceError, errnoCode } from '../../errors.js';
import type { DiskSource, Extent } from '../types.js';

interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present?: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/** A guest range and where its bytes live in the file. */
interface Mapped extends Extent {
  fileOffset: number;
}

export async function openImageSource(path: string): Promise<DiskSource> {
  let st;
  try {
    st = await fsp.stat(path);
  } catch (e) {
    throw new SourceError(path, errnoCode(e) === 'ENOENT' ? 'no such file' : describeErrno(e), { cause: e });
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new SourceError(path, 'not a regular file or block device');
  let fh: FileHandle;
  try {
    fh = await fsp.open(path, 'r');
  } catch (e) {
    throw new SourceError(path, describeErrno(e), { cause: e });
  }
  try {
    // A file or device that carries no other format's signature is raw, as qemu's own probe
    // decides: no `qemu-img info` (a fork of this ~100 MB process, ~45 ms on the main thread).
    const sniffed = await sniffFormat(fh, path);
    const info = sniffed === 'raw'
      ? { format: 'raw', virtualSize: st.isBlockDevice() ? await deviceBytes(path, st.rdev) : st.size }
      : await imageInfo(path);
    if (!info) throw new SourceError(path, `a ${sniffed} image needs qemu-img, which is not installed`, QEMU_UTILS);
    // A raw image is its own map (guest offset = file offset): its holes are looked up only
    // when a whole disk is read. An incremental run with a changed-extent list skips that
    // `qemu-img map` (a fork of this process and 235 KB of JSON for the bench image: the
    // run took 0.86–1.00 s with it, 0.82–0.98 s without, in interleaved pairs).
    if (info.format === 'raw') {
      const warnings: string[] = [];
      const whole = [{ offset: 0, length: info.virtualSize, fileOffset: 0 }];
      return new ImageFile(basename(path), path, 'raw', info.virtualSize, fh, async () => {
        const map = await imageMap(path);
        if (map) return mapped(map);
        warnings.push(NO_QEMU_IMG);
        return whole;
      }, warnings);
    }
    const map = await imageMap(path);
    if (!map) throw new SourceError(path, `a ${info.format} image needs qemu-img, which is not installed`, QEMU_UTILS);
    const direct = map.every((m) => !m.data || (m.depth === 0 && m.offset !== undefined));
    if (direct) return new ImageFile(basename(path), path, info.format, info.virtualSize, fh, async () => mapped(map), []);
    await fh.close();
    return await convertedSource(path, info.format);
  } catch (e) {
    await fh.close().catch(() => undefined);
    throw e;
  }
}

class ImageFile implements DiskSource {
  constructor(
    readonly name: string,
    /** The file read (the image, or its temporary raw copy). */
    readonly localPath: string,
    readonly format: string,
    readonly sizeBytes: number,
    private readonly fh: FileHandle,
    /** Where the guest's data sits in the file (asked for once, when first needed). */
    private readonly map: () => Promise<Mapped[]>,
    readonly warnings: string[],
    private readonly onClose?: () => Promise<void>,
  ) {}

  /** The extents reads are checked against: the map, or the whole disk after a coarse answer. */
  private extents: Mapped[] = [];

  async dataExtents(opts: { coarse?: boolean } = {}): Promise<Extent[]> {
    this.extents = opts.coarse && this.format === 'raw' ? [{ offset: 0, length: this.sizeBytes, fileOffset: 0 }] : await this.map();
    return this.extents.map(({ offset, length }) => ({ offset, length }));
  }

  fileOffset(offset: number, length: number): number {
    const m = findExtent(this.extents, offset);
    if (!m || offset + length > m.offset + m.length) throw new Error(`read ${offset}+${length} is outside the data extents`);
    return m.fileOffset + (offset - m.offset);
  }

  async read(offset: number, length: number, into: Buffer, intoOffset: number): Promise<void> {
    const at = this.fileOffset(offset, length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(into, intoOffset + done, length - done, at + done);
      if (bytesRead === 0) {
        into.fill(0, intoOffset + done, intoOffset + length); // file shorter than its map (raw image growing): zeros
        break;
      }
      done += bytesRead;
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
    await this.onClose?.();
  }
}

function findExtent(ext: Mapped[], offset: number): Mapped | undefined {
  let lo = 0;
  let hi = ext.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const m = ext[mid] as Mapped;
    if (offset < m.offset) hi = mid - 1;
    else if (offset >= m.offset + m.length) lo = mid + 1;
    else return m;
  }
  return undefined;
}

/** Data extents of the map, adjacent ones merged when they are also adjacent in the file. */
function mapped(map: MapEntry[]): Mapped[] {
  const out: Mapped[] = [];
  for (const m of map) {
    if (!m.data || m.zero || m.offset === undefined) continue;
    const last = out.at(-1);
    if (last && last.offset + last.length === m.start && last.fileOffset + last.length === m.offset) last.length += m.length;
    else out.push({ offset: m.start, length: m.length, fileOffset: m.offset });
  }
  return out;
}

/** `qemu-img info` of the image, or undefined when qemu-img is not installed. */
async function imageInfo(path: string): Promise<{ format: string; virtualSize: number } | undefined> {
  const r = await qemuImg(['info', '--output=json', path]);
  if (!r) return undefined;
  if (r.code !== 0) throw new SourceError(path, `qemu-img cannot read it: ${firstLine(r.stderr)}`);
  const info = JSON.parse(r.stdout) as { format: string; 'virtual-size': number };
  return { format: info.format, virtualSize: info['virtual-size'] };
}

/** `qemu-img map` of the image, or undefined when qemu-img is not installed. */
async function imageMap(path: string): Promise<MapEntry[] | undefined> {
  const r = await qemuImg(['map', '--output=json', path]);
  if (!r) return undefined;
  if (r.code !== 0) throw new SourceError(path, `qemu-img map failed: ${firstLine(r.stderr)}`);
  return JSON.parse(r.stdout) as MapEntry[];
}

async function qemuImg(args: string[]): Promise<Awaited<ReturnType<typeof execFile>> | undefined> {
  try {
    return await execFile('qemu-img', args);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  }
}

/** The size of a block device, which stat gives as 0. */
async function deviceBytes(path: string, rdev: number): Promise<number> {
  const size = await blockDeviceBytes(path, rdev);
  if ('bytes' in size) return size.bytes;
  throw new SourceError(path, `a block device whose size is unknown (${size.why})`,
    { hint: 'drctl reads the size of a device from /sys or with blockdev: mount sysfs there or install util-linux, or back up the device from a host that has them' });
}

const QEMU_UTILS = { hint: 'install qemu-utils (scripts/setup.sh does), then run the backup again' };
const NO_QEMU_IMG = 'qemu-img is not installed: holes were read (not stored); install qemu-utils';

/**
 * The signatures qemu probes image formats by (block/*.c `*_probe`), at the start of the file.
 * A file matching none of them is raw to qemu too.
 */
const SIGNATURES: [format: string, at: number, magic: Buffer][] = [
  ['qcow2', 0, Buffer.from('QFI\xfb', 'latin1')], // qcow and qcow2
  ['qed', 0, Buffer.from('QED\0', 'latin1')],
  ['vdi', 64, Buffer.from([0x7f, 0x10, 0xda, 0xbe])],
  ['vhdx', 0, Buffer.from('vhdxfile')],
  ['vmdk', 0, Buffer.from('KDMV')],
  ['vmdk', 0, Buffer.from('COWD')],
  ['vpc', 0, Buffer.from('conectix')],
  ['luks', 0, Buffer.from('LUKS\xba\xbe', 'latin1')],
  ['bochs', 0, Buffer.from('Bochs Virtual HD Image')],
  ['cloop', 0, Buffer.from('#!/bin/sh\n#V2.0 Format')],
  ['parallels', 0, Buffer.from('WithoutFreeSpace')],
  ['parallels', 0, Buffer.from('WithouFreSpacExt')],
];

/**
 * 'raw' when the file's first 4 KiB carry no image format's signature (and it is not a .dmg,
 * which qemu knows by name), else the format the signature names; `qemu-img info` has the
 * last word on those.
 */
async function sniffFormat(fh: FileHandle, path: string): Promise<string> {
  const head = Buffer.alloc(4096);
  let n;
  try {
    ({ bytesRead: n } = await fh.read(head, 0, head.length, 0));
  } catch (e) {
    throw new SourceError(path, describeErrno(e), { cause: e });
  }
  const got = head.subarray(0, n);
  for (const [format, at, magic] of SIGNATURES) {
    if (got.subarray(at, at + magic.length).equals(magic)) return format;
  }
  if (path.toLowerCase().endsWith('.dmg')) return 'dmg';
  // A VMDK text descriptor ("# Disk DescriptorFile" with extent lines) names other files.
  if (got.includes('# Disk DescriptorFile')) return 'vmdk';
  return 'raw';
}

async function convertedSource(path: string, format: string): Promise<DiskSource> {
  const tmp = join(tmpdir(), `drctl-${randomBytes(6).toString('hex')}.raw`);
  const r = await execFile('qemu-img', ['convert', '-f', format, '-O', 'raw', '-S', '4k', path, tmp]);
  if (r.code !== 0) {
    await fsp.rm(tmp, { force: true });
    throw new SourceError(path, `qemu-img convert failed: ${firstLine(r.stderr)}`);
  }
  const inner = await openImageSource(tmp);
  const size = inner.sizeBytes;
  const extents = await inner.dataExtents();
  await inner.close();
  const fh = await fsp.open(tmp, 'r');
  return new ImageFile(basename(path), tmp, format, size, fh, async () => extents.map((e) => ({ ...e, fileOffset: e.offset })),
    [`${format} image with compressed clusters or a backing chain: read through a temporary raw copy`],
    () => fsp.rm(tmp, { force: true }));
}

function describeErrno(e: unknown): string {
  const code = errnoCode(e);
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory (use --files for folders)';
  return e instanceof Error ? e.message : String(e);
}

function firstLine(s: string): string {
  return s.trim().split('\n')[0] ?? '';
}
