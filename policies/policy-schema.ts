/**
 * The policy file: zod checks each field's type and value; the rules that span fields (a source
 * is exactly one of vm/image/path, names are unique, targets and hosts exist) are checked here
 * on the raw value, so they are reported even when some other field is wrong too.
 */
import { basename, join } from 'node:path';
import { z } from 'zod';
import { isEmptyRetention, parseWithin, type RetentionRules } from './retention.js';
import { cronProblem } from './cron.js';
import { timeZoneProblem } from './zone.js';
import { displayPath, type ConfigDocument } from './document.js';
import { reportIssues, type FieldDoc, type SchemaDocs } from './issues.js';
import type { HostConfig, Policy, PolicySource, TargetConfig } from './types.js';

export const DEFAULT_SCHEDULE = '0 */4 * * *';
/** Sundays 03:00: a time that exists exactly once on DST change days in Europe and the US. */
export const DEFAULT_PRUNE = '0 3 * * 0';
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const COUNTS = ['generations', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;

const custom = (check: (v: string) => { message: string; fix?: string } | undefined) =>
  (v: string, ctx: z.RefinementCtx): void => {
    const p = check(v);
    if (p) ctx.addIssue({ code: 'custom', message: p.message, params: { fix: p.fix } });
  };

const cron = z.string().superRefine(custom(cronProblem));
const timeZone = z.string().superRefine(custom(timeZoneProblem));
const name = z.string().regex(NAME_PATTERN);
const ref = z.string().min(1);
const absolute = (what: string, windows = false) => z.string().superRefine(custom((v) =>
  v.startsWith('/') || (windows && /^[A-Za-z]:[\\/]/.test(v)) ? undefined
    : { message: `"${v}" is not an absolute path`, fix: `give the full path of the ${what}, starting with /${windows ? ' (or C:/ in a Windows guest)' : ''}` }));
const count = z.number().int().min(0);

export const retentionSchema = z.strictObject({
  generations: count.optional(),
  hourly: count.optional(),
  daily: count.optional(),
  weekly: count.optional(),
  monthly: count.optional(),
  yearly: count.optional(),
  within: z.string().superRefine(custom((v) => {
    try {
      parseWithin(v);
      return undefined;
    } catch (e) {
      const lower = v.toLowerCase();
      const fix = lower !== v && parses(lower) ? `did you mean ${lower}? (units are lower-case: y years, m months, d days, h hours)` : 'write it like 2d, 36h or 1y2m3d4h (y years, m months, d days, h hours)';
      return { message: (e as Error).message.replace(/ - write it like.*/, ''), fix };
    }
  })).optional(),
});

const sourceSchema = z.strictObject({
  name: z.string().min(1).optional(),
  vm: z.string().min(1).optional(),
  host: ref.optional(),
  files: z.array(absolute('folder or file inside the guest', true)).min(1).optional(),
  quiesce: z.enum(['required', 'preferred']).optional(),
  image: absolute('disk image').optional(),
  path: absolute('folder').optional(),
});

export const policySchema = z.strictObject({
  name,
  schedule: cron.optional(),
  timezone: timeZone.optional(),
  target: ref,
  fallbackTarget: ref.optional(),
  prune: cron.optional(),
  sources: z.array(sourceSchema).min(1),
  retention: retentionSchema,
});

const countDoc = (k: string): FieldDoc => ({ expect: 'a whole number ≥ 0 (0 turns the rule off)', example: `${k}: 7` });
const retentionFields = (prefix: string): Record<string, FieldDoc> => ({
  [`${prefix}retention`]: { expect: 'a mapping of retention rules', example: 'retention: { generations: 42, daily: 14 }' },
  ...Object.fromEntries(COUNTS.map((k) => [`${prefix}retention.${k}`, countDoc(k)])),
  [`${prefix}retention.within`]: { expect: 'a duration like 2d', example: 'within: 2d' },
});

export const policyDocs: SchemaDocs = {
  keys: { '': Object.keys(policySchema.shape), retention: Object.keys(retentionSchema.shape), 'sources.*': Object.keys(sourceSchema.shape) },
  fields: {
    name: { expect: 'a name of letters, digits, ".", "_" and "-"', example: 'name: web-tier' },
    schedule: { expect: 'a cron expression in quotes', example: 'schedule: "0 */4 * * *"' },
    prune: { expect: 'a cron expression in quotes', example: 'prune: "0 3 * * 0"' },
    timezone: { expect: 'an IANA time zone name', example: 'timezone: Europe/Berlin' },
    target: { expect: 'the name of a target in the targets/ folder', example: 'target: vol1' },
    fallbackTarget: { expect: 'the name of a target in the targets/ folder', example: 'fallbackTarget: vol2' },
    sources: { expect: 'a list of sources, each with vm, image or path', example: 'sources: [{ vm: web01, host: hv1 }, { path: /srv/shared }]' },
    'sources.*': { expect: 'a mapping with one of vm, image or path', example: '- path: /srv/shared' },
    'sources.*.name': { expect: 'a point name', example: 'name: web01-files' },
    'sources.*.vm': { expect: 'the VM name as the host knows it', example: 'vm: web01' },
    'sources.*.host': { expect: 'the name of a host in the hosts/ folder', example: 'host: hv1' },
    'sources.*.files': { expect: 'a list of paths inside the guest', example: 'files: ["/srv/data", "C:/inetpub"]' },
    'sources.*.files.*': { expect: 'an absolute path inside the guest', example: '"/srv/data"' },
    'sources.*.quiesce': { expect: 'required or preferred', example: 'quiesce: preferred' },
    'sources.*.image': { expect: 'the absolute path of a disk image', example: 'image: /var/lib/images/db.qcow2' },
    'sources.*.path': { expect: 'the absolute path of a folder', example: 'path: /srv/shared' },
    ...retentionFields(''),
  },
};

/** Targets and hosts a policy may name, from one config folder. */
export interface References {
  dir: string;
  targets: ReadonlyMap<string, TargetConfig>;
  hosts: ReadonlyMap<string, HostConfig>;
  /** Names defined by a file that has problems of its own: name → that file. */
  brokenTargets: ReadonlyMap<string, string>;
  brokenHosts: ReadonlyMap<string, string>;
}

export interface PolicyCheck {
  /** Absolute path, stored on the policy. */
  file: string;
  defaultTimeZone: string;
  /** Inside a config folder's policies/: the name the file name implies. */
  expectedName?: string;
  /** Checked against these when given. */
  refs?: References;
}

/** Validate one parsed policy file; problems go to `doc`. Returns the policy when it has none. */
export function checkPolicy(doc: ConfigDocument, raw: unknown, check: PolicyCheck): Policy | undefined {
  const before = doc.problems.length;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    doc.add([], 'value', raw === null || raw === undefined ? 'the file is empty' : `expected a policy (key: value lines), got ${Array.isArray(raw) ? 'a list' : 'a single value'}`,
      'start from the example in README.md, section Policies');
    return undefined;
  }
  const parsed = policySchema.safeParse(raw);
  if (!parsed.success) reportIssues(doc, raw, parsed.error.issues, policyDocs);
  const obj = raw as Record<string, unknown>;
  if (check.expectedName !== undefined && typeof obj.name === 'string' && obj.name !== check.expectedName) {
    doc.add(['name'], 'value', `"${obj.name}" does not match the file name ${basename(check.file)}`,
      `a policy file is named after its policy: rename the file to ${obj.name}.yaml or write name: ${check.expectedName}`);
  }
  checkRetentionRules(doc, obj.retention);
  const names = checkSources(doc, obj.sources, check.refs);
  if (check.refs) checkTargets(doc, obj, check.refs);
  if (!parsed.success || doc.problems.length > before) return undefined;
  const p = parsed.data;
  return {
    name: p.name, file: check.file, schedule: p.schedule ?? DEFAULT_SCHEDULE, timezone: p.timezone ?? check.defaultTimeZone,
    target: p.target, ...(p.fallbackTarget ? { fallbackTarget: p.fallbackTarget } : {}), prune: p.prune ?? DEFAULT_PRUNE,
    sources: p.sources.map((s, i) => toSource(s, names[i] as string)), retention: p.retention,
  };
}

