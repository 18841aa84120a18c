import { basename, dirname, extname, resolve } from 'node:path';
import { displayPath, formatProblem, loadConfig, requireConfigFolder, validatePolicyFiles, type ConfigProblem, type Policy } from '../../policies/index.js';
import { configDir, type ConfigOptions } from '../config-option.js';
import { printJson, type CliContext, type OutputOptions } from '../context.js';
import type { CommandSpec } from '../command.js';

type Opts = ConfigOptions & OutputOptions;

interface FileResult {
  file: string;
  ok: boolean;
  problems: ConfigProblem[];
  /** Printed after "FILE: ok" — not part of the JSON. */
  summary?: string | undefined;
}

export const policyValidateCommand: CommandSpec<Opts> = {
  name: 'policy validate',
  summary: 'check policy files and report every problem with file:line:column (no FILE: the whole --config folder)',
  args: '[files...]',
  options: [],
  exitCodes: '0 every file is valid · 2 problems found (listed on stderr, one per line)',
  async run(ctx: CliContext, opts: Opts, args: string[]) {
    const dir = configDir(ctx, opts);
    const results = args.length ? await checkFiles([...new Set(args)], dir) : await checkFolder(dir);
    const problems = results.flatMap((r) => r.problems);
    for (const p of problems) ctx.stderr.write(formatProblem(p) + '\n');
    if (opts.json) {
      printJson(ctx, { files: results.map(({ file, ok, problems: ps }) => ({ file, ok, problems: ps })) });
    } else if (!opts.quiet) {
      for (const r of results) if (r.ok) ctx.stdout.write(`${displayPath(r.file)}: ok (${r.summary ?? 'valid'})\n`);
    }
    if (!problems.length) return 0;
    const bad = results.filter((r) => !r.ok).length;
    ctx.stderr.write(`drctl: ${problems.length} problem${problems.length === 1 ? '' : 's'} in ${bad} of ${results.length} file${results.length === 1 ? '' : 's'}\n`);
    return 2;
  },
};

async function checkFiles(files: string[], dir: string): Promise<FileResult[]> {
  const { policies, problems } = await validatePolicyFiles(files, dir);
  return files.map((file) => {
    const mine = problems.filter((p) => p.file === file);
    const policy = policies.find((p) => p.file === resolve(file));
    const folder = basename(dirname(resolve(file)));
    const other = folder === 'targets' || folder === 'hosts' ? `${folder.slice(0, -1)} ${basename(file, extname(file))}` : undefined;
    return { file, ok: mine.length === 0 && !!(policy ?? other), problems: mine, summary: policy ? describePolicy(policy) : other };
  });
}

async function checkFolder(dir: string): Promise<FileResult[]> {
  await requireConfigFolder(dir, 'give policy files to check, or point --config / DRCTL_CONFIG at the folder holding policies/, targets/ and hosts/');
  const config = await loadConfig(dir);
  const results = new Map<string, FileResult>();
  for (const p of config.policies) results.set(p.file, { file: p.file, ok: true, problems: [], summary: describePolicy(p) });
  for (const t of config.targets.values()) {
    results.set(t.file, { file: t.file, ok: true, problems: [], summary: `target ${t.name}, ${t.type === 'local' ? `local ${t.path}` : `iscsi ${t.portal} ${t.iqn} lun ${t.lun}`}` });
  }
  for (const h of config.hosts.values()) {
    results.set(h.file, { file: h.file, ok: true, problems: [], summary: `host ${h.name}, ${h.driver}${h.ssh ? ` over ssh ${h.ssh.user}@${h.ssh.host}:${h.ssh.port}` : ' on this machine'}` });
  }
  for (const p of config.problems) {
    const key = resolve(p.file);
    const r = results.get(key) ?? { file: p.file, ok: false, problems: [] };
    r.ok = false;
    delete r.summary;
    r.problems.push(p);
    results.set(key, r);
  }
  return [...results.values()].sort((a, b) => resolve(a.file).localeCompare(resolve(b.file)));
}

function describePolicy(p: Policy): string {
  return `policy ${p.name}, ${p.sources.length} source${p.sources.length === 1 ? '' : 's'}, target ${p.target}${p.fallbackTarget ? `, fallback ${p.fallbackTarget}` : ''}`;
}
