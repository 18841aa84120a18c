/**
 * The catalog: jobs with their state, duration, bytes and errors; the recovery points of every
 * target; per-policy state (last run, last success, next run). One lowdb JSON file.
 *
 * It is a cache: repositories are the truth, and `drctl catalog rebuild` recreates the points
 * part from them alone (a spare node that mounts the volume needs nothing else). The daemon
 * and one-off CLI runs share the file, so every change is a read-modify-write under a lock
 * file (proper-lockfile), and lowdb writes it atomically (temp file + rename).
 */
import { makeDirs } from '../runtime/fs.js';
import { dirname } from 'node:path';
import { Low } from 'lowdb';
import { JSONFile } from 'lowdb/node';
import lockfile from 'proper-lockfile';
import { DrError, ExitCode } from '../errors.js';

export type JobState = 'queued' | 'running' | 'ok' | 'partial' | 'failed' | 'skipped' | 'interrupted';

export interface JobRecord {
  id: string;
  kind: 'backup' | 'prune';
  policy?: string;
  /** Source (point) name, for backups. */
  source?: string;
  target: string;
  host?: string;
  trigger: 'schedule' | 'catch-up' | 'manual';
  state: JobState;
  /** The scheduled instant this run stands for (schedule and catch-up runs). */
  scheduledAt?: string;
  queuedAt: string;
  startedAt?: string;
  endedAt?: string;
  durationMs?: number;
  bytesRead?: number;
  bytesNew?: number;
  pointId?: string;
  error?: string;
  progress?: { doneBytes: number; totalBytes: number };
  /** Why a job was skipped, where a point went, etc. */
  note?: string;
  pid: number;
  /** The target the job wrote to; with fallbackFrom and reason when it was the policy's fallback. */
  placement?: { target: string; fallbackFrom?: string; reason?: string };
}

export interface CatalogPoint {
  id: string;
  target: string;
  repo: string;
  name: string;
  policy?: string;
  kind: 'vm' | 'files';
  time: string;
  logicalBytes: number;
  storedNewBytes: number;
  partial: boolean;
  fallback?: string;
  warnings: number;
  /** Set when the point went to a policy's fallback target. */
  placement?: { target: string; fallbackFrom?: string; reason?: string };
}

export interface PolicyState {
  /** Scheduled instant of the newest run that was started (for catch-up after downtime). */
  lastScheduledAt?: string;
  lastRunAt?: string;
  lastSuccessAt?: string;
  lastError?: string;
  nextRunAt?: string;
  lastPruneAt?: string;
  /** Scheduled instant of the newest prune that was started. */
  lastPruneScheduledAt?: string;
  nextPruneAt?: string;
}

export interface CatalogData {
  version: 1;
  jobs: JobRecord[];
  points: CatalogPoint[];
  policies: Record<string, PolicyState>;
}

/** Finished jobs kept in the catalog (the newest). */
const MAX_JOBS = 5000;

export class CatalogError extends DrError {
  readonly code = 'CATALOG';
  readonly exitCode = ExitCode.failed;
}

export class Catalog {
  private constructor(readonly file: string) {}

  static async open(file: string): Promise<Catalog> {
    await makeDirs(dirname(file));
    return new Catalog(file);
  }

  /** A fresh read. A missing file is an empty catalog. */
  async read(): Promise<CatalogData> {
    const db = new Low<CatalogData>(new JSONFile<CatalogData>(this.file), empty());
    try {
      await db.read();
    } catch (e) {
      throw new CatalogError(`catalog ${this.file} is damaged - ${(e as Error).message}`,
        'it is only a cache: `drctl catalog rebuild` recreates it from the repositories', { cause: e });
    }
    const d = db.data;
    if (d.version !== 1 || !Array.isArray(d.jobs) || !Array.isArray(d.points) || typeof d.policies !== 'object') {
      throw new CatalogError(`catalog ${this.file} is not a drctl v1 catalog`, 'move it away and run `drctl catalog rebuild`');
    }
    return d;
  }

  /** Read, change, write — under the catalog's lock, so the daemon and CLI runs do not lose each other's changes. */
  async update<T>(fn: (d: CatalogData) => T, opts: { replace?: boolean } = {}): Promise<T> {
    const release = await lockfile.lock(this.file, {
      realpath: false, stale: 15_000, update: 5_000,
      retries: { retries: 200, minTimeout: 20, maxTimeout: 250 },
    });
    try {
      const data = opts.replace ? empty() : await this.read();
      const out = fn(data);
      if (data.jobs.length > MAX_JOBS) {
        // Drop the oldest finished jobs; queued and running ones stay.
        const live = (j: JobRecord) => j.state === 'queued' || j.state === 'running';
        let excess = data.jobs.length - MAX_JOBS;
        data.jobs = data.jobs.filter((j) => live(j) || excess-- <= 0);
      }
      const db = new Low<CatalogData>(new JSONFile<CatalogData>(this.file), data);
      await db.write();
      return out;
    } finally {
      await release();
    }
  }
}

function empty(): CatalogData {
  return { version: 1, jobs: [], points: [], policies: {} };
}
