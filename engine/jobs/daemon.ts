/**
 * The daemon: keeps every policy's schedule and hands due runs to the JobRunner.
 *
 * - One loop sleeps on an injectable clock until the earliest due run (backup or prune) of
 *   any policy, then fires what is due. Cron expressions are evaluated by the `schedules`
 *   functions (policies/cron.ts, node-cron underneath) in each policy's time zone.
 * - Missed runs while the daemon was down give one catch-up run at start, not one per missed
 *   slot; the catalog remembers the scheduled instant of the last run per policy.
 * - A policy whose previous run is still going is not started again; the skip is logged and
 *   recorded as a job.
 * - After each successful backup the runner applies the policy's retention; prune runs on the
 *   policy's own `prune` schedule, beside backups.
 * - reload() (SIGHUP) re-reads the policies; a file that no longer validates keeps its old
 *   version and every problem is logged, one per line. stop() (SIGTERM) abandons running jobs
 *   cleanly: their pipelines stop and commit nothing, so the repository stays consistent. A
 *   stop() that comes before or during start() starts nothing.
 * - One daemon per state folder: the caller takes daemon-lock.ts's lock before start().
 */
import { randomBytes } from 'node:crypto';
import type { SleepClock } from '../runtime/clock.js';
import type { Catalog } from '../catalog/catalog.js';
import type { JobPolicy, JobRunner } from './runner.js';

export interface Schedules {
  /** First matching minute strictly after `after`. */
  next(expr: string, timezone: string, after: Date): Date;
  /** Latest matching minute in [notBefore, atOrBefore], if any. */
  prev(expr: string, timezone: string, atOrBefore: Date, notBefore: Date): Date | undefined;
}

export interface LoadedPolicy extends JobPolicy {
  /** The file it came from. */
  file: string;
}

export interface PolicyLoad {
  policies: LoadedPolicy[];
  /** Files that did not validate, each with every problem, formatted `file:line:column: field: what - fix`. */
  problems: { file: string; messages: string[] }[];
}

export interface DaemonDeps {
  clock: SleepClock;
  runner: JobRunner;
  catalog: Catalog;
  schedules: Schedules;
  load(): Promise<PolicyLoad>;
  log(line: string): void;
}

interface Entry {
  policy: LoadedPolicy;
  nextRun: Date;
  nextPrune: Date;
}

const FAR_FUTURE = new Date('9999-01-01T00:00:00Z');

export class Daemon {
  private entries = new Map<string, Entry>();
  private readonly running = new Set<string>();
  private readonly work = new Set<Promise<unknown>>();
  private wake = new AbortController();
  private stopped = false;
  private reloadWanted = false;

  constructor(private readonly deps: DaemonDeps) {}

  get policies(): LoadedPolicy[] {
    return [...this.entries.values()].map((e) => e.policy);
  }

  /** Load the policies and fire one catch-up run for each policy that missed runs while down. */
  async start(): Promise<void> {
    const load = await this.deps.load();
    for (const p of load.problems) this.logProblems(`policy file ${p.file} is invalid and not scheduled`, p.messages);
    const now = this.deps.clock.now();
    const state = (await this.deps.catalog.read()).policies;
    if (this.stopped) return; // stopped while starting: no catch-up run
    for (const policy of load.policies) {
      const entry = this.entry(policy, now);
      this.entries.set(policy.name, entry);
      const st = state[policy.name];
      const missed = this.missed(policy.schedule, policy.timezone, st?.lastScheduledAt, now);
      if (missed) {
        this.deps.log(`policy ${policy.name}: missed its run at ${missed.toISOString()} while the daemon was down - running once now`);
        this.fire(entry, 'catch-up', missed);
      }
      const missedPrune = this.missed(policy.prune, policy.timezone, st?.lastPruneScheduledAt, now);
      if (missedPrune) this.firePrune(entry, 'catch-up', missedPrune);
    }
    await this.saveNextRuns();
    this.deps.log(`daemon started: ${this.entries.size} polic${this.entries.size === 1 ? 'y' : 'ies'}${load.problems.length ? `, ${load.problems.length} invalid file(s) skipped` : ''}`);
  }

