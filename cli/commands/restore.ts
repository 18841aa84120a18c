import { realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { ExitCode, UsageError } from '../../engine/errors.js';
import { printJson, say, type CliContext, type OutputOptions } from '../context.js';
import { cliLockWait, lockWaitOption, openRepo, type RepoOptions } from '../repo-option.js';
import { progressLine } from '../progress.js';
import { bytes, duration, printable, rate } from '../format.js';
import type { CommandSpec } from '../command.js';
import type { ConfigOptions } from '../config-option.js';
import type { Repository, Point } from '../../engine/repo/index.js';
import type { LibvirtHost } from '../../engine/hosts/index.js';
import { restoreAsNewVm, restoreFiles, restoreImage, restoreToOriginalVm } from '../../engine/restore/index.js';
import { backupVm } from '../../engine/backup/index.js';

type Opts = RepoOptions & OutputOptions & ConfigOptions & {
  to?: string; include?: string[]; overwrite?: boolean; name?: string;
  host?: string; as?: string; storage?: string; network?: boolean; start?: boolean; force?: boolean; safetyPoint?: boolean; shutdownTimeout?: string; resizeDisks?: boolean;
};

export const restoreCommand: CommandSpec<Opts> = {
  name: 'restore',
  summary: 'restore a recovery point: a disk image to a file, files to a folder or a .zip/.tar',
  args: '<point>',
  options: [
    { flags: '--to <dest>', description: 'destination: for VM points a raw image file (.qcow2: converted), a folder, or a block device (with --overwrite); for file points a folder, or an archive ending in .zip, .tar, .tar.gz' },
    { flags: '--include <path>', description: 'restore only this path of a file point (repeatable)', repeatable: true },
    { flags: '--overwrite', description: 'replace existing files at the destination; write a disk onto a block device' },
    { flags: '--name <name>', description: 'with `latest`: the newest point of this name' },
    { flags: '--host <name>', description: 'VM points: restore onto this libvirt host (config folder); without --as, onto the original VM' },
    { flags: '--as <vm>', description: 'with --host: define a new VM of this name (new UUID and MAC addresses)' },
    { flags: '--storage <dir|pool>', description: 'with --as: folder on the host, or libvirt storage pool, for the new disk images (default: next to the original ones)' },
    { flags: '--no-network', description: 'with --as: leave out the network interfaces' },
    { flags: '--start', description: 'start the VM afterwards: the new VM with --as; the original VM also when it was off (it is restarted anyway if it was running)' },
    { flags: '--force', description: 'original VM: shut it down if it runs (graceful, then hard after --shutdown-timeout)' },
    { flags: '--shutdown-timeout <seconds>', description: 'original VM: wait this long for a graceful shutdown (default 60)' },
    { flags: '--no-safety-point', description: 'original VM: do not take a point of the current state first' },
    lockWaitOption(),
    { flags: '--resize-disks', description: 'original VM: resize a disk whose size differs from the point\'s to the point\'s size (while the VM is off) instead of refusing' },
  ],
  exitCodes: '0 restored · 1 failed or interrupted (damaged data, destination full: an image file is left as it was, a block device partly written) · 2 bad arguments, unknown point, destination exists, in the repository or not writable as an image (or a VM disk whose size differs from the point\'s without --resize-disks, an invalid --as name, a network or bridge missing on the host) · 3 a .zip left out items it cannot name (listed)',
  async run(ctx: CliContext, opts: Opts, args: string[]) {
    if (opts.host) return restoreVm(ctx, opts, args[0] as string);
    if (opts.as) throw new UsageError('--as needs --host NODE', 'e.g. `drctl restore POINT --host hv2 --as web01-copy`');
    if (!opts.to) throw new UsageError('restore needs --to DEST', 'e.g. `drctl restore latest --name web01 --to /tmp/web01.img`');
    // An empty --include (an unset shell variable) would otherwise mean the whole point.
    if (opts.include?.includes('')) throw new UsageError('--include was given an empty path', 'give a path inside the point, such as --include docs/q3.xlsx, or leave --include out to restore everything');
    const repo = await openRepo(ctx, opts);
    const point = await repo.resolvePoint(args[0] as string, opts.name);
    const dest = resolve(opts.to) + (opts.to.endsWith('/') ? '/' : '');
    if (point.kind === 'vm' && opts.include?.length) throw new UsageError('--include applies to file-level points', 'restore the whole disk, then mount it to pick files');
    await refuseInsideRepository(dest, repo);
    const lock = await repo.lock('shared', `drctl restore ${point.id.slice(0, 12)}`, cliLockWait(ctx, opts, { readOnly: true }));
    const progress = progressLine(ctx, opts);
    const t0 = performance.now();
    try {
      if (point.kind === 'vm') {
        const r = await restoreImage(repo, point, dest, { overwrite: opts.overwrite, signal: ctx.signal, onProgress: progress.update });
        progress.done();
        if (opts.json) printJson(ctx, { point: point.id, kind: point.kind, files: r.files, bytesWritten: r.bytesWritten, logicalBytes: r.logicalBytes, durationMs: r.durationMs });
        for (const f of r.files) say(ctx, opts, `restored ${point.name} (point ${point.id.slice(0, 12)}, ${point.time}) to ${f}`);
        const how = r.devices.length ? `written, the rest of the disk zeroed on ${r.devices.join(', ')}` : 'written (sparse)';
        say(ctx, opts, `  ${bytes(r.logicalBytes)} disk, ${bytes(r.bytesWritten)} ${how}, ${duration(r.durationMs)} (${rate(r.logicalBytes, r.durationMs)}), every chunk verified`);
      } else {
        const r = await restoreFiles(repo, point, dest, { include: opts.include, overwrite: opts.overwrite, signal: ctx.signal, onProgress: progress.update, warn: (line) => ctx.stderr.write(`warning: ${line}\n`) });
        progress.done();
        if (opts.json) printJson(ctx, { point: point.id, kind: point.kind, dest: r.dest, files: r.files, dirs: r.dirs, bytes: r.bytes, durationMs: r.durationMs, skipped: r.skipped ?? [] });
        say(ctx, opts, `restored ${point.name} (point ${point.id.slice(0, 12)}, ${point.time}) to ${r.dest}`);
        say(ctx, opts, `  ${r.files} files, ${r.dirs} folders, ${bytes(r.bytes)} in ${duration(r.durationMs)} (${rate(r.bytes, performance.now() - t0)}), every chunk verified`);
        for (const s of r.skipped ?? []) ctx.stderr.write(`not restored ${printable(s.path)}: ${s.why}\n`);
        if (r.skipped?.length) {
          ctx.stderr.write(`restore is partial: ${r.skipped.length} item(s) not in ${r.dest} (listed above)\n`);
          return ExitCode.partial;
        }
      }
    } finally {
      progress.done();
      await lock.release();
    }
    return 0;
  },
};

/**
 * A restore into the repository would write among its packs and index files, and `drctl
 * prune` or `repair` would later see them as damage or delete them. Compared through symlinks.
 */
async function refuseInsideRepository(dest: string, repo: Repository): Promise<void> {
  if (!isAbsolute(repo.location)) return; // not a local folder
  const [to, root] = await Promise.all([realPathOf(dest), realPathOf(repo.location)]);
  const rel = relative(root, to);
  if (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel)) {
    throw new UsageError(`restore destination ${dest} is inside the repository ${repo.location} - nothing was written`, 'give --to a place outside the repository folder');
  }
}

