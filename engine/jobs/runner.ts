/**
 * Runs jobs: one backup of one policy source, or one prune of a target. Concurrency is
 * limited with p-limit per target volume (default 1: concurrent jobs on one volume were
 * measured to slow each other down six-fold in the reference setting) and per host (default
 * 2). Prune is not counted against the target limit — it runs beside backups by design
 * (engine/repo/prune.ts) — but there is at most one prune per target.
 *
 * Every job is recorded in the catalog (queued → running → ok/partial/failed), with its
 * point, bytes and error; after a successful backup the policy's retention is applied to
 * that source's points.
 */
import { randomBytes } from 'node:crypto';
import pLimit, { type LimitFunction } from 'p-limit';
import type { Clock } from '../runtime/clock.js';
import type { Catalog, CatalogPoint, JobRecord } from '../catalog/catalog.js';
import { Repository } from '../repo/repository.js';
import type { Placement, Point } from '../repo/point.js';
import { InsufficientSpaceError, checkFreeSpace, imageDataBytes } from './space-guard.js';
import { forgetPoints, type RetentionFn } from './forget.js';
import { pruneRepository } from '../repo/prune.js';
import { NotARepositoryError, UsageError, isDrError } from '../errors.js';
import type { TargetDriver } from '../../targets/types.js';

/** A policy source as the engine sees it (policies/config.ts PolicySource is assignable). */
export type JobSource =
  | { kind: 'vm'; name: string; vm: string; host: string; files?: string[]; quiesce?: 'required' | 'preferred' }
  | { kind: 'image'; name: string; image: string }
  | { kind: 'path'; name: string; path: string };

export interface JobPolicy {
  name: string;
  schedule: string;
  timezone: string;
  target: string;
  fallbackTarget?: string;
  prune: string;
  sources: JobSource[];
}

export interface JobLimits {
  perTarget: number;
  perHost: number;
}

export const DEFAULT_LIMITS: JobLimits = { perTarget: 1, perHost: 2 };

export interface RunnerDeps {
  catalog: Catalog;
  clock: Clock;
  hostname: string;
  /**
   * Open the storage of a named target (config folder). Never creates it: a local folder that
   * does not exist, or a LUN that does not attach, is an error (the fallbackTarget is then used).
   */
  openTarget(name: string): Promise<TargetDriver>;
  /** The retention of a policy as a pure decision function. */
  retention(policy: JobPolicy): RetentionFn;
  log(line: string): void;
  limits?: JobLimits;
  /** Prune repack threshold (0..1). */
  repackThreshold?: number;
  /** A host of the config folder, for `vm:` sources. */
  openHost?(name: string): Promise<import('../hosts/libvirt/libvirt-host.js').LibvirtHost>;
}

export interface JobOutcome {
  job: JobRecord;
  point?: Point;
}

export function hostOf(source: JobSource): string {
  return source.kind === 'vm' ? source.host : 'local';
}

export class JobRunner {
  private readonly targetLimits = new Map<string, LimitFunction>();
  private readonly hostLimits = new Map<string, LimitFunction>();
  private readonly pruning = new Set<string>();
  private readonly active = new Set<Promise<unknown>>();
  private readonly limits: JobLimits;
  private readonly jobAbort = new AbortController();

  constructor(private readonly deps: RunnerDeps) {
    this.limits = deps.limits ?? DEFAULT_LIMITS;
  }

  /** Jobs queued or running. */
  get busy(): number {
    return this.active.size;
  }

  /** Resolves when no job is queued or running. */
  async idle(): Promise<void> {
    while (this.active.size) await Promise.allSettled([...this.active]);
  }

  /** Abandon running jobs cleanly: their pipelines stop writing and commit nothing. */
  abort(): void {
    this.jobAbort.abort();
  }

  /** Back up one source of a policy. Never throws: the outcome is on the job record. */
  backup(policy: JobPolicy, source: JobSource, trigger: JobRecord['trigger'], scheduledAt?: Date): Promise<JobOutcome> {
    return this.track(this.runBackup(policy, source, trigger, scheduledAt));
  }

  /** Prune a policy's target (skipped when a prune of that target is already running). */
  prune(policy: JobPolicy, trigger: JobRecord['trigger']): Promise<JobOutcome> {
    return this.track(this.runPrune(policy, trigger));
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.active.add(p);
    void p.finally(() => this.active.delete(p)).catch(() => undefined);
    return p;
  }

  private limiter(map: Map<string, LimitFunction>, key: string, n: number): LimitFunction {
    let l = map.get(key);
    if (!l) map.set(key, (l = pLimit(n)));
    return l;
  }

