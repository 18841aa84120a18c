/**
 * Between "the LUN's block device is here" and "the repository is mounted": what is on the
 * LUN, whether it is safe to check and mount it, then fsck and mount.
 *
 * Mounting one filesystem twice at once — two target names for one LUN, two state folders,
 * a production node and a spare DR node — corrupts it: each kernel caches metadata and
 * overwrites the other's. Nothing in iSCSI prevents it, so before fsck (which writes) and
 * mount:
 * - on this machine: a filesystem with the same UUID that is already mounted is refused;
 * - across machines, ext4: drctl formats with multi-mount protection (MMP). e2fsck and the
 *   kernel then refuse a filesystem another machine keeps updating (they wait about twice the
 *   MMP interval to see it). Without MMP, an ext4 whose journal needs recovery is either
 *   mounted elsewhere or was left so by a crash; drctl cannot tell and refuses unless this
 *   machine recorded losing it (dirty.json) or the operator says so (`attach --force`).
 * - xfs has no equivalent: only the same-machine check applies.
 */
import { makeDirs } from '../../engine/runtime/fs.js';
import { execFile } from '../../engine/runtime/exec.js';
import { IscsiAttachError, IscsiInUseError } from './errors.js';
import { describeAttach, drctlAttachOf } from './attach-record.js';
import { foundNote, inspectLun, repairCommand, type LunContent } from './lun-content.js';
import { deviceSize, mounts, oneLine, probeSignature, type Signature } from './system.js';
import type { IscsiTargetConfig } from './types.js';

export interface CheckOptions {
  /** Whose state folder this is (to name other attaches). */
  stateDir: string;
  /** UUID of a filesystem this machine lost while mounted: its unreplayed journal is ours. */
  dirtyUuid?: string;
  /** The operator says no other machine has it mounted (`target attach --force`). */
  force?: boolean;
}

export interface Mounted {
  uuid?: string;
  mmp: boolean;
}

/** Check the filesystem (replaying the journal after a crash), then mount it on t.mountpoint. */
export async function checkAndMount(t: IscsiTargetConfig, device: string, opts: CheckOptions): Promise<Mounted> {
  const sig = await probeSignature(device);
  if (!sig.type) throw await noFilesystemError(t, device);
  if (sig.type !== t.filesystem) {
    throw new IscsiAttachError(`target ${t.name}: LUN ${t.lun} holds ${sig.type}, but ${t.file} says filesystem: ${t.filesystem}`,
      `correct filesystem: in ${t.file}, or reformat with \`drctl target format ${t.name} --format --force\` (erases the LUN)`);
  }
  await refuseMountedHere(t, sig, opts.stateDir);
  let mmp = false;
  if (t.filesystem === 'ext4') {
    const info = await ext4Info(device);
    mmp = info.mmp;
    if (info.needsRecovery && !info.mmp && !opts.force && (!sig.uuid || opts.dirtyUuid !== sig.uuid)) throw cannotTellError(t);
    // A clean filesystem is left to the kernel: fsck -p would only say "clean", but with MMP
    // e2fsck always spends 2 × the MMP interval (11 s or more) making sure no other machine
    // uses it — which the kernel's mount checks too, at once when the filesystem is clean.
    const r = info.clean ? { code: 0, stdout: '', stderr: '' } : await execFile('fsck.ext4', ['-p', device]);
    // -p repairs what is safe to repair without asking; 1 and 2 mean "errors corrected".
    const out = r.stdout + r.stderr;
    if (r.code >= 4 && /MMP/.test(out)) throw inUseError(t, await ext4Info(device));
    if (r.code >= 4) {
      // fsck names the device, which is released before the operator reads this.
      throw new IscsiAttachError(`target ${t.name}: the ext4 filesystem on LUN ${t.lun} of ${t.iqn} has errors fsck cannot fix automatically - ${oneLine(out.split(`${device}: `).join(''))}`,
        `attach it without mounting: \`drctl target attach ${t.name} --no-mount\` (prints its device), run \`e2fsck -f DEVICE\`, then \`drctl target detach ${t.name}\` and attach again`);
    }
  }
  // xfs replays its log at mount time; xfs_repair is only for a filesystem that will not mount.
  await makeDirs(t.mountpoint);
  const m = await execFile('mount', ['-t', t.filesystem, device, t.mountpoint]);
  if (m.code !== 0) {
    // The kernel's MMP check fails a mount as "already mounted or mount point busy".
    if (mmp && (await ext4Info(device)).mmpActive) throw inUseError(t, await ext4Info(device));
    const why = oneLine((m.stderr || m.stdout).replace(/^mount: /gm, '').replace(/\s*dmesg\(1\) may have more information.*$/m, ''));
    // EUCLEAN: the filesystem is damaged in a way fsck -p did not see (it trusts a "clean" flag).
    const damaged = /Structure needs cleaning|bad superblock|corrupt/i.test(m.stderr);
    throw new IscsiAttachError(`target ${t.name}: mounting LUN ${t.lun} of ${t.iqn} on ${t.mountpoint} failed - ${why}`,
      damaged ? `repair it: \`drctl target attach ${t.name} --no-mount\` prints its DEVICE; run \`${t.filesystem === 'ext4' ? 'e2fsck -f' : 'xfs_repair'} DEVICE\` on it, then \`drctl target detach ${t.name}\` and attach again` : 'the kernel log (dmesg) says why');
  }
  return { ...(sig.uuid ? { uuid: sig.uuid } : {}), mmp };
}

/**
 * Refuse when a filesystem with this UUID is mounted on this machine (through another target
 * name, state folder or device): checking or mounting it a second time corrupts it.
 */
