/**
 * Wires the config folder (policies, targets), the catalog, the job runner and the daemon
 * together. Used by `drctl daemon`, `drctl backup --policy`, `drctl status`, the catalog
 * commands — and by tests, which pass a simulated clock.
 */
import { join, resolve } from 'node:path';
import { loadConfig, formatProblem, policyLookupError, type LoadedConfig, type Policy, type TargetConfig } from '../policies/config.js';
import { CronSchedule } from '../policies/cron.js';
import { applyRetention } from '../policies/retention.js';
import { Catalog } from '../engine/catalog/index.js';
import { Daemon, JobRunner, type JobLimits, type JobPolicy, type PolicyLoad, type Schedules } from '../engine/jobs/index.js';
import type { SleepClock } from '../engine/runtime/index.js';
import { UsageError } from '../engine/errors.js';
import { IscsiTarget, LocalTarget, type TargetDriver } from '../targets/index.js';
import type { CliContext } from './context.js';

export interface StateOptions {
  state?: string;
}

/** The state folder (catalog): --state, else $DRCTL_STATE, else ./drctl-data/state. */
export function stateDir(ctx: Pick<CliContext, 'env'>, opts: StateOptions): string {
  return resolve(opts.state ?? ctx.env.DRCTL_STATE ?? 'drctl-data/state');
}

export function catalogFile(stateDirPath: string): string {
  return join(stateDirPath, 'catalog.json');
}

/** Cron evaluation with parsed schedules cached per expression and zone. */
export function cronSchedules(): Schedules {
  const cache = new Map<string, CronSchedule>();
  const get = (expr: string, tz: string): CronSchedule => {
    const key = `${expr}\u0000${tz}`;
    let s = cache.get(key);
    if (!s) cache.set(key, (s = CronSchedule.parse(expr, tz)));
    return s;
  };
  return {
    next: (expr, tz, after) => get(expr, tz).next(after),
    prev: (expr, tz, atOrBefore, notBefore) => get(expr, tz).prev(atOrBefore, notBefore),
  };
}

/** Open a target named in the config folder. */
export async function openConfiguredTarget(config: LoadedConfig, name: string, stateDirPath?: string): Promise<TargetDriver> {
  const t = config.targets.get(name);
  if (!t) {
    throw new UsageError(`target ${name} is not defined in ${join(config.dir, 'targets')}`,
      `create ${join(config.dir, 'targets', `${name}.yaml`)} with \`type: local\` and \`path: /srv/drctl\``);
  }
  return openTargetConfig(t, stateDirPath);
}

/**
 * Open a target's storage. An iSCSI target is attached (or an existing attach joined) and
 * counted as used until the driver's close(); that needs the state folder (attach.json). A
 * local target's folder must exist: it is never created here (see LocalTarget.openFolder).
 */
export async function openTargetConfig(t: TargetConfig, stateDirPath?: string): Promise<TargetDriver> {
  if (t.type === 'iscsi') {
    if (!stateDirPath) throw new UsageError(`target ${t.name} (${t.file}) is an iSCSI target: this command cannot attach it`, `attach it first with \`drctl target attach ${t.name}\``);
    return IscsiTarget.open(t, stateDirPath);
  }
  return LocalTarget.openFolder(t.path, t.name);
}

export interface Runtime {
  config: LoadedConfig;
  catalog: Catalog;
  runner: JobRunner;
  daemon: Daemon;
  policy(name: string): Policy;
}

export interface RuntimeOptions {
  configDir: string;
  stateDir: string;
  clock: SleepClock;
  hostname: string;
  log: (line: string) => void;
  limits?: JobLimits;
}

export async function buildRuntime(opts: RuntimeOptions): Promise<Runtime> {
  let config = await loadConfig(opts.configDir);
  const catalog = await Catalog.open(catalogFile(opts.stateDir));
  const policyByName = (name: string): Policy => {
    const p = config.policies.find((x) => x.name === name);
    if (!p) throw policyLookupError(config, name);
    return p;
  };
  const runner = new JobRunner({
    catalog,
    clock: opts.clock,
    hostname: opts.hostname,
    openTarget: (name) => openConfiguredTarget(config, name, opts.stateDir),
    retention: (p: JobPolicy) => {
      const rules = policyByName(p.name).retention;
      return (points) => applyRetention(points, rules, opts.clock.now());
    },
    log: opts.log,
    limits: opts.limits,
    openHost: async (name) => {
      const h = config.hosts.get(name);
      if (!h) throw new UsageError(`host ${name} is not defined in ${join(config.dir, 'hosts')}`, `create ${join(config.dir, 'hosts', `${name}.yaml`)} (see README, "Hosts")`);
      const [{ openHostTransport }, { LibvirtHost }] = await Promise.all([import('../engine/ssh/index.js'), import('../engine/hosts/index.js')]);
      if (h.driver !== 'libvirt') throw new UsageError(`host ${name} (${h.file}) has driver ${h.driver}; only libvirt hosts can be backed up in this version`);
      return new LibvirtHost(await openHostTransport(h), h.uri ?? 'qemu:///system');
    },
  });
  const load = async (): Promise<PolicyLoad> => {
    const fresh = await loadConfig(opts.configDir);
    // Keep the old version of a policy whose file no longer validates (reload semantics).
    const badFiles = new Set(fresh.problems.map((p) => p.file));
    const kept = config.policies.filter((p) => badFiles.has(p.file) && !fresh.policies.some((q) => q.name === p.name));
    config = { ...fresh, policies: [...fresh.policies, ...kept] };
    const byFile = new Map<string, string[]>();
    for (const p of fresh.problems) byFile.set(p.file, [...(byFile.get(p.file) ?? []), formatProblem(p)]);
    return { policies: fresh.policies, problems: [...byFile].map(([file, messages]) => ({ file, messages })) };
  };
  const daemon = new Daemon({ clock: opts.clock, runner, catalog, schedules: cronSchedules(), load, log: opts.log });
  return {
    get config() {
      return config;
    },
    catalog, runner, daemon, policy: policyByName,
  };
}
