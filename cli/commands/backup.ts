import { readFile } from 'node:fs/promises';
import type { Extent } from '../../engine/hosts/index.js';
import { ExitCode, UsageError } from '../../engine/errors.js';
import type { Point } from '../../engine/repo/index.js';
import { backupFolder, backupImage, backupVm } from '../../engine/backup/index.js';
import { startCodecPool } from '../../engine/repo/index.js';
import { printJson, say, type CliContext, type OutputOptions } from '../context.js';
import { cliLockWait, lockWaitOption, openRepo, type RepoOptions } from '../repo-option.js';
import { progressLine } from '../progress.js';
import { bytes, duration, printable, rate } from '../format.js';
import type { CommandSpec } from '../command.js';
import { configDir, type ConfigOptions } from '../config-option.js';
import type { StateOptions } from '../wiring.js';
import { basename, resolve } from 'node:path';

type Opts = RepoOptions & OutputOptions & ConfigOptions & StateOptions & { image?: string; files?: string; name?: string; changedExtents?: string; policy?: string; vm?: string; host?: string; quiesce?: string };

export const backupCommand: CommandSpec<Opts> = {
  name: 'backup',
  summary: 'back up a disk image (VM-level) or a folder (file-level) into a new recovery point',
  options: [
    lockWaitOption(),
    { flags: '--image <file>', description: 'VM-level backup of a local disk image (raw, qcow2, …)' },
    { flags: '--files <path>', description: 'file-level backup of a local folder' },
    { flags: '--name <name>', description: 'name of the protected object; points of one name form its generations (default: the file or folder name)' },
    { flags: '--policy <name>', description: 'run every source of this policy now, outside its schedule (uses --config; recorded in the catalog)' },
    { flags: '--vm <name>', description: 'VM-level backup of a libvirt VM (all disks, quiesced, incremental) on --host' },
    { flags: '--host <name>', description: 'with --vm: the host from the config folder (hosts/NAME.yaml)' },
    { flags: '--quiesce <mode>', description: 'with --vm: required (fail without a guest agent) or preferred (default: crash-consistent with a warning)' },
    { flags: '--changed-extents <file>', description: 'JSON [{"offset","length"}] of guest ranges changed since the newest point of --name: read only those' },
  ],
  exitCodes: '0 point committed · 1 failed, nothing committed · 2 bad arguments, repository, source or policy · 3 point committed, some files skipped (listed); with --policy: some sources failed',
  async run(ctx: CliContext, opts: Opts) {
    if (opts.policy) {
      if (opts.image || opts.files || opts.changedExtents || opts.repo) throw new UsageError('--policy runs the policy\'s own sources onto its own target', 'drop --image/--files/--changed-extents/--repo');
      return runPolicy(ctx, opts, opts.policy);
    }
    if (opts.vm || opts.host) return runVm(ctx, opts);
    if (!!opts.image === !!opts.files) throw new UsageError('give exactly one of --image FILE, --files PATH or --vm NAME --host HOST', 'see `drctl backup --help`');
    if (opts.changedExtents && !opts.image) throw new UsageError('--changed-extents only applies to --image backups');
    checkName(opts.name);
    const extents = opts.changedExtents ? await readExtents(opts.changedExtents) : undefined;
    startCodecPool(); // its workers start while the repository opens
    const repo = await openRepo(ctx, opts);
    const source = resolve((opts.image ?? opts.files) as string);
    const name = opts.name ?? basename(source);
    const lock = await repo.lock('shared', `drctl backup ${name}`, cliLockWait(ctx, opts));
    const progress = progressLine(ctx, opts);
    let point: Point;
    try {
      const common = { name, clock: ctx.clock, hostname: ctx.hostname, signal: ctx.signal, onProgress: progress.update };
      // Each pipeline loads its own dependencies on first call (engine/backup/index.ts).
      point = opts.image
        ? await backupImage(repo, source, { ...common, changedExtents: extents })
        : await backupFolder(repo, source, common);
    } finally {
      progress.done();
      await lock.release();
    }
    return report(ctx, opts, point, name);
  },
};

