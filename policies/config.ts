/**
 * The config folder loader: the one place in policies/ that reads files. Everything it finds
 * wrong becomes a ConfigProblem with file:line:column; bad content never throws.
 *
 *   <dir>/policies/NAME.yaml|.yml|.json   one policy, `name: NAME`
 *   <dir>/targets/NAME.yaml               where repositories live
 *   <dir>/hosts/NAME.yaml                 hypervisor hosts
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError, UsageError, errnoCode, type ConfigProblem } from '../engine/errors.js';
import { ConfigDocument, displayPath } from './document.js';
import { reportIssues } from './issues.js';
import { checkPolicy, checkRetentionRules, policyDocs, retentionSchema, type References } from './policy-schema.js';
import { checkHost, checkTarget } from './target-schema.js';
import type { RetentionRules } from './retention.js';
import type { HostConfig, LoadedConfig, Policy, TargetConfig } from './types.js';
import { machineTimeZone } from './zone.js';

export type { ConfigProblem, HostConfig, LoadedConfig, Policy, PolicySource, TargetConfig } from './types.js';
export { displayPath };

const EXTENSIONS = ['.yaml', '.yml', '.json'];

/** "policies/web.yaml:7:3: retention.dayly: unknown field - did you mean daily?" */
export function formatProblem(p: ConfigProblem): string {
  return `${displayPath(p.file)}:${p.line}:${p.column}: ${p.path ? `${p.path}: ` : ''}${p.message}${p.fix ? ` - ${p.fix}` : ''}`;
}

/**
 * For commands that read the whole config folder and must not take a mistyped --config for an
 * empty config (policy validate, status): throws a UsageError when `dir` is not a folder.
 */
export async function requireConfigFolder(dir: string, hint: string): Promise<void> {
  const isDir = await stat(dir).then((s) => s.isDirectory(), () => false);
  if (!isDir) throw new UsageError(`config folder ${dir} does not exist`, hint);
}

/** Reads the whole folder. Invalid files are left out and listed in problems; a missing folder is an empty config. */
export async function loadConfig(dir: string): Promise<LoadedConfig> {
  const problems: ConfigProblem[] = [];
  const refs = await loadReferences(dir, problems);
  const checked: Checked[] = [];
  for (const f of await configFiles(join(dir, 'policies'))) {
    const file = join(dir, 'policies', f);
    checked.push(await checkPolicyFile(file, refs, stem(f)));
  }
  markDuplicates(checked);
  for (const c of checked) problems.push(...(c.doc?.sortedProblems() ?? []));
  const policies = valid(checked);
  return {
    dir: resolve(dir),
    policies,
    invalidPolicies: checked.filter((c) => !policies.some((p) => p.file === resolve(c.file))).map((c) => ({ name: c.name ?? stem(c.file), file: c.file })),
    targets: new Map(refs.targets),
    hosts: new Map(refs.hosts),
    problems,
  };
}

/**
 * Validate policy files against a config folder's targets and hosts. A file directly inside
 * `<dir>/policies/` is checked against `<dir>` (and must be named after its policy); any other
 * file against `configDir`. A file in a `targets/` or `hosts/` folder is checked as a target or
 * host (it adds problems, never policies).
 */
export async function validatePolicyFiles(files: string[], configDir: string): Promise<{ policies: Policy[]; problems: ConfigProblem[] }> {
  const refsByDir = new Map<string, References>();
  const checked: Checked[] = [];
  const others: ConfigProblem[] = [];
  for (const file of files) {
    const folder = basename(dirname(resolve(file)));
    if (folder === 'targets' || folder === 'hosts') {
      // An operator who just edited targets/san1.yaml checks it the same way.
      const { doc, value, problem } = await readDocument(file);
      if (!problem) (folder === 'targets' ? checkTarget : checkHost)(doc, value, stem(file), resolve(file));
      others.push(...doc.sortedProblems());
      continue;
    }
    const home = configHome(file);
    const dir = home ?? resolve(configDir);
    let refs = refsByDir.get(dir);
    if (!refs) refsByDir.set(dir, refs = await loadReferences(dir));
    checked.push(await checkPolicyFile(file, refs, home ? stem(file) : undefined));
  }
  // Policies already in a folder next to a given file count for duplicate names too.
  const given = new Set(files.map((f) => resolve(f)));
  const siblings: Checked[] = [];
  for (const dir of new Set(files.filter((f) => configHome(f)).map((f) => dirname(resolve(f))))) {
    for (const f of await configFiles(dir)) {
      if (!given.has(join(dir, f))) siblings.push({ doc: undefined, policy: undefined, name: stem(f), file: join(dir, f) });
    }
  }
  markDuplicates([...checked, ...siblings]);
  const problems = [...checked.flatMap((c) => c.doc?.sortedProblems() ?? []), ...others];
  return { policies: valid(checked), problems: [...new Set(files)].flatMap((f) => problems.filter((p) => p.file === f)) };
}