  private async runBackup(policy: JobPolicy, source: JobSource, trigger: JobRecord['trigger'], scheduledAt?: Date): Promise<JobOutcome> {
    const { catalog, clock } = this.deps;
    const job: JobRecord = {
      id: newJobId(), kind: 'backup', policy: policy.name, source: source.name, target: policy.target, host: hostOf(source),
      trigger, state: 'queued', queuedAt: clock.now().toISOString(), pid: process.pid,
      ...(scheduledAt ? { scheduledAt: scheduledAt.toISOString() } : {}),
    };
    await catalog.update((d) => void d.jobs.push(job));
    const targetLimit = this.limiter(this.targetLimits, policy.target, this.limits.perTarget);
    const hostLimit = this.limiter(this.hostLimits, hostOf(source), this.limits.perHost);
    // Target slot first: a job waiting for its volume does not hold a host slot meanwhile.
    return targetLimit(() => hostLimit(async () => {
      if (this.jobAbort.signal.aborted) return this.notStarted(policy, source, job);
      const started = clock.now();
      await this.patch(job, { state: 'running', startedAt: started.toISOString() });
      this.deps.log(`policy ${policy.name}: backing up ${source.name} to ${policy.target}`);
      let repo: Repository | undefined;
      try {
        const opened = await this.openForJob(policy, source, job);
        repo = opened.repo;
        const point = await this.backupSource(repo, policy, source, job, opened.placement);
        const partial = point.errors.length > 0;
        const fin = this.finished(job, partial ? 'partial' : 'ok', { pointId: point.id, bytesRead: point.stats.readBytes, bytesNew: point.stats.newBytes });
        Object.assign(job, fin);
        await catalog.update((d) => {
          d.points.push(catalogPoint(point, opened.placement.target, repo?.location ?? ''));
          const j = d.jobs.find((x) => x.id === job.id);
          if (j) Object.assign(j, fin);
        });
        this.deps.log(`policy ${policy.name}: ${source.name} point ${point.id.slice(0, 12)} committed${partial ? ` (partial: ${point.errors.length} items skipped)` : ''}`);
        // Interrupted after the commit (or while retention waits for its lock): the point stays
        // committed, retention waits for the next run.
        if (!this.jobAbort.signal.aborted) {
          await this.applyRetention(repo, policy, source).catch((e: unknown) => {
            if (!this.jobAbort.signal.aborted) throw e;
          });
        }
        if (this.jobAbort.signal.aborted) this.deps.log(`policy ${policy.name}: retention of ${source.name} not applied - interrupted; the next run applies it`);
        return { job, point };
      } catch (e) {
        const message = describe(e);
        const interrupted = this.jobAbort.signal.aborted;
        const fin = this.finished(job, interrupted ? 'interrupted' : 'failed', { error: message });
        Object.assign(job, fin);
        await catalog.update((d) => {
          const j = d.jobs.find((x) => x.id === job.id);
          if (j) Object.assign(j, fin);
        });
        this.deps.log(`policy ${policy.name}: ${source.name} ${job.state}: ${message}`);
        return { job };
      } finally {
        // Gives an iSCSI volume back: the last job using it detaches it.
        await repo?.target.close().catch((e: unknown) => this.deps.log(`target ${job.placement?.target ?? policy.target}: release failed: ${describe(e)}`));
      }
    }));
  }

  /**
   * The repository of the policy's target, once the free-space guard agrees; when that target
   * cannot be opened (an iSCSI volume that does not attach, a folder that does not exist: its
   * volume is not mounted) or the guard refuses it, and the policy names a fallbackTarget, the
   * fallback's. The placement says which, and why, on the job record and on the point.
   */
  private async openForJob(policy: JobPolicy, source: JobSource, job: JobRecord): Promise<{ repo: Repository; placement: Placement }> {
    try {
      const repo = await this.openGuarded(policy.target, policy, source);
      await this.patch(job, { placement: { target: policy.target } });
      return { repo, placement: { target: policy.target } };
    } catch (e) {
      if (!policy.fallbackTarget || this.jobAbort.signal.aborted) throw e;
      const reason = describe(e);
      const state = e instanceof InsufficientSpaceError ? 'has too little free space' : 'unavailable';
      this.deps.log(`policy ${policy.name}: target ${policy.target} ${state} (${reason}); using fallback target ${policy.fallbackTarget}`);
      const placement: Placement = { target: policy.fallbackTarget, fallbackFrom: policy.target, reason };
      await this.patch(job, { placement, note: `on fallback target ${policy.fallbackTarget}: ${reason}` });
      try {
        return { repo: await this.openGuarded(policy.fallbackTarget, policy, source), placement };
      } catch (e2) {
        throw new Error(`${reason}; the fallback target ${policy.fallbackTarget} failed too: ${describe(e2)}`, { cause: e2 });
      }
    }
  }