function report(ctx: CliContext, opts: Opts, point: Point, name: string): number {
    if (opts.json) printJson(ctx, point);
    const s = point.stats;
    say(ctx, opts, `point ${point.id.slice(0, 12)} committed: ${point.kind} ${name} at ${point.time}`);
    say(ctx, opts, `  ${bytes(s.logicalBytes)} protected, ${bytes(s.readBytes)} read, ${bytes(s.newBytes)} new (${bytes(s.storedNewBytes)} stored) in ${duration(s.durationMs)} (${rate(s.readBytes, s.durationMs)})`);
    if (s.files !== undefined) say(ctx, opts, `  ${s.files} files (${s.unchangedFiles ?? 0} unchanged), ${s.dirs ?? 0} folders`);
    for (const w of point.warnings ?? []) say(ctx, opts, `  warning: ${w}`);
    if (point.errors.length) {
      for (const e of point.errors.slice(0, 20)) ctx.stderr.write(`skipped ${printable(e.path)}: ${printable(e.message)}\n`);
      if (point.errors.length > 20) ctx.stderr.write(`… and ${point.errors.length - 20} more (see \`drctl points --json\`)\n`);
      ctx.stderr.write(`point ${point.id.slice(0, 12)} is partial: ${point.errors.length} item(s) skipped\n`);
      return ExitCode.partial;
    }
    return ExitCode.ok;
}

/** `drctl backup --vm NAME --host HOST`: one VM-level backup of a libvirt VM now. */
async function runVm(ctx: CliContext, opts: Opts): Promise<number> {
  if (!opts.vm || !opts.host) throw new UsageError('a VM backup needs both --vm NAME and --host HOST', 'e.g. `drctl backup --vm web01 --host hv1 --target vol1`');
  if (opts.image || opts.files || opts.changedExtents) throw new UsageError('--vm does not combine with --image, --files or --changed-extents');
  if (opts.quiesce !== undefined && opts.quiesce !== 'required' && opts.quiesce !== 'preferred') {
    throw new UsageError(`--quiesce must be required or preferred, got ${opts.quiesce}`);
  }
  const { openConfiguredHost } = await import('../host-option.js');
  checkName(opts.name);
  const host = await openConfiguredHost(ctx, opts, opts.host);
  const repo = await openRepo(ctx, opts);
  const name = opts.name ?? opts.vm;
  const lock = await repo.lock('shared', `drctl backup ${name}`, cliLockWait(ctx, opts));
  const progress = progressLine(ctx, opts);
  let point: Point;
  try {
    point = await backupVm(repo, host, {
      name, vm: opts.vm, hostName: opts.host, quiesce: (opts.quiesce as 'required' | 'preferred' | undefined) ?? 'preferred',
      clock: ctx.clock, hostname: ctx.hostname, signal: ctx.signal, onProgress: progress.update,
      log: (line) => {
        progress.done(); // the line goes under the progress line, not into it
        ctx.stderr.write(`drctl: ${line}\n`);
      },
    });
  } finally {
    progress.done();
    await lock.release();
    await host.transport.close();
  }
  const r = report(ctx, opts, point, name);
  const ct = point.changeTracking;
  say(ctx, opts, `  ${ct?.mode === 'changed-extents' ? 'incremental (dirty bitmap)' : `full read${ct?.reason ? `: ${ct.reason}` : ''}`}, ${point.vm?.quiesced ? 'quiesced' : 'not quiesced'}, ${bytes(point.stats.wireBytes ?? 0)} over SSH`);
  return r;
}

