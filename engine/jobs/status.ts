/**
 * What `drctl status` shows, computed from the policies and the catalog: per policy and
 * source the newest point, its age against the schedule (RPO met or missed), the next run,
 * running jobs with progress, and the last error.
 */
import type { CatalogData, JobRecord } from '../catalog/catalog.js';
import type { Schedules } from './daemon.js';
import type { JobPolicy } from './runner.js';

export interface SourceStatus {
  name: string;
  kind: string;
  lastPoint?: { id: string; time: string; partial: boolean; fallback?: string; placement?: { target: string; fallbackFrom?: string; reason?: string } };
  /** Seconds since the newest point. */
  ageSeconds?: number;
  /** The schedule's interval around now, and whether the newest point is recent enough. */
  rpo: { intervalSeconds: number; met: boolean };
  running?: { jobId: string; startedAt?: string; doneBytes?: number; totalBytes?: number };
  lastError?: string;
}

export interface PolicyStatus {
  name: string;
  target: string;
  schedule: string;
  timezone: string;
  nextRun: string;
  lastSuccessAt?: string;
  lastError?: string;
  sources: SourceStatus[];
}

export interface StatusReport {
  now: string;
  policies: PolicyStatus[];
  /** Jobs the catalog says are running but whose process is gone. */
  abandonedJobs: { id: string; policy?: string; source?: string; startedAt?: string }[];
}

/**
 * RPO is met while the newest point is younger than one schedule interval plus a grace of half
 * an interval (at most an hour), which leaves the due run time to finish.
 */
export function computeStatus(policies: JobPolicy[], data: CatalogData, now: Date, schedules: Schedules): StatusReport {
  const alive = (j: JobRecord) => j.state === 'running' && (j.pid === undefined || pidAlive(j.pid));
  const policiesOut = policies.map((p): PolicyStatus => {
    const st = data.policies[p.name] ?? {};
    const prev = schedules.prev(p.schedule, p.timezone, now, new Date(now.getTime() - 400 * 86_400_000)) ?? now;
    const interval = Math.max(60, (schedules.next(p.schedule, p.timezone, prev).getTime() - prev.getTime()) / 1000);
    const grace = Math.min(interval / 2, 3600);
    const nextRun = st.nextRunAt && new Date(st.nextRunAt) > now ? st.nextRunAt : schedules.next(p.schedule, p.timezone, now).toISOString();
    return {
      name: p.name, target: p.target, schedule: p.schedule, timezone: p.timezone, nextRun,
      ...(st.lastSuccessAt ? { lastSuccessAt: st.lastSuccessAt } : {}),
      ...(st.lastError ? { lastError: st.lastError } : {}),
      sources: p.sources.map((s): SourceStatus => {
        const pts = data.points.filter((x) => x.policy === p.name && x.name === s.name).sort((a, b) => a.time.localeCompare(b.time));
        const last = pts.at(-1);
        const age = last ? Math.max(0, (now.getTime() - new Date(last.time).getTime()) / 1000) : undefined;
        const jobs = data.jobs.filter((j) => j.kind === 'backup' && j.policy === p.name && j.source === s.name);
        const run = jobs.filter(alive).at(-1);
        const lastEnded = jobs.filter((j) => j.endedAt).at(-1);
        return {
          name: s.name, kind: s.kind,
          ...(last ? { lastPoint: { id: last.id, time: last.time, partial: last.partial, ...(last.fallback ? { fallback: last.fallback } : {}), ...(last.placement ? { placement: last.placement } : {}) } } : {}),
          ...(age !== undefined ? { ageSeconds: Math.round(age) } : {}),
          rpo: { intervalSeconds: interval, met: age !== undefined && age <= interval + grace },
          ...(run ? { running: { jobId: run.id, startedAt: run.startedAt, doneBytes: run.progress?.doneBytes, totalBytes: run.progress?.totalBytes } } : {}),
          ...(lastEnded?.state === 'failed' || lastEnded?.state === 'interrupted' ? { lastError: lastEnded.error ?? lastEnded.state } : {}),
        };
      }),
    };
  });
  const abandoned = data.jobs.filter((j) => j.state === 'running' && !alive(j))
    .map((j) => ({ id: j.id, policy: j.policy, source: j.source, startedAt: j.startedAt }));
  return { now: now.toISOString(), policies: policiesOut, abandonedJobs: abandoned };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === 'EPERM';
  }
}