/** `path` with its longest existing part resolved through symlinks (the rest may not exist yet). */
async function realPathOf(path: string): Promise<string> {
  const rest: string[] = [];
  for (let p = resolve(path); ; p = dirname(p)) {
    const real = await realpath(p).catch(() => undefined);
    if (real !== undefined) return join(real, ...rest.reverse());
    if (dirname(p) === p) return resolve(path);
    rest.push(basename(p));
  }
}

/** `restore POINT --host NODE [--as NEW]`: a libvirt VM point onto a host. */
async function restoreVm(ctx: CliContext, opts: Opts, spec: string): Promise<number> {
  if (opts.to) throw new UsageError('give --to (an image file) or --host (a VM), not both');
  const repo = await openRepo(ctx, opts);
  const point = await repo.resolvePoint(spec, opts.name);
  if (point.kind !== 'vm' || !point.vm) throw new UsageError(`point ${point.id.slice(0, 12)} is not a libvirt VM point`, 'restore it with --to FILE');
  const { openConfiguredHost } = await import('../host-option.js');
  const host = await openConfiguredHost(ctx, opts, opts.host as string);
  const progress = progressLine(ctx, opts);
  try {
    if (opts.as) {
      const lock = await repo.lock('shared', `drctl restore ${point.id.slice(0, 12)}`, cliLockWait(ctx, opts, { readOnly: true }));
      try {
        const r = await restoreAsNewVm(repo, point, host, {
          name: opts.as, storage: opts.storage, noNetwork: opts.network === false, start: opts.start, signal: ctx.signal, onProgress: progress.update,
        });
        progress.done();
        if (opts.json) printJson(ctx, { point: point.id, ...r });
        say(ctx, opts, `restored ${point.name} (point ${point.id.slice(0, 12)}, ${point.time}) as new VM ${r.vm} on ${host.label}${r.started ? ', started' : ''}`);
        for (const d of r.disks) say(ctx, opts, `  ${d.dev}: ${d.path}`);
        say(ctx, opts, `  ${bytes(r.logicalBytes)} disk, ${bytes(r.bytesWritten)} written in ${duration(r.durationMs)} (${rate(r.logicalBytes, r.durationMs)})`);
      } finally {
        await lock.release();
      }
      return 0;
    }
    const timeout = opts.shutdownTimeout === undefined ? 60 : Number(opts.shutdownTimeout);
    if (!Number.isFinite(timeout) || timeout < 0) throw new UsageError(`--shutdown-timeout must be a number of seconds, got ${opts.shutdownTimeout}`);
    const safetyPoint = opts.safetyPoint === false ? undefined : () => takeSafetyPoint(ctx, opts, repo, host, point);
    const lock = await repo.lock('shared', `drctl restore ${point.id.slice(0, 12)}`, cliLockWait(ctx, opts, { readOnly: true }));
    try {
      const r = await restoreToOriginalVm(repo, point, host, {
        force: opts.force, resizeDisks: opts.resizeDisks, start: opts.start, shutdownTimeoutS: timeout, safetyPoint, signal: ctx.signal, onProgress: progress.update,
        log: progress.log,
      });
      progress.done();
      if (opts.json) printJson(ctx, { point: point.id, ...r });
      say(ctx, opts, `restored ${point.name} (point ${point.id.slice(0, 12)}, ${point.time}) onto VM ${r.vm} on ${host.label}${r.started ? ', restarted' : ''}`);
      if (r.safetyPoint) say(ctx, opts, `  safety point of the state before: ${r.safetyPoint.slice(0, 12)}`);
      say(ctx, opts, `  ${bytes(r.logicalBytes)} disk, ${bytes(r.bytesCompared)} compared, ${bytes(r.bytesWritten)} written (only differing chunks) in ${duration(r.durationMs)}`);
    } finally {
      await lock.release();
    }
    return 0;
  } finally {
    progress.done();
    await host.transport.close();
  }
}

async function takeSafetyPoint(ctx: CliContext, opts: Opts, repo: Repository, host: LibvirtHost, point: Point): Promise<Point> {
  const rec = point.vm as NonNullable<Point['vm']>;
  const state = await host.state(rec.name);
  if (state !== 'running') {
    throw new UsageError(`VM ${rec.name} is ${state}: a safety point needs a running VM (pull-mode backup)`, 'start it, or pass --no-safety-point');
  }
  const lock = await repo.lock('shared', `drctl safety point ${point.name}`, cliLockWait(ctx, opts));
  try {
    return await backupVm(repo, host, {
      name: point.name, vm: rec.name, hostName: opts.host as string, quiesce: 'preferred', clock: ctx.clock, hostname: ctx.hostname,
      signal: ctx.signal, safetyFor: point.id, ...(point.policy ? { policy: point.policy } : {}),
    });
  } finally {
    await lock.release();
  }
}