  /** The repository on a target, given back (an iSCSI volume detached) when the free-space guard refuses it. */
  private async openGuarded(targetName: string, policy: JobPolicy, source: JobSource): Promise<Repository> {
    const repo = await this.openRepository(targetName);
    try {
      await checkFreeSpace(repo, targetName, {
        name: source.name, policy: policy.name, ...(policy.fallbackTarget ? { fallbackTarget: policy.fallbackTarget } : {}),
        ...(source.kind === 'image' ? { sourceBytes: () => imageDataBytes(source.image) } : {}),
      });
      return repo;
    } catch (e) {
      await repo.target.close().catch((e2: unknown) => this.deps.log(`target ${targetName}: release failed: ${describe(e2)}`));
      throw e;
    }
  }

  private async backupSource(repo: Repository, policy: JobPolicy, source: JobSource, job: JobRecord, placement: Placement): Promise<Point> {
    const lock = await repo.lock('shared', `drctl backup ${source.name} (policy ${policy.name})`, { waitMs: 30 * 60_000, signal: this.jobAbort.signal });
    let lastProgress = 0;
    const onProgress = (p: { doneBytes: number; totalBytes: number }): void => {
      const now = Date.now();
      if (now - lastProgress < 5000) return;
      lastProgress = now;
      void this.patch(job, { progress: { doneBytes: p.doneBytes, totalBytes: p.totalBytes } }).catch(() => undefined);
    };
    const common = { name: source.name, policy: policy.name, placement, clock: this.deps.clock, hostname: this.deps.hostname, signal: this.jobAbort.signal, onProgress };
    try {
      switch (source.kind) {
        case 'image':
          return await (await import('../backup/image-backup.js')).backupImage(repo, source.image, common);
        case 'path':
          return await (await import('../backup/files-backup.js')).backupFolder(repo, source.path, common);
        case 'vm':
          return await this.backupVmSource(repo, source, common);
      }
    } finally {
      await lock.release();
    }
  }

  private async backupVmSource(repo: Repository, source: Extract<JobSource, { kind: 'vm' }>, common: { name: string; policy: string; placement: Placement; clock: Clock; hostname: string; signal: AbortSignal }): Promise<Point> {
    if (!this.deps.openHost) throw new UsageError(`source ${source.name}: VM ${source.vm} on host ${source.host} needs a host driver`, 'run it through `drctl backup --policy` or the daemon');
    const host = await this.deps.openHost(source.host);
    try {
      const { backupVm } = await import('../backup/vm-backup.js');
      return await backupVm(repo, host, {
        ...common, vm: source.vm, hostName: source.host, quiesce: source.quiesce ?? 'preferred',
        ...(source.files ? { files: source.files } : {}), log: this.deps.log,
      });
    } finally {
      await host.transport.close();
    }
  }

  /** A job interrupted while it waited for its turn: it never ran, nothing was written. */
  private async notStarted(policy: JobPolicy, source: JobSource, job: JobRecord): Promise<JobOutcome> {
    const fin = this.finished(job, 'interrupted', { error: NOT_STARTED });
    Object.assign(job, fin);
    await this.deps.catalog.update((d) => {
      const j = d.jobs.find((x) => x.id === job.id);
      if (j) Object.assign(j, fin);
    });
    this.deps.log(`policy ${policy.name}: ${source.name} not started - interrupted`);
    return { job };
  }

  private async applyRetention(repo: Repository, policy: JobPolicy, source: JobSource): Promise<void> {
    const groups = await forgetPoints(repo, {
      filter: (p) => p.policy === policy.name && p.name === source.name,
      retention: this.deps.retention(policy),
      lockWait: { waitMs: 30 * 60_000, signal: this.jobAbort.signal },
      now: this.deps.clock.now(),
    });
    const removed = new Set(groups.flatMap((g) => g.remove.map((r) => r.id)));
    if (removed.size === 0) return;
    await this.deps.catalog.update((d) => {
      d.points = d.points.filter((p) => !removed.has(p.id));
    });
    this.deps.log(`policy ${policy.name}: retention removed ${removed.size} point(s) of ${source.name}`);
  }