export async function refuseMountedHere(t: IscsiTargetConfig, sig: Signature, stateDir: string): Promise<void> {
  if (!sig.uuid) return;
  const seen = new Set<string>();
  for (const m of await mounts()) {
    if (m.fstype !== sig.type || !m.source.startsWith('/dev/') || seen.has(m.source)) continue;
    seen.add(m.source);
    const theirs = await probeSignature(m.source, { timeoutMs: 5000 }).catch(() => undefined);
    if (theirs?.uuid !== sig.uuid) continue;
    const owner = await drctlAttachOf(m.source);
    const who = owner ? await describeAttach(owner, stateDir) : undefined;
    throw new IscsiInUseError(
      `target ${t.name}: the ${sig.type} filesystem on LUN ${t.lun} of ${t.iqn} (UUID ${sig.uuid}) is already mounted on ${m.mountpoint}${who ? ` by ${who}` : ''} - mounting it a second time would corrupt it`,
      !owner ? `unmount ${m.mountpoint} first`
        : who === `target ${owner.name}` ? `it is the same LUN: use target ${owner.name}, or detach it first (\`drctl target detach ${owner.name}\`)`
          : `detach it there first: \`drctl target detach ${owner.name} --state ${owner.stateDir}\``);
  }
}

export interface Ext4Info {
  mmp: boolean;
  needsRecovery: boolean;
  /** Nothing for fsck -p to do: state clean, journal empty, no check due by mount count. */
  clean: boolean;
  /** The MMP block says someone has it open (not "clean", not "fsck done"). */
  mmpActive: boolean;
  mmpNode?: string;
  mmpDevice?: string;
}

const MMP_SEQ_CLEAN = 0xff4d4d50;

/** What dumpe2fs -h says about features and multi-mount protection (reads only the superblock and MMP block). */
export async function ext4Info(device: string): Promise<Ext4Info> {
  const r = await execFile('dumpe2fs', ['-h', device]);
  const field = (name: string): string | undefined => new RegExp(`^\\s*${name}:\\s*(.*)$`, 'm').exec(r.stdout)?.[1]?.trim();
  const features = (field('Filesystem features') ?? '').split(/\s+/);
  const seq = Number(field('mmp_sequence') ?? NaN);
  const mounts = Number(field('Mount count') ?? 0);
  const maxMounts = Number(field('Maximum mount count') ?? -1);
  const due = maxMounts > 0 && mounts >= maxMounts;
  return {
    mmp: features.includes('mmp'),
    needsRecovery: features.includes('needs_recovery'),
    clean: r.code === 0 && field('Filesystem state') === 'clean' && !features.includes('needs_recovery') && !due,
    mmpActive: features.includes('mmp') && Number.isFinite(seq) && seq !== MMP_SEQ_CLEAN,
    ...(field('mmp_node_name') ? { mmpNode: field('mmp_node_name') } : {}),
    ...(field('mmp_device_name') ? { mmpDevice: field('mmp_device_name') } : {}),
  };
}

function inUseError(t: IscsiTargetConfig, info: Ext4Info): IscsiInUseError {
  const last = info.mmpNode ? ` (multi-mount protection: last updated by node ${info.mmpNode}${info.mmpDevice ? `, device ${info.mmpDevice}` : ''})` : ' (multi-mount protection)';
  return new IscsiInUseError(`target ${t.name}: the ext4 filesystem on LUN ${t.lun} of ${t.iqn} at ${t.portal} is in use by another machine${last} - nothing was checked or mounted`,
    `detach it there first (\`drctl target detach ${t.name}\` on ${info.mmpNode ?? 'that machine'}); if that machine crashed, attach again: the protection lets go once it has stopped updating the filesystem`);
}

function cannotTellError(t: IscsiTargetConfig): IscsiInUseError {
  return new IscsiInUseError(
    `target ${t.name}: the ext4 filesystem on LUN ${t.lun} of ${t.iqn} at ${t.portal} was not unmounted cleanly (its journal needs recovery) and has no multi-mount protection, so drctl cannot tell whether another machine has it mounted now - nothing was checked or mounted`,
    `make sure no other machine uses it (\`drctl target detach ${t.name}\` there); if none does (a crash or a storage outage left it so), \`drctl target attach ${t.name} --force\` replays the journal; then enable multi-mount protection (\`tune2fs -O mmp\`, see README "Shared LUNs")`);
}

/** The LUN has no filesystem signature: say whether it is empty, and never advise formatting a LUN that holds data. */
export async function noFilesystemError(t: IscsiTargetConfig, device: string): Promise<IscsiAttachError> {
  const p = noFilesystemProblem(t, await inspectLun(device, (await deviceSize(device)) ?? 0));
  return new IscsiAttachError(`target ${t.name}: ${p.message}`, p.hint);
}

export function noFilesystemProblem(t: IscsiTargetConfig, c: LunContent): { message: string; hint: string } {
  if (c.empty) {
    return { message: `LUN ${t.lun} of ${t.iqn} at ${t.portal} holds no filesystem (it reads as zeros: a new LUN)`, hint: `format it once with \`drctl target format ${t.name} --format\`` };
  }
  return {
    message: `LUN ${t.lun} of ${t.iqn} at ${t.portal} holds data but no filesystem drctl recognises${foundNote(c)}`,
    hint: `if it held the repository, repair it: ${repairSteps(t, c)}; do not format it (that erases it)`,
  };
}

/** `drctl target attach NAME --no-mount`, the repair command, detach, attach. */
export function repairSteps(t: IscsiTargetConfig, c: LunContent): string {
  return `\`drctl target attach ${t.name} --no-mount\` prints its DEVICE; run \`${repairCommand(t.filesystem, c)}\` on it, then \`drctl target detach ${t.name}\` and attach again`;
}
