/**
 * `drctl ls POINT [PATH…]`: what a point holds, so the paths for `restore --include` can be
 * found without restoring anything: the files and folders of a file-level point (under PATHs,
 * recursively), or the disks of a VM-level point. Reads only tree blobs.
 */
import { UsageError } from '../../engine/errors.js';
import type { TreeEntry } from '../../engine/repo/index.js';
import { normalizeInclude, planRestore } from '../../engine/restore/index.js';
import { printJson, type CliContext, type OutputOptions } from '../context.js';
import { cliLockWait, lockWaitOption, openRepo, type RepoOptions } from '../repo-option.js';
import { bytes, printable } from '../format.js';
import type { CommandSpec } from '../command.js';

type Opts = RepoOptions & OutputOptions & { name?: string; long?: boolean; lockWait?: string };

export const lsCommand: CommandSpec<Opts> = {
  name: 'ls',
  summary: 'list the files of a file-level point (or the disks of a VM-level point)',
  args: '<point> [paths...]',
  options: [
    { flags: '--name <name>', description: 'with `latest`: the newest point of this name' },
    { flags: '-l, --long', description: 'also mode, owner, size and modification time' },
    lockWaitOption(),
  ],
  exitCodes: '0 listed · 1 the repository stayed locked (--lock-wait) · 2 bad arguments, no repository, no such point or path',
  async run(ctx: CliContext, opts: Opts, args: string[]) {
    const [spec, ...paths] = args;
    const lockWait = cliLockWait(ctx, opts, { readOnly: true });
    const repo = await openRepo(ctx, opts);
    const point = await repo.resolvePoint(spec as string, opts.name);
    if (point.kind === 'vm') {
      if (paths.length) throw new UsageError(`point ${point.id.slice(0, 12)} is a VM-level point: it holds disks, not paths`, 'restore the disk with `drctl restore POINT --to FILE`, then mount it');
      const disks = (point.disks ?? []).map((d) => ({ disk: d.name, sizeBytes: d.sizeBytes, format: d.sourceFormat ?? 'raw' }));
      if (opts.json) printJson(ctx, disks);
      else for (const d of disks) ctx.stdout.write(`${d.disk}  ${bytes(d.sizeBytes)}  ${d.format}\n`);
      return 0;
    }
    const lock = await repo.lock('shared', `drctl ls ${point.id.slice(0, 12)}`, lockWait);
    let items;
    try {
      items = await planRestore(repo, point, paths);
    } finally {
      await lock.release();
    }
    // The plan also holds the folders leading to each PATH: list only what is at or under one.
    const roots = paths.map(normalizeInclude);
    const shown = roots.length === 0 || roots.includes('')
      ? items
      : items.filter((i) => roots.some((r) => i.rel === r || i.rel.startsWith(`${r}/`)));
    if (opts.json) {
      printJson(ctx, shown.map((i) => describe(i.rel, i.entry)));
      return 0;
    }
    for (const i of shown) ctx.stdout.write(opts.long ? `${longLine(i.rel, i.entry)}\n` : `${shortName(i.rel, i.entry)}\n`);
    return 0;
  },
};

function describe(path: string, e: TreeEntry): Record<string, unknown> {
  return {
    path,
    type: e.type,
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    size: e.size,
    mtime: mtimeIso(e.mtimeNs),
    ...(e.target !== undefined ? { target: e.target } : {}),
    ...(e.linkTo !== undefined ? { linkTo: e.linkTo } : {}),
  };
}

/** A folder ends in '/', a symlink shows its target, a hard link the path it shares data with. */
function shortName(path: string, e: TreeEntry): string {
  const shown = printable(path);
  if (e.type === 'dir') return `${shown}/`;
  if (e.type === 'symlink') return `${shown} -> ${printable(e.target ?? '')}`;
  if (e.type === 'hardlink') return `${shown} => ${printable(e.linkTo ?? '')}`;
  return shown;
}

function longLine(path: string, e: TreeEntry): string {
  const owner = `${e.uid}:${e.gid}`.padEnd(11);
  return `${modeString(e)}  ${owner} ${String(e.size).padStart(12)}  ${mtimeIso(e.mtimeNs).replace(/\.\d+Z$/, 'Z')}  ${shortName(path, e)}`;
}

function mtimeIso(ns: string): string {
  const n = BigInt(ns);
  const ms = n / 1_000_000n - (n < 0n && n % 1_000_000n !== 0n ? 1n : 0n); // floor, also before 1970
  return new Date(Number(ms)).toISOString();
}

/** `ls -l` style: type letter, then rwx for owner, group and others with s/S and t/T. */
export function modeString(e: Pick<TreeEntry, 'type' | 'mode'>): string {
  const type = e.type === 'dir' ? 'd' : e.type === 'symlink' ? 'l' : '-';
  const m = e.mode;
  const triple = (shift: number, special: number, on: string, off: string): string => {
    const bits = (m >> shift) & 7;
    const x = bits & 1;
    return `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${m & special ? (x ? on : off) : x ? 'x' : '-'}`;
  };
  return type + triple(6, 0o4000, 's', 'S') + triple(3, 0o2000, 's', 'S') + triple(0, 0o1000, 't', 'T');
}