export function checkRetentionRules(doc: ConfigDocument, retention: unknown): void {
  if (!retention || typeof retention !== 'object' || Array.isArray(retention)) return;
  // A within that does not parse is reported by the schema; it was meant as a rule, so the
  // mapping is not "empty" (and isEmptyRetention would throw on it).
  const within = (retention as { within?: unknown }).within;
  if (within !== undefined && (typeof within !== 'string' || !parses(within))) return;
  if (isEmptyRetention(retention as RetentionRules)
    && Object.keys(retention).every((k) => k === 'within' || (COUNTS as readonly string[]).includes(k))) {
    doc.add(['retention'], 'value', 'has no rule, so no recovery point would ever be removed',
      'add at least one of generations, hourly, daily, weekly, monthly, yearly (a count > 0) or within (e.g. generations: 42)');
  }
}

function parses(within: string): boolean {
  try {
    parseWithin(within);
    return true;
  } catch {
    return false;
  }
}

type RawSource = Record<string, unknown>;
const KINDS = ['vm', 'image', 'path'] as const;

/** Cross-field source rules; returns each source's point name (by index). */
function checkSources(doc: ConfigDocument, sources: unknown, refs: References | undefined): (string | undefined)[] {
  if (!Array.isArray(sources)) return [];
  const names: (string | undefined)[] = [];
  const firstUse = new Map<string, number>();
  for (const [i, s] of (sources as unknown[]).entries()) {
    const src = s && typeof s === 'object' && !Array.isArray(s) ? s as RawSource : undefined;
    const name = src ? checkSource(doc, src, i, refs) : undefined;
    names.push(name);
    if (name === undefined) continue;
    const prev = firstUse.get(name);
    if (prev === undefined) firstUse.set(name, i);
    else {
      doc.add(typeof src?.name === 'string' ? ['sources', i, 'name'] : ['sources', i], 'value', `point name "${name}" is already used by sources[${prev}]`,
        `give one of them its own name, e.g. name: ${name}-2 under sources[${i}] (recovery points and retention are kept per name)`);
    }
  }
  return names;
}