  private async runPrune(policy: JobPolicy, trigger: JobRecord['trigger']): Promise<JobOutcome> {
    const { catalog, clock } = this.deps;
    const job: JobRecord = {
      id: newJobId(), kind: 'prune', policy: policy.name, target: policy.target, trigger,
      state: 'queued', queuedAt: clock.now().toISOString(), pid: process.pid,
    };
    if (this.pruning.has(policy.target)) {
      job.state = 'skipped';
      job.note = `a prune of ${policy.target} is already running`;
      await catalog.update((d) => void d.jobs.push(job));
      return { job };
    }
    this.pruning.add(policy.target);
    try {
      await catalog.update((d) => void d.jobs.push({ ...job, state: 'running', startedAt: job.queuedAt }));
      const repo = await this.openRepository(policy.target);
      const r = await pruneRepository(repo, {
        repackThreshold: this.deps.repackThreshold ?? 0.25, lockWaitMs: 60 * 60_000, signal: this.jobAbort.signal,
        log: (line) => this.deps.log(`prune ${policy.target}: ${line}`),
      }).finally(() => repo.target.close());
      await catalog.update((d) => {
        const j = d.jobs.find((x) => x.id === job.id);
        if (j) Object.assign(j, this.finished(j, 'ok', { note: `freed ${r.bytesFreed} bytes, ${r.packsDeleted + r.packsRepacked + r.unindexedPacksDeleted} packs` }));
        d.policies[policy.name] = { ...d.policies[policy.name], lastPruneAt: clock.now().toISOString() };
      });
      return { job: { ...job, state: 'ok' } };
    } catch (e) {
      const message = describe(e);
      await catalog.update((d) => {
        const j = d.jobs.find((x) => x.id === job.id);
        if (j) Object.assign(j, this.finished(j, 'failed', { error: message }));
      });
      this.deps.log(`prune ${policy.target} failed: ${message}`);
      return { job: { ...job, state: 'failed', error: message } };
    } finally {
      this.pruning.delete(policy.target);
    }
  }

  /**
   * The repository on a target. A target whose folder exists and is empty (temp files and ext4's
   * lost+found aside, as `drctl target test` counts) gets a new one. A folder that does not exist
   * is never created here: openTarget refuses it, since it most often means the volume is not
   * mounted, and a repository made there would land on the disk below the mountpoint.
   */
  private async openRepository(targetName: string): Promise<Repository> {
    const target = await this.deps.openTarget(targetName);
    const deps = { clock: this.deps.clock };
    try {
      return await Repository.open(target, deps);
    } catch (e) {
      if (!(e instanceof NotARepositoryError)) throw e;
      let empty = true;
      for await (const _ of target.list('')) {
        empty = false;
        break;
      }
      if (!empty) throw e;
      try {
        const repo = await Repository.init(target, deps);
        this.deps.log(`target ${targetName}: created a new repository in ${target.location}`);
        return repo;
      } catch (initError) {
        // Another job on this new target created it first (both found it empty): use theirs.
        return await Repository.open(target, deps).catch(() => Promise.reject(initError));
      }
    }
  }

  private finished(j: JobRecord, state: JobRecord['state'], extra: Partial<JobRecord>): Partial<JobRecord> {
    const end = this.deps.clock.now();
    const durationMs = j.startedAt ? end.getTime() - new Date(j.startedAt).getTime() : 0;
    return { ...extra, state, endedAt: end.toISOString(), durationMs, progress: undefined };
  }

  private async patch(job: JobRecord, change: Partial<JobRecord>): Promise<void> {
    Object.assign(job, change);
    await this.deps.catalog.update((d) => {
      const j = d.jobs.find((x) => x.id === job.id);
      if (j) Object.assign(j, change);
    });
  }
}

export function catalogPoint(p: Point, target: string, repo: string): CatalogPoint {
  return {
    id: p.id, target, repo, name: p.name, ...(p.policy ? { policy: p.policy } : {}), kind: p.kind, time: p.time,
    logicalBytes: p.stats.logicalBytes, storedNewBytes: p.stats.storedNewBytes, partial: p.errors.length > 0,
    ...(p.fallback ? { fallback: p.fallback.reason } : {}), warnings: p.warnings?.length ?? 0,
    ...(p.placement?.fallbackFrom ? { placement: p.placement } : {}),
  };
}

/** The error of a job that was interrupted before it started. */
export const NOT_STARTED = 'interrupted before it started - nothing was written';

function newJobId(): string {
  return randomBytes(6).toString('hex');
}

function describe(e: unknown): string {
  if (isDrError(e)) return `${e.message}${e.hint ? ` (${e.hint})` : ''}`;
  return e instanceof Error ? e.message : String(e);
}