  /** The main loop, until stop() — or, with a simulated clock, until the clock would pass `until`. */
  async run(until?: Date): Promise<void> {
    while (!this.stopped) {
      if (this.reloadWanted) {
        this.reloadWanted = false;
        await this.doReload();
        continue;
      }
      const wake = this.nextWake();
      if (until && wake > until) break;
      // Simulated time must not jump while jobs run: their points would land at the wrong time.
      if (this.deps.clock.simulated) await this.idle();
      this.wake = new AbortController();
      await this.deps.clock.sleepUntil(wake, this.wake.signal);
      if (this.stopped || this.reloadWanted) continue;
      await this.fireDue();
    }
  }

  /** Ask the loop to re-read the policies (SIGHUP). */
  reload(): void {
    this.reloadWanted = true;
    this.wake.abort();
  }

  /** Stop scheduling; abandon running jobs cleanly (or let them finish) and wait for them. */
  async stop(mode: 'abandon' | 'finish'): Promise<void> {
    const jobs = this.deps.runner.busy;
    if (!this.stopped) {
      this.deps.log(jobs === 0 ? 'stopping - no job is running'
        : mode === 'abandon' ? `stopping - abandoning ${jobs} job(s) cleanly: nothing is half-committed`
          : `stopping - waiting for ${jobs} job(s) to finish`);
    }
    this.stopped = true;
    this.wake.abort();
    if (mode === 'abandon') this.deps.runner.abort();
    await this.idle();
  }

  /** Resolves when no run is queued or going. */
  async idle(): Promise<void> {
    while (this.work.size) await Promise.allSettled([...this.work]);
    await this.deps.runner.idle();
  }

  private entry(policy: LoadedPolicy, now: Date): Entry {
    return {
      policy,
      nextRun: this.deps.schedules.next(policy.schedule, policy.timezone, now),
      nextPrune: this.deps.schedules.next(policy.prune, policy.timezone, now),
    };
  }

  private missed(expr: string, tz: string, last: string | undefined, now: Date): Date | undefined {
    if (!last) return undefined; // never ran: nothing was missed, the first run is the next slot
    const after = new Date(new Date(last).getTime() + 60_000);
    if (after > now) return undefined;
    return this.deps.schedules.prev(expr, tz, now, after);
  }

  private nextWake(): Date {
    let t = FAR_FUTURE;
    for (const e of this.entries.values()) {
      if (e.nextRun < t) t = e.nextRun;
      if (e.nextPrune < t) t = e.nextPrune;
    }
    return t;
  }

  private async fireDue(): Promise<void> {
    const now = this.deps.clock.now();
    let changed = false;
    for (const e of this.entries.values()) {
      if (e.nextRun <= now) {
        // Several slots passed at once (a suspended host): one run, then the next future slot.
        const slot = e.nextRun;
        e.nextRun = this.deps.schedules.next(e.policy.schedule, e.policy.timezone, now);
        this.fire(e, 'schedule', slot);
        changed = true;
      }
      if (e.nextPrune <= now) {
        const slot = e.nextPrune;
        e.nextPrune = this.deps.schedules.next(e.policy.prune, e.policy.timezone, now);
        this.firePrune(e, 'schedule', slot);
        changed = true;
      }
    }
    if (changed) await this.saveNextRuns();
  }