/** One source's own rules; returns its point name (explicit, or from the VM name / basename). */
function checkSource(doc: ConfigDocument, src: RawSource, i: number, refs: References | undefined): string | undefined {
  const kinds = KINDS.filter((k) => src[k] !== undefined);
  if (kinds.length === 0) {
    doc.add(['sources', i], 'value', 'names no source', 'give exactly one of vm: NAME (with host:), image: /path/disk.qcow2 or path: /folder');
  } else if (kinds.length > 1) {
    doc.add(['sources', i, kinds[1] as string], 'key', `a source is exactly one of vm, image or path, and this one has both ${kinds.join(' and ')}`,
      'split it into two sources, one per line starting with "- "');
  }
  const kind = kinds[0];
  if (kind === 'vm' && src.host === undefined) {
    doc.add(['sources', i, 'host'], 'parent', `missing; a vm source needs the host that runs VM ${String(src.vm)}`, hostFix(refs));
  }
  if (kind === 'vm' && typeof src.host === 'string' && refs && !refs.hosts.has(src.host)) {
    const broken = refs.brokenHosts.get(src.host);
    doc.add(['sources', i, 'host'], 'value', broken ? `host "${src.host}" is defined in ${displayPath(broken)}, which has problems` : `unknown host "${src.host}"`,
      broken ? `fix ${displayPath(broken)} (\`drctl policy validate --config ${displayPath(refs.dir)}\` lists its problems)` : hostFix(refs, src.host));
  }
  if (kind && kind !== 'vm') {
    for (const k of ['host', 'files', 'quiesce'] as const) {
      if (src[k] !== undefined) doc.add(['sources', i, k], 'key', `only a vm source takes ${k}; this is ${kind === 'image' ? 'an image' : 'a path'} source`, `remove ${k}`);
    }
  }
  if (typeof src.name === 'string') return src.name;
  const value = kind ? src[kind] : undefined;
  return kind && typeof value === 'string' ? defaultName(kind, value) : undefined;
}

function defaultName(kind: (typeof KINDS)[number], value: string): string {
  return kind === 'vm' ? value : basename(value.replace(/[\\/]+$/, '')) || value;
}

function hostFix(refs: References | undefined, name?: string): string {
  if (!refs) return 'add e.g. host: hv1 (a host defined in the config folder\'s hosts/)';
  const dir = join(displayPath(refs.dir), 'hosts');
  const known = [...refs.hosts.keys()];
  const define = `add ${join(dir, `${name ?? 'hv1'}.yaml`)} (driver: libvirt, ssh: {host, user, keyFile, hostKey})`;
  if (name === undefined) return known.length ? `add host: ${known[0] as string} (hosts in ${dir}/: ${known.join(', ')})` : `no hosts are defined in ${dir}/; ${define} and write host: hv1`;
  return known.length ? `hosts in ${dir}/: ${known.join(', ')}; or ${define}` : `no hosts are defined in ${dir}/; ${define}`;
}

function checkTargets(doc: ConfigDocument, obj: Record<string, unknown>, refs: References): void {
  for (const key of ['target', 'fallbackTarget'] as const) {
    const name = obj[key];
    if (typeof name !== 'string' || !name || refs.targets.has(name)) continue;
    const broken = refs.brokenTargets.get(name);
    if (broken) {
      doc.add([key], 'value', `target "${name}" is defined in ${displayPath(broken)}, which has problems`, `fix ${displayPath(broken)} (\`drctl policy validate --config ${displayPath(refs.dir)}\` lists its problems)`);
      continue;
    }
    const known = [...refs.targets.keys()];
    const dir = join(displayPath(refs.dir), 'targets');
    const add = `add ${join(dir, `${name}.yaml`)} with "type: local" and "path: /srv/drctl" (or an iscsi target, see README.md)`;
    doc.add([key], 'value', `unknown target "${name}"`, known.length ? `targets in ${dir}/: ${known.join(', ')}; or ${add}` : `no targets are defined in ${dir}/; ${add}`);
  }
  if (typeof obj.fallbackTarget === 'string' && obj.fallbackTarget === obj.target) {
    doc.add(['fallbackTarget'], 'value', 'is the same as target', 'name a second target, or remove fallbackTarget');
  }
}

function toSource(s: z.infer<typeof sourceSchema>, name: string): PolicySource {
  if (s.vm !== undefined) {
    return { kind: 'vm', name, vm: s.vm, host: s.host as string, ...(s.files ? { files: s.files } : {}), quiesce: s.quiesce ?? 'preferred' };
  }
  if (s.image !== undefined) return { kind: 'image', name, image: s.image };
  return { kind: 'path', name, path: s.path as string };
}