async function readExtents(file: string): Promise<Extent[]> {
  const hint = 'give a JSON file: [{"offset": N, "length": N}, …], byte offsets and lengths on the guest disk';
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read changed-extent list ${file} - ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder' : (e as Error).message}`, hint);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    // V8 quotes the input in some messages (`…, ..."<content>"... is not valid JSON`):
    // keep only its reason, and turn "at position N" into a line and column.
    let why = (e as Error).message.replace(/, (\.\.\.)?".*"(\.\.\.)? is not valid JSON$/s, '').replace(/ in JSON/, '');
    why = why.replace(/ at position (\d+)$/, (_m, pos: string) => {
      const before = text.slice(0, Number(pos)).split('\n');
      return ` at line ${before.length}, column ${(before.at(-1)?.length ?? 0) + 1}`;
    });
    why = why.replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 100);
    throw new UsageError(`cannot read changed-extent list ${file} - not valid JSON (${why.charAt(0).toLowerCase()}${why.slice(1)})`, hint);
  }
  if (!Array.isArray(parsed)) throw new UsageError(`changed-extent list ${file}: expected a JSON array`, 'format: [{"offset": N, "length": N}, …]');
  return parsed.map((e: unknown, i) => {
    const x = (typeof e === 'object' && e !== null ? e : {}) as { offset?: unknown; length?: unknown };
    for (const field of ['offset', 'length'] as const) {
      const v = x[field];
      // JSON numbers above 2^53 arrive rounded: not an exact byte count any more.
      if (typeof v === 'number' && Number.isInteger(v) && v > Number.MAX_SAFE_INTEGER) {
        throw new UsageError(`changed-extent list ${file}: entry [${i}] ${field} is too large (more than 2^53 - 1 bytes)`, 'check that the list was written for this disk, in bytes');
      }
    }
    if (!Number.isSafeInteger(x.offset) || !Number.isSafeInteger(x.length) || (x.offset as number) < 0 || (x.length as number) < 0) {
      throw new UsageError(`changed-extent list ${file}: entry [${i}] needs non-negative integer offset and length`, 'format: [{"offset": N, "length": N}, …]');
    }
    if ((x.offset as number) + (x.length as number) > Number.MAX_SAFE_INTEGER) {
      throw new UsageError(`changed-extent list ${file}: entry [${i}] ends too far out (offset + length is more than 2^53 - 1 bytes)`, 'check that the list was written for this disk, in bytes');
    }
    return { offset: x.offset as number, length: x.length as number };
  });
}

/** `drctl backup --policy NAME`: every source of the policy, through the job runner (limits, catalog, retention). */
async function runPolicy(ctx: CliContext, opts: Opts, name: string): Promise<number> {
  const log = (line: string): void => say(ctx, opts, line);
  const { buildRuntime, stateDir } = await import('../wiring.js');
  const rt = await buildRuntime({ configDir: configDir(ctx, opts), stateDir: stateDir(ctx, opts), clock: { ...ctx.clock, simulated: false, sleepUntil: async () => undefined }, hostname: ctx.hostname, log });
  const policy = rt.policy(name);
  const abort = (): void => rt.runner.abort();
  // A signal that came while drctl was starting has already fired: the runner then starts no job.
  if (ctx.signal.aborted) abort();
  else ctx.signal.addEventListener('abort', abort, { once: true });
  const outcomes = await Promise.all(policy.sources.map((s) => rt.runner.backup(policy, s, 'manual')));
  ctx.signal.removeEventListener('abort', abort);
  const failed = outcomes.filter((o) => o.job.state === 'failed' || o.job.state === 'interrupted');
  const partial = outcomes.filter((o) => o.job.state === 'partial');
  if (opts.json) printJson(ctx, { policy: policy.name, jobs: outcomes.map((o) => o.job) });
  if (outcomes.length && outcomes.every((o) => o.job.state === 'interrupted' && !o.job.startedAt)) {
    ctx.stderr.write(`drctl: policy ${policy.name}: interrupted before any job started - nothing was backed up, no retention ran (run the command again)\n`);
    return ExitCode.failed;
  }
  for (const f of failed) ctx.stderr.write(`drctl: ${f.job.source}: ${f.job.error ?? f.job.state}\n`);
  if (failed.length === outcomes.length) return ExitCode.failed;
  return failed.length || partial.length ? ExitCode.partial : ExitCode.ok;
}

/**
 * A point name is how people find generations again (`--name`, retention, the points table):
 * not empty, no control characters, not starting with '-' (taken for an option), at most 200.
 */
function checkName(name: string | undefined): void {
  if (name === undefined) return;
  // eslint-disable-next-line no-control-regex
  const why = name.trim() === '' ? 'is empty' : /[\x00-\x1f\x7f]/.test(name) ? 'holds a control character (a newline, a tab)'
    : name.startsWith('-') ? 'starts with "-" (an option was probably meant)' : name.length > 200 ? 'is longer than 200 characters' : undefined;
  if (why) throw new UsageError(`--name ${JSON.stringify(name)} ${why}`, 'give a short name such as web01 or home-docs; points of one name form its generations');
}
