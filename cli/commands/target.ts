/**
 * `drctl target test|attach|detach|format|df NAME`: the volumes of the config folder. Attaching
 * is shared with jobs through the attach state in the state folder (targets/iscsi/volume.ts):
 * `attach` keeps the volume attached until `detach`; jobs attach and detach on their own.
 */
import { randomBytes } from 'node:crypto';
import { readdir, stat, statfs, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { displayPath, loadConfig, type TargetConfig } from '../../policies/config.js';
import { ExitCode, TargetIoError, UsageError, errnoCode, isDrError } from '../../engine/errors.js';
import { Keys, Repository } from '../../engine/repo/index.js';
import { LocalTarget, openLocalTarget } from '../../targets/index.js';
import {
  acquireVolume, chooseStrategy, describeUsers, detachVolume, formatLun, inspectTargetLun, probePortal, IscsiInUseError, type IscsiTargetConfig,
} from '../../targets/iscsi/index.js';
import { printJson, say, type CliContext, type OutputOptions } from '../context.js';
import { configDir, type ConfigOptions } from '../config-option.js';
import { stateDir, type StateOptions } from '../wiring.js';
import { bytes } from '../format.js';
import type { CommandSpec } from '../command.js';

type Opts = ConfigOptions & StateOptions & OutputOptions & { format?: boolean; force?: boolean; mount?: boolean };

async function loadTarget(ctx: CliContext, opts: Opts, name: string | undefined): Promise<TargetConfig> {
  const dir = configDir(ctx, opts);
  const config = await loadConfig(dir);
  const t = name ? config.targets.get(name) : undefined;
  if (!t) {
    const bad = config.problems.find((p) => p.file.endsWith(`/targets/${name}.yaml`) || p.file.endsWith(`/targets/${name}.yml`));
    if (bad) throw new UsageError(`target ${name}: ${bad.file}:${bad.line}:${bad.column}: ${bad.path ? `${bad.path}: ` : ''}${bad.message}`, bad.fix ?? 'run `drctl policy validate` for every problem');
    throw new UsageError(`target ${name ?? ''} is not defined in ${dir}/targets`,
      config.targets.size ? `known targets: ${[...config.targets.keys()].join(', ')}` : `create ${dir}/targets/${name}.yaml (see README, "Targets: local and iSCSI")`);
  }
  return t;
}

function iscsiOnly(t: TargetConfig, verb: string): IscsiTargetConfig {
  if (t.type !== 'iscsi') throw new UsageError(`target ${t.name} is a local folder (${t.path}): there is nothing to ${verb}`, 'target attach/detach/format apply to iSCSI targets');
  return t;
}

async function space(path: string): Promise<{ sizeBytes: number; freeBytes: number; usedBytes: number }> {
  const st = await statfs(path);
  return { sizeBytes: st.blocks * st.bsize, freeBytes: st.bavail * st.bsize, usedBytes: (st.blocks - st.bfree) * st.bsize };
}

/** Run fn with the volume mounted: joins an existing attach, else attaches for the duration. */
async function withMounted<T>(t: IscsiTargetConfig, state: string, fn: () => Promise<T>): Promise<T> {
  const lease = await acquireVolume(t, state);
  try {
    return await fn();
  } finally {
    await lease.release();
  }
}

const common = { options: [] as { flags: string; description: string }[] };

export const targetTestCommand: CommandSpec<Opts> = {
  name: 'target test', args: '<name>', ...common,
  summary: 'check a target: local: a writable folder holding a repository (or empty); iSCSI: portal reachable, CHAP login, LUN size, filesystem; free space',
  exitCodes: '0 all checks passed · 1 a check failed (named, one line each: missing path, not a folder, not a repository, not writable …) · 2 unknown or invalid target file',
  async run(ctx, opts, args) {
    const t = await loadTarget(ctx, opts, args[0]);
    if (t.type === 'local') {
      const r = await checkLocalTarget(t);
      if (opts.json) printJson(ctx, { target: t.name, type: 'local', path: t.path, ...r, ...(r.problems.length ? { error: r.problems[0] } : {}) });
      else if (r.ok) say(ctx, opts, `target ${t.name}: local folder ${t.path}, ${r.repository === 'empty' ? `empty - no repository yet: the first backup creates one (or \`drctl init --target ${t.name}\`)` : `repository format ${String(r.formatVersion)}`}, writable, ${bytes(r.freeBytes ?? 0)} free of ${bytes(r.sizeBytes ?? 0)}`);
      if (!opts.json) for (const p of r.problems) ctx.stderr.write(`drctl: target ${t.name} (${displayPath(t.file)}): ${p}\n`);
      return r.ok ? ExitCode.ok : ExitCode.failed;
    }
    const report: Record<string, unknown> = { target: t.name, type: 'iscsi', portal: t.portal, iqn: t.iqn, lun: t.lun };
    const started = Date.now();
    const reach = await probePortal(t.portal, 5000);
    Object.assign(report, { reachable: !reach, connectMs: Date.now() - started, ...(reach ? { error: `portal ${t.portal} unreachable (${reach})` } : {}) });
    if (!reach) {
      try {
        report.strategy = await chooseStrategy(t);
        const lun = await inspectTargetLun(t, stateDir(ctx, opts));
        report.attached = lun.attached ?? false;
        report.login = 'ok';
        report.chap = t.chap ? 'accepted' : 'not configured';
        report.filesystem = lun.filesystem;
        report.sizeBytes = lun.sizeBytes;
        if (lun.multiMountProtection !== undefined) report.multiMountProtection = lun.multiMountProtection;
        if (lun.problem) Object.assign(report, { error: lun.problem.message, hint: lun.problem.hint });
        if (!lun.problem && lun.attached !== 'block') {
          const s = await withMounted(t, stateDir(ctx, opts), () => space(t.mountpoint));
          Object.assign(report, { freeBytes: s.freeBytes, filesystemBytes: s.sizeBytes });
        }
      } catch (e) {
        // In use elsewhere (another target name, state folder): refused before any login.
        if (report.login === undefined) report.login = e instanceof IscsiInUseError ? 'skipped' : /authentication failed/.test((e as Error).message) ? 'authentication failed' : 'failed';
        report.error = (e as Error).message;
        if (isDrError(e) && e.hint) report.hint = e.hint;
      }
    }
    const ok = !report.error && report.filesystem === t.filesystem;
    if (opts.json) printJson(ctx, { ...report, ok });
    else {
      say(ctx, opts, `target ${t.name}: portal ${t.portal} ${report.reachable ? `reachable (${String(report.connectMs)} ms)` : 'UNREACHABLE'}`);
      if (report.login) say(ctx, opts, `  login ${String(report.login)} (CHAP ${t.chap ? `user ${t.chap.user}` : 'off'}, ${String(report.strategy)} attach)`);
      if (report.sizeBytes !== undefined) say(ctx, opts, `  LUN ${t.lun}: ${bytes(Number(report.sizeBytes))}, filesystem ${String(report.filesystem)}${report.multiMountProtection === false ? ' (no multi-mount protection)' : ''}${report.freeBytes !== undefined ? `, ${bytes(Number(report.freeBytes))} free` : ''}${report.attached === 'block' ? ', attached without mounting' : ''}`);
      if (report.error) ctx.stderr.write(`drctl: target ${t.name}: ${String(report.error).replace(`target ${t.name}: `, '')}${report.hint ? ` (${String(report.hint)})` : ''}\n`);
    }
    return ok ? ExitCode.ok : ExitCode.failed;
  },
};

interface LocalCheck {
  ok: boolean;
  /** 'empty': a folder without a repository yet, which backups (and `drctl init`) fill. */
  repository?: 'ok' | 'empty';
  formatVersion?: number;
  writable?: boolean;
  freeBytes?: number;
  sizeBytes?: number;
  /** One line each: what is wrong with the path, then what to do. */
  problems: string[];
}

/**
 * What a job needs of a local target (engine/jobs/runner.ts openRepository): a folder that holds
 * a repository of a format this drctl reads, or nothing yet (a backup creates the repository
 * then), on a volume it can write to.
 */
async function checkLocalTarget(t: Extract<TargetConfig, { type: 'local' }>): Promise<LocalCheck> {
  const problem = await localPathProblem(t);
  if (problem) return { ok: false, problems: [problem] };
  const path = t.path;
  const out: LocalCheck = { ok: false, problems: [] };
  await inspectRepository(path, out);
  await probeWrite(path, out);
  const s = await space(path).catch(() => undefined);
  if (s) Object.assign(out, { freeBytes: s.freeBytes, sizeBytes: s.sizeBytes });
  out.ok = out.problems.length === 0;
  return out;
}

/**
 * A missing path, one that cannot be read, or not a folder: one line, what is wrong then what to
 * do - the check a job makes when it opens the target (LocalTarget.openFolder), in its words.
 */
async function localPathProblem(t: Extract<TargetConfig, { type: 'local' }>): Promise<string | undefined> {
  try {
    await LocalTarget.openFolder(t.path, t.name);
    return undefined;
  } catch (e) {
    if (!(e instanceof TargetIoError)) throw e;
    return `${e.message.replace(`target ${t.name}: `, '')}${e.hint ? ` - ${e.hint}` : ''}`;
  }
}

async function inspectRepository(path: string, out: LocalCheck): Promise<void> {
  let names: string[];
  try {
    // The runner's "empty" ignores the same two: temp files of writes, and ext4's lost+found.
    names = (await readdir(path)).filter((n) => n !== 'tmp' && n !== 'lost+found');
  } catch (e) {
    out.problems.push(`${path} cannot be listed - ${(e as Error).message} - give drctl read access to it`);
    return;
  }
  if (names.length === 0) {
    out.repository = 'empty';
    return;
  }
  if (!names.includes(Keys.config)) {
    out.problems.push(`${path} holds other files but no drctl repository (no ${Keys.config}) - point path: at the repository's folder, or at an empty or new folder`);
    return;
  }
  try {
    out.formatVersion = (await Repository.readConfig(await openLocalTarget(path))).formatVersion;
    out.repository = 'ok';
  } catch (e) {
    // The same check every command makes when it opens the repository, and its advice.
    if (!isDrError(e)) throw e;
    out.problems.push(`${e.message.split('\n').join('; ')}${e.hint ? ` - ${e.hint}` : ''}`);
  }
}

const WRITE_HINTS: Record<string, string> = {
  EROFS: 'its filesystem is mounted read-only: remount it read-write (`mount -o remount,rw`) or choose another path',
  EACCES: 'give the user drctl runs as write access to it',
  EPERM: 'give the user drctl runs as write access to it',
  ENOSPC: 'its volume is full: free space (`drctl prune`) or choose a larger volume',
  EDQUOT: 'the disk quota is used up: raise it or choose another volume',
};

/** Create and remove a file where writes start (tmp/, else the folder itself). */
async function probeWrite(path: string, out: LocalCheck): Promise<void> {
  const tmp = join(path, 'tmp');
  const dir = (await stat(tmp).then((s) => s.isDirectory(), () => false)) ? tmp : path;
  const probe = join(dir, `.drctl-target-test.${randomBytes(6).toString('hex')}`);
  try {
    await writeFile(probe, '', { flag: 'wx' });
    await unlink(probe);
    out.writable = true;
  } catch (e) {
    out.writable = false;
    const code = errnoCode(e) ?? '';
    out.problems.push(`${path} is not writable (${code || (e as Error).message}${dir === tmp ? ' in tmp/' : ''}) - ${WRITE_HINTS[code] ?? 'check that its volume is mounted and healthy'}`);
  }
}

export const targetAttachCommand: CommandSpec<Opts> = {
  name: 'target attach', args: '<name>',
  options: [
    { flags: '--no-mount', description: 'attach the LUN\'s block device only and print it (to repair its filesystem by hand); `target detach` releases it' },
    { flags: '--force', description: 'an ext4 without multi-mount protection whose journal needs recovery: replay it (say so only when no other machine has it mounted)' },
  ],
  summary: 'attach an iSCSI target: log in, check the filesystem and mount it (stays attached until `target detach`)',
  exitCodes: '0 attached (or already attached) · 1 attach failed (authentication, portal, filesystem, in use elsewhere) · 2 unknown or invalid target',
  async run(ctx, opts, args) {
    const t = iscsiOnly(await loadTarget(ctx, opts, args[0]), 'attach');
    if (opts.mount === false) {
      const lease = await acquireVolume(t, stateDir(ctx, opts), { manual: true, mount: false });
      if (opts.json) printJson(ctx, { target: t.name, attached: true, mounted: false, strategy: lease.state.strategy, device: lease.state.device });
      else say(ctx, opts, `target ${t.name}: LUN ${t.lun} of ${t.iqn} at ${t.portal} attached without mounting as ${lease.state.device} - repair or inspect it there (e.g. \`e2fsck -f ${lease.state.device}\`), then \`drctl target detach ${t.name}\``);
      return ExitCode.ok;
    }
    const lease = await acquireVolume(t, stateDir(ctx, opts), { manual: true, ...(opts.force ? { force: true } : {}) });
    const s = await space(t.mountpoint);
    const info = { target: t.name, attached: true, mounted: true, strategy: lease.state.strategy, device: lease.state.device, mountpoint: t.mountpoint, ...(lease.state.mmp !== undefined ? { multiMountProtection: lease.state.mmp } : {}), ...s };
    if (opts.json) printJson(ctx, info);
    else {
      say(ctx, opts, `target ${t.name}: LUN ${t.lun} of ${t.iqn} at ${t.portal} mounted on ${t.mountpoint} (${lease.state.strategy}, ${lease.state.device}), ${bytes(s.freeBytes)} free of ${bytes(s.sizeBytes)}`);
      if (lease.state.mmp === false && t.filesystem === 'ext4') {
        ctx.stderr.write(`drctl: note: target ${t.name}: its ext4 has no multi-mount protection, so nothing stops another machine from mounting it at the same time (which corrupts it) - see README "Shared LUNs" to enable it\n`);
      }
    }
    return ExitCode.ok;
  },
};

export const targetDetachCommand: CommandSpec<Opts> = {
  name: 'target detach', args: '<name>',
  options: [{ flags: '--force', description: 'detach even while jobs or other processes use the volume (they fail with I/O errors)' }],
  summary: 'unmount and log out of an iSCSI target; refuses while anything uses it; safe after a crash (cleans up what is left)',
  exitCodes: '0 detached (or was not attached) · 1 in use (the processes are named; it stays attached), mounted by another state folder, or cleanup failed · 2 unknown or invalid target',
  async run(ctx, opts, args) {
    const t = iscsiOnly(await loadTarget(ctx, opts, args[0]), 'detach');
    const r = await detachVolume(t, stateDir(ctx, opts), { force: !!opts.force });
    if (opts.json) printJson(ctx, { target: t.name, detached: true, wasAttached: r.wasAttached, ...(r.forcedUsers.length ? { forcedUsers: r.forcedUsers } : {}) });
    else say(ctx, opts, r.wasAttached ? `target ${t.name}: detached` : `target ${t.name}: was not attached`);
    if (r.forcedUsers.length && !opts.json) {
      ctx.stderr.write(`drctl: warning: target ${t.name} was detached while in use: ${describeUsers(r.forcedUsers)} - they now fail with I/O errors\n`);
    }
    return ExitCode.ok;
  },
};

export const targetFormatCommand: CommandSpec<Opts> = {
  name: 'target format', args: '<name>',
  options: [
    { flags: '--format', description: 'really create the filesystem (required: formatting erases the LUN)' },
    { flags: '--force', description: 'also when the LUN holds a filesystem, a partition table or any data (erases it)' },
  ],
  summary: 'create the target\'s filesystem (ext4 with multi-mount protection, or xfs) on its LUN; refuses a LUN that holds data unless --force',
  exitCodes: '0 formatted · 1 attach or mkfs failed, or the filesystem is mounted on this machine · 2 no --format, the LUN holds data (no --force), attached, or unknown target',
  async run(ctx, opts, args) {
    const t = iscsiOnly(await loadTarget(ctx, opts, args[0]), 'format');
    if (!opts.format) throw new UsageError(`target ${t.name}: formatting erases LUN ${t.lun} of ${t.iqn} at ${t.portal} - nothing was done`, `add --format to create an empty ${t.filesystem} filesystem`);
    const result = await formatLun(t, stateDir(ctx, opts), { force: !!opts.force });
    if (opts.json) printJson(ctx, { target: t.name, formatted: true, filesystem: t.filesystem, ...result });
    else say(ctx, opts, `target ${t.name}: LUN ${t.lun} formatted ${t.filesystem}${result.mmp ? ' with multi-mount protection' : ''}${result.erased ? ` (erased ${result.erased})` : ''}${result.sizeBytes ? `, ${bytes(result.sizeBytes)}` : ''}; \`drctl target attach ${t.name}\` mounts it`);
    return ExitCode.ok;
  },
};

export const targetDfCommand: CommandSpec<Opts> = {
  name: 'target df', args: '<name>', ...common,
  summary: 'size, used and free space of a target\'s volume (attaches an iSCSI target for the moment if needed)',
  exitCodes: '0 shown · 1 attach failed · 2 unknown or invalid target',
  async run(ctx, opts, args) {
    const t = await loadTarget(ctx, opts, args[0]);
    const path = t.type === 'local' ? t.path : t.mountpoint;
    if (t.type === 'local') {
      // The same one line `target test` prints for a path that is missing or not a folder.
      const problem = await localPathProblem(t);
      if (problem) throw new TargetIoError(`target ${t.name} (${displayPath(t.file)}): ${problem}`);
    }
    const s = t.type === 'local' ? await space(t.path) : await withMounted(t, stateDir(ctx, opts), () => space(t.mountpoint));
    if (opts.json) printJson(ctx, { target: t.name, path, ...s });
    else say(ctx, opts, `target ${t.name} (${path}): ${bytes(s.sizeBytes)} size, ${bytes(s.usedBytes)} used, ${bytes(s.freeBytes)} free`);
    return ExitCode.ok;
  },
};

export const targetCommands = [targetTestCommand, targetAttachCommand, targetDetachCommand, targetFormatCommand, targetDfCommand];