/**
 * One policy file checked on its own (for `policy plan`): every field, but not whether its
 * targets and hosts exist. Throws ConfigError listing every problem.
 */
export async function loadPolicyFile(file: string): Promise<Policy> {
  const home = configHome(file);
  const c = await checkPolicyFile(file, undefined, home ? stem(file) : undefined);
  const problems = c.doc?.sortedProblems() ?? [];
  if (problems.length || !c.policy) throw invalidFileError(file, 'policy', problems);
  return c.policy;
}

const retentionFileSchema = z.looseObject({ name: z.string().min(1).optional(), retention: retentionSchema });

/** Only name + retention (for `retention simulate`); other keys are allowed. Throws ConfigError listing every problem. */
export async function loadRetentionFile(file: string): Promise<{ name?: string; retention: RetentionRules }> {
  const text = await readFile(file, 'utf8').catch((e: unknown) => {
    throw new ConfigError(`cannot read policy file ${file} - ${errnoCode(e) ?? (e as Error).message}`, [], 'check the --policy path');
  });
  const { doc, value } = ConfigDocument.parse(file, text);
  let result: { name?: string; retention: RetentionRules } | undefined;
  if (value !== undefined) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      doc.add([], 'value', 'expected a policy with a retention: mapping', 'e.g. retention: { generations: 42, daily: 14 }');
    } else {
      const r = retentionFileSchema.safeParse(value);
      if (!r.success) reportIssues(doc, value, r.error.issues, { fields: policyDocs.fields, keys: { '': ['name', 'retention'], retention: policyDocs.keys.retention ?? [] } });
      checkRetentionRules(doc, (value as Record<string, unknown>).retention);
      if (r.success) result = { ...(r.data.name ? { name: r.data.name } : {}), retention: r.data.retention };
    }
  }
  if (doc.problems.length || !result) throw invalidFileError(file, 'retention policy', doc.sortedProblems());
  return result;
}

/**
 * Why `name` is not among a loaded config's valid policies, as the error a command that runs a
 * policy by name throws: two files define it, its file has problems (listed), or there is none.
 */
export function policyLookupError(config: LoadedConfig, name: string): ConfigError | UsageError {
  const dir = join(config.dir, 'policies');
  const claims = config.invalidPolicies.filter((p) => p.name === name || stem(p.file) === name);
  const files = [...new Set(claims.map((c) => c.file))];
  const problems = config.problems.filter((p) => files.includes(p.file));
  const list = problems.map(formatProblem).join('\n');
  const validate = `\`drctl policy validate --config ${displayPath(config.dir)}\` lists every problem`;
  if (claims.filter((c) => c.name === name).length > 1) {
    const named = claims.filter((c) => c.name === name).map((c) => displayPath(c.file));
    return new ConfigError(`policy ${name} is defined by ${named.length} files, ${named.join(' and ')}, so ${named.length === 2 ? 'neither' : 'none of them'} is used - nothing was done\n${list}`, problems,
      `keep one of them: delete the other, or give it a name of its own (its name: field and its file name); ${validate}`);
  }
  if (files.length) {
    return new ConfigError(`policy ${name} (${files.map(displayPath).join(', ')}) has problems, so it is not used - nothing was done\n${list}`, problems,
      `fix the fields listed below and run the command again; ${validate}`);
  }
  const known = config.policies.map((p) => p.name);
  return new UsageError(`no policy named ${name} in ${dir}`,
    known.length ? `known policies: ${known.join(', ')}` : `write one to ${join(dir, `${name}.yaml`)} (see README, "Policies")`);
}

/** The ConfigError for one invalid file: a summary line, then one line per problem. */
export function invalidFileError(file: string, what: string, problems: ConfigProblem[], hint?: string): ConfigError {
  const n = problems.length;
  return new ConfigError(`${file} is not a valid ${what} - ${n} problem${n === 1 ? '' : 's'}\n${problems.map(formatProblem).join('\n')}`, problems, hint);
}