  private fire(e: Entry, trigger: 'schedule' | 'catch-up', slot: Date): void {
    if (this.stopped) return;
    const policy = e.policy;
    const { catalog, clock, runner } = this.deps;
    if (this.running.has(policy.name)) {
      this.deps.log(`policy ${policy.name}: its previous run is still going - the run due at ${slot.toISOString()} is skipped`);
      this.track(catalog.update((d) => void d.jobs.push({
        id: randomBytes(6).toString('hex'), kind: 'backup', policy: policy.name, target: policy.target, trigger, state: 'skipped',
        scheduledAt: slot.toISOString(), queuedAt: clock.now().toISOString(), note: 'previous run still going', pid: process.pid,
      })));
      return;
    }
    this.running.add(policy.name);
    const run = (async () => {
      await catalog.update((d) => {
        d.policies[policy.name] = { ...d.policies[policy.name], lastScheduledAt: slot.toISOString(), lastRunAt: clock.now().toISOString() };
      });
      if (this.stopped) return;
      const outcomes = await Promise.all(policy.sources.map((s) => runner.backup(policy, s, trigger, slot)));
      const failed = outcomes.filter((o) => o.job.state === 'failed' || o.job.state === 'interrupted');
      await catalog.update((d) => {
        const st = { ...d.policies[policy.name] };
        if (failed.length === 0) {
          st.lastSuccessAt = clock.now().toISOString();
          delete st.lastError;
        } else {
          st.lastError = `${failed.length} of ${outcomes.length} source(s) failed: ${failed.map((f) => `${f.job.source}: ${f.job.error}`).join('; ')}`;
        }
        d.policies[policy.name] = st;
      });
    })().catch((err: unknown) => this.deps.log(`policy ${policy.name}: run failed: ${(err as Error).message}`))
      .finally(() => this.running.delete(policy.name));
    this.track(run);
  }

  private firePrune(e: Entry, trigger: 'schedule' | 'catch-up', slot: Date): void {
    if (this.stopped) return;
    const policy = e.policy;
    this.track((async () => {
      await this.deps.catalog.update((d) => {
        d.policies[policy.name] = { ...d.policies[policy.name], lastPruneScheduledAt: slot.toISOString() };
      });
      if (this.stopped) return;
      await this.deps.runner.prune(policy, trigger);
    })().catch((err: unknown) => this.deps.log(`policy ${policy.name}: prune failed: ${(err as Error).message}`)));
  }

  private track(p: Promise<unknown>): void {
    this.work.add(p);
    void p.finally(() => this.work.delete(p)).catch(() => undefined);
  }

  private async saveNextRuns(): Promise<void> {
    const entries = [...this.entries.values()];
    await this.deps.catalog.update((d) => {
      for (const e of entries) {
        d.policies[e.policy.name] = { ...d.policies[e.policy.name], nextRunAt: e.nextRun.toISOString(), nextPruneAt: e.nextPrune.toISOString() };
      }
    });
  }

  private async doReload(): Promise<void> {
    const load = await this.deps.load();
    const now = this.deps.clock.now();
    const next = new Map<string, Entry>();
    const bad = new Set(load.problems.map((p) => p.file));
    for (const p of load.problems) {
      const old = [...this.entries.values()].find((e) => e.policy.file === p.file);
      if (old) {
        this.logProblems(`reload: ${p.file} is invalid, keeping the previous version of policy ${old.policy.name}`, p.messages);
        next.set(old.policy.name, old);
      } else this.logProblems(`reload: ${p.file} is invalid and not scheduled`, p.messages);
    }
    for (const policy of load.policies) {
      if (bad.has(policy.file)) continue;
      const old = this.entries.get(policy.name);
      const same = old && old.policy.schedule === policy.schedule && old.policy.timezone === policy.timezone && old.policy.prune === policy.prune;
      next.set(policy.name, same ? { ...old, policy } : this.entry(policy, now));
    }
    const added = [...next.keys()].filter((n) => !this.entries.has(n));
    const removed = [...this.entries.keys()].filter((n) => !next.has(n));
    this.entries = next;
    await this.saveNextRuns();
    this.deps.log(`reloaded: ${next.size} polic${next.size === 1 ? 'y' : 'ies'}${added.length ? `, added ${added.join(', ')}` : ''}${removed.length ? `, removed ${removed.join(', ')}` : ''}`);
  }

  /** A headline, then one problem per line, so that each can be found by its file:line:column. */
  private logProblems(headline: string, lines: string[]): void {
    this.deps.log(`${headline} - ${lines.length} problem${lines.length === 1 ? '' : 's'}:`);
    for (const l of lines) this.deps.log(`  ${l}`);
  }
}
