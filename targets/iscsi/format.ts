/**
 * `drctl target format` and what `drctl target test` reports about a LUN: both look at the
 * LUN's block device without mounting it (volume.ts withBlockDevice).
 *
 * Formatting without --force proceeds only on a LUN that holds nothing: no signature blkid
 * knows *and* zeros where any used LUN has data (lun-content.ts). A filesystem mounted on this
 * machine is never formatted, not even with --force. ext4 is made with multi-mount protection
 * (filesystem.ts says why).
 */
import { UsageError } from '../../engine/errors.js';
import { execFile } from '../../engine/runtime/exec.js';
import { IscsiAttachError } from './errors.js';
import { ext4Info, noFilesystemProblem, refuseMountedHere, repairSteps } from './filesystem.js';
import { foundNote, inspectLun } from './lun-content.js';
import { deviceSize, probeSignature } from './system.js';
import { recordedAttach, withBlockDevice } from './volume.js';
import type { IscsiTargetConfig } from './types.js';

export interface FormatResult {
  /** What was on the LUN and is now erased (--force). */
  erased?: string;
  sizeBytes?: number;
  /** ext4 made with multi-mount protection. */
  mmp: boolean;
}

export async function formatLun(t: IscsiTargetConfig, stateDir: string, opts: { force?: boolean } = {}): Promise<FormatResult> {
  return withBlockDevice(t, stateDir, async (device) => {
    const sig = await probeSignature(device);
    await refuseMountedHere(t, sig, stateDir);
    const sizeBytes = await deviceSize(device);
    let erased = sig.type || undefined;
    if (sig.type && !opts.force) {
      throw new UsageError(`target ${t.name}: LUN ${t.lun} of ${t.iqn} already holds ${sig.type} - refusing to format it`, 'add --force to erase it (every point on it is lost)');
    }
    if (!sig.type) {
      const c = await inspectLun(device, sizeBytes ?? 0);
      if (!c.empty && !opts.force) {
        throw new UsageError(`target ${t.name}: LUN ${t.lun} of ${t.iqn} holds data but no filesystem drctl recognises${foundNote(c)} - refusing to format it`,
          `if it held the repository, repair it: ${repairSteps(t, c)} - or add --force to erase it (everything on it is lost)`);
      }
      if (!c.empty) erased = 'data without a filesystem signature';
    }
    if (sig.type) await mkfs(t, 'wipefs', ['--all', '--quiet', device]);
    // mmp: another machine (a spare DR node) cannot mount it while this one has it mounted.
    if (t.filesystem === 'ext4') await mkfs(t, 'mkfs.ext4', ['-F', '-q', '-L', 'drctl', '-O', 'mmp', '-E', 'nodiscard', device]);
    else await mkfs(t, 'mkfs.xfs', ['-f', '-q', '-K', '-L', 'drctl', device]);
    return { ...(erased ? { erased } : {}), ...(sizeBytes ? { sizeBytes } : {}), mmp: t.filesystem === 'ext4' };
  });
}

async function mkfs(t: IscsiTargetConfig, cmd: string, args: string[]): Promise<void> {
  const r = await execFile(cmd, args);
  if (r.code !== 0) throw new IscsiAttachError(`target ${t.name}: ${cmd} on LUN ${t.lun} failed - ${toolReason(r.stderr || r.stdout)}`, 'check the LUN with `drctl target test`');
}

/**
 * The line of a tool's output that says why it failed. mkfs.xfs prints the reason
 * ("Filesystem must be larger than 300MB.") and then its whole usage text.
 */
export function toolReason(output: string): string {
  const lines = output.split('\n').map((l) => l.trim()).filter(Boolean);
  const usage = lines.findIndex((l) => /^usage:/i.test(l));
  const why = usage > 0 ? lines.slice(0, usage) : usage === 0 ? [] : lines;
  return why.slice(-2).join('; ').slice(0, 300) || lines[0] || 'no output';
}

export interface LunReport {
  sizeBytes?: number;
  /** The filesystem found, 'none' (the LUN reads as zeros) or 'unrecognised data'. */
  filesystem: string;
  uuid?: string;
  /** ext4 only: formatted with multi-mount protection. */
  multiMountProtection?: boolean;
  /** 'mounted', 'block' (attached without mounting), or undefined when not attached. */
  attached?: 'mounted' | 'block';
  /** What is wrong with the LUN for this target, and what to do: one line each. */
  problem?: { message: string; hint: string };
}

/** What is on the target's LUN (attached or not); never changes it. */
export async function inspectTargetLun(t: IscsiTargetConfig, stateDir: string): Promise<LunReport> {
  const rec = await recordedAttach(t, stateDir);
  const look = async (device: string): Promise<LunReport> => {
    const sig = await probeSignature(device);
    const sizeBytes = await deviceSize(device);
    const out: LunReport = { filesystem: sig.type, ...(sizeBytes !== undefined ? { sizeBytes } : {}), ...(sig.uuid ? { uuid: sig.uuid } : {}) };
    if (sig.type === 'ext4') out.multiMountProtection = (await ext4Info(device)).mmp;
    if (!sig.type) {
      const c = await inspectLun(device, sizeBytes ?? 0);
      out.filesystem = c.empty ? 'none' : 'unrecognised data';
      out.problem = noFilesystemProblem(t, c);
    } else if (sig.type !== t.filesystem) {
      out.problem = { message: `LUN ${t.lun} holds ${sig.type}, but ${t.file} says filesystem: ${t.filesystem}`, hint: `correct filesystem: in ${t.file}, or reformat with \`drctl target format ${t.name} --format --force\` (erases the LUN)` };
    }
    return out;
  };
  if (rec) return { ...(await look(rec.device)), attached: rec.phase === 'block' ? 'block' : 'mounted' };
  return withBlockDevice(t, stateDir, look);
}