interface Checked {
  /** undefined for a file that was only listed, not read (duplicate detection). */
  doc: ConfigDocument | undefined;
  policy: Policy | undefined;
  name: string | undefined;
  file: string;
}

/** `refs` undefined: targets and hosts are not looked up. */
async function checkPolicyFile(file: string, refs: References | undefined, expectedName: string | undefined): Promise<Checked> {
  const { doc, value, problem } = await readDocument(file);
  if (problem) return { doc, policy: undefined, name: undefined, file };
  const policy = checkPolicy(doc, value, {
    file: resolve(file), defaultTimeZone: machineTimeZone(), ...(refs ? { refs } : {}), ...(expectedName !== undefined ? { expectedName } : {}),
  });
  const name = value && typeof value === 'object' && typeof (value as { name?: unknown }).name === 'string' ? (value as { name: string }).name : undefined;
  return { doc, policy, name, file };
}

/** Every file claiming a name some other file also claims gets a problem pointing at the others. */
function markDuplicates(checked: Checked[]): void {
  const byName = new Map<string, Checked[]>();
  for (const c of checked) if (c.name !== undefined) byName.set(c.name, [...(byName.get(c.name) ?? []), c]);
  for (const [name, group] of byName) {
    if (group.length < 2) continue;
    for (const c of group) {
      const others = group.filter((o) => o !== c).map((o) => displayPath(o.file)).join(', ');
      c.doc?.add(['name'], 'value', `policy name "${name}" is also used by ${others}`, 'every policy needs its own name; rename or remove one of the files');
    }
  }
}

function valid(checked: Checked[]): Policy[] {
  return checked.filter((c) => c.policy && c.doc && c.doc.problems.length === 0).map((c) => c.policy as Policy);
}

/** Targets and hosts of a config folder. Their problems go to `problems` when given. */
async function loadReferences(dir: string, problems?: ConfigProblem[]): Promise<References> {
  const targets = new Map<string, TargetConfig>();
  const hosts = new Map<string, HostConfig>();
  const brokenTargets = new Map<string, string>();
  const brokenHosts = new Map<string, string>();
  const load = async <T>(sub: string, check: (doc: ConfigDocument, raw: unknown, name: string, file: string) => T | undefined,
    good: Map<string, T>, broken: Map<string, string>): Promise<void> => {
    const files = await configFiles(join(dir, sub));
    for (const f of files) {
      const file = join(dir, sub, f);
      const name = stem(f);
      const { doc, value, problem } = await readDocument(file);
      const twin = files.find((o) => o !== f && stem(o) === name);
      if (twin) doc.add([], 'value', `${sub.slice(0, -1)} ${name} is also defined in ${displayPath(join(dir, sub, twin))}`, 'keep one file per name');
      const obj = problem ? undefined : check(doc, value, name, resolve(file));
      if (obj && doc.problems.length === 0) good.set(name, obj);
      else broken.set(name, file);
      problems?.push(...doc.sortedProblems());
    }
  };
  await load('targets', checkTarget, targets, brokenTargets);
  await load('hosts', checkHost, hosts, brokenHosts);
  return { dir: resolve(dir), targets, hosts, brokenTargets, brokenHosts };
}

async function readDocument(file: string): Promise<{ doc: ConfigDocument; value: unknown; problem: boolean }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const { doc } = ConfigDocument.parse(file, '');
    const code = errnoCode(e);
    doc.add([], 'value', `cannot read the file - ${code === 'ENOENT' ? 'it does not exist' : code === 'EISDIR' ? 'it is a folder' : code ?? (e as Error).message}`);
    return { doc, value: undefined, problem: true };
  }
  const { doc, value } = ConfigDocument.parse(file, text);
  return { doc, value, problem: value === undefined && doc.problems.length > 0 };
}

/** Config file names in a folder, sorted; none when the folder does not exist. */
async function configFiles(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    // Symlinks count: config management tools often link files into place.
    return entries.filter((e) => (e.isFile() || e.isSymbolicLink()) && !e.name.startsWith('.') && EXTENSIONS.includes(extname(e.name))).map((e) => e.name).sort();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return [];
    throw e;
  }
}

function stem(file: string): string {
  const b = basename(file);
  return b.slice(0, b.length - extname(b).length);
}

/** `<dir>` when `file` lies directly in `<dir>/policies/`. */
function configHome(file: string): string | undefined {
  const parent = dirname(resolve(file));
  return basename(parent) === 'policies' ? dirname(parent) : undefined;
}
