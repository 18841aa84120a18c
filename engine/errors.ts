/**
 * One error hierarchy for everything an operator can meet. Each class carries a stable
 * `code`, the process exit code (mapped once, here, so message and code cannot drift apart)
 * and a `hint` naming the next step. Messages follow "what failed, on which object - cause".
 *
 * Exit codes are the documented CLI contract: 0 ok, 1 failed, 2 usage or configuration
 * error (nothing was changed), 3 partial (the point was committed, some items failed).
 */
export const ExitCode = { ok: 0, failed: 1, usage: 2, partial: 3 } as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export abstract class DrError extends Error {
  abstract readonly code: string;
  abstract readonly exitCode: ExitCodeValue;
  constructor(message: string, readonly hint?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad command line or configuration; nothing was changed. */
export class UsageError extends DrError {
  readonly code = 'USAGE';
  readonly exitCode = ExitCode.usage;
}

/** One problem in a config file, located so an editor can jump to it. */
export interface ConfigProblem {
  /** As given by the caller (relative paths stay relative). */
  file: string;
  /** 1-based. */
  line: number;
  /** 1-based. */
  column: number;
  /** Field path as written in the file: `retention.daily`, `sources[2].host`; '' for the whole file. */
  path: string;
  /** What is wrong. */
  message: string;
  /** What to write instead. */
  fix?: string;
}

/**
 * A config or policy file (or a data file given on the command line) is invalid. The message
 * lists every problem, one per line, so nothing has to be fixed blindly one run at a time.
 */
export class ConfigError extends DrError {
  readonly code = 'CONFIG_INVALID';
  readonly exitCode = ExitCode.usage;
  constructor(message: string, readonly problems: readonly ConfigProblem[] = [], hint?: string) {
    super(message, hint ?? 'fix the fields listed below and run the command again; `drctl policy validate` checks policy files without running anything');
  }
}

export class RepoNotFoundError extends DrError {
  readonly code = 'REPO_NOT_FOUND';
  readonly exitCode = ExitCode.usage;
  constructor(repo: string) {
    super(`repository ${repo} does not exist`,
      `create it with \`drctl init --repo ${repo}\`, or point --repo / DRCTL_REPO at an existing repository`);
  }
}

export class NotARepositoryError extends DrError {
  readonly code = 'NOT_A_REPO';
  readonly exitCode = ExitCode.usage;
  constructor(repo: string, why: string) {
    super(`${repo} is not a drctl repository - ${why}`,
      `check --repo / DRCTL_REPO; to start a new repository use an empty folder with \`drctl init\``);
  }
}

export class RepoVersionError extends DrError {
  readonly code = 'REPO_VERSION';
  readonly exitCode = ExitCode.usage;
  constructor(repo: string, found: number, supported: number) {
    super(`repository ${repo} has format version ${found}; this drctl reads versions up to ${supported}`,
      'upgrade drctl to a release that supports this repository format; nothing was changed');
  }
}

export class RepositoryLockedError extends DrError {
  readonly code = 'REPO_LOCKED';
  readonly exitCode = ExitCode.failed;
  constructor(repo: string, holder: string) {
    super(`cannot lock repository ${repo} - locked by ${holder}`,
      'wait for that job to finish; a lock whose process is gone expires by itself after its heartbeat stops');
  }
}

/** Another daemon holds the state folder (its lock is live). */
export class DaemonRunningError extends DrError {
  readonly code = 'DAEMON_RUNNING';
  readonly exitCode = ExitCode.failed;
  constructor(stateDir: string, holder: { pid: number; host: string; startedAt: string }) {
    super(`cannot start the daemon on state folder ${stateDir} - a daemon is already running there (pid ${holder.pid} on ${holder.host}, since ${holder.startedAt})`,
      `stop that daemon first, with SIGTERM to pid ${holder.pid} on ${holder.host}; a daemon whose process is gone does not block the next start`);
  }
}

export class SourceError extends DrError {
  readonly code = 'SOURCE_UNREADABLE';
  readonly exitCode = ExitCode.usage;
  constructor(path: string, why: string, options?: { cause?: unknown; hint?: string }) {
    super(`cannot read source ${path} - ${why}`, options?.hint ?? (hasErrno(options?.cause, 'EIO')
      ? 'the storage under it returned an I/O error: check that disk or volume (kernel log, dmesg), then run the backup again; older points are intact'
      : 'check the path and that drctl may read it (permissions, the file is not in use exclusively)'), options);
  }
}

export class TargetFullError extends DrError {
  readonly code = 'TARGET_FULL';
  readonly exitCode = ExitCode.failed;
  constructor(location: string, options?: { cause?: unknown }) {
    super(`target ${location} is out of space - nothing was committed, older points are intact`,
      'free space on the volume (drctl prune removes unreferenced data) or use a larger target, then run the backup again', options);
  }
}

export class TargetIoError extends DrError {
  readonly code = 'TARGET_IO';
  readonly exitCode = ExitCode.failed;
}

/** Data in the repository is missing or does not match its hash. */
export class IntegrityError extends DrError {
  readonly code = 'INTEGRITY';
  readonly exitCode = ExitCode.failed;
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options?.hint ?? 'run `drctl check --read-data` to see every affected point; restore from another point', options);
  }
}

/**
 * A worker thread of drctl itself (hashing, compression, file writes) failed or could not start:
 * not the data's fault, so it must not be reported as a damaged pack.
 */
export class WorkerThreadError extends DrError {
  readonly code = 'WORKER_FAILED';
  readonly exitCode = ExitCode.failed;
  constructor(script: string, why: string, options?: { cause?: unknown }) {
    super(`a worker thread of drctl (${script}) failed - ${why}`,
      'reinstall drctl (`npm ci && npm run build`) and run the command again; this is drctl\'s own failure, not damage in the repository, and nothing half-done was committed', options);
  }
}

/** The hint for data a point needs that no index file lists: lost index files are rebuilt from the packs. */
export const NOT_INDEXED_HINT = 'if index files were lost or damaged, `drctl repair index` rebuilds the index from the packs\' own headers; then `drctl check` says what is still missing';

export class PointNotFoundError extends DrError {
  readonly code = 'POINT_NOT_FOUND';
  readonly exitCode = ExitCode.usage;
}

export class DestinationExistsError extends DrError {
  readonly code = 'DEST_EXISTS';
  readonly exitCode = ExitCode.usage;
  constructor(path: string, more = 0) {
    super(`restore destination ${path} already exists${more > 0 ? ` (and ${more} more)` : ''} - nothing was written`,
      'choose another --to, or add --overwrite to replace existing files');
  }
}

/**
 * Writing a restore's destination failed: its volume is full, read-only, failing or not ours
 * to write. A restore only reads the repository, so nothing there changed.
 */
export class DestinationWriteError extends DrError {
  readonly code = 'DEST_WRITE';
  readonly exitCode = ExitCode.failed;
}

const DEST_WRITE_CAUSES: Record<string, [why: string, hint: string]> = {
  ENOSPC: ['its volume is out of space', 'free space on that volume, or give --to a place with room'],
  EDQUOT: ['the disk quota there is used up', 'raise the quota, or give --to another place'],
  EROFS: ['its volume is read-only', 'give --to a writable place'],
  EIO: ['its volume returned an I/O error', 'check that disk in the kernel log (dmesg), or give --to another place'],
  EACCES: ['permission denied', 'restore as a user who may write there, or give --to another place'],
  EPERM: ['permission denied', 'restore as a user who may write there, or give --to another place'],
};

/**
 * `e` as a DestinationWriteError when it is a system error of the destination (a restore's
 * only writes go there; reads of the repository fail as DrErrors of their own); anything else
 * as it is. `left` says what of the restore is left at `dest`.
 */
export function asDestinationError(e: unknown, dest: string, left: string): unknown {
  const code = errnoCode(e);
  if (code === undefined || isDrError(e)) return e;
  // Other errnos (ESPIPE, EINVAL from a device or /proc file given as --to): said as they are.
  const [why, hint] = DEST_WRITE_CAUSES[code] ?? [(e as Error).message.replace(/^\w+: /, ''), 'give --to a regular file or folder on a writable volume'];
  return new DestinationWriteError(`cannot write restore destination ${dest} - ${why} (${code}); ${left}`,
    `${hint}; the repository is unchanged`, { cause: e });
}

/** Creating a restore's destination (its folder, the image or archive file) failed; nothing was written. */
export function destinationCreateError(dest: string, e: unknown): UsageError {
  return new UsageError(`cannot create restore destination ${dest} - ${(e as Error).message}`,
    'check that its folder exists and is writable, or give --to another place', { cause: e });
}

export class UnsafePathError extends DrError {
  readonly code = 'UNSAFE_PATH';
  readonly exitCode = ExitCode.failed;
  constructor(path: string, why: string, hint = 'the point holds a name that would escape the destination; restore another point or use --include') {
    super(`refusing to write ${path} - ${why}`, hint);
  }
}

export class InterruptedError extends DrError {
  readonly code = 'INTERRUPTED';
  readonly exitCode = ExitCode.failed;
  /** Without arguments, what a backup or maintenance command says; a restore says what it left behind. */
  constructor(message = 'interrupted - nothing was committed, the repository is consistent', hint = 'run the command again') {
    super(message, hint);
  }
}

export function isDrError(e: unknown): e is DrError {
  return e instanceof DrError;
}

/** Whether `e` or an error in its `cause` chain carries the errno `code` ('EIO'). */
export function hasErrno(e: unknown, code: string): boolean {
  for (let c: unknown = e, depth = 0; c && depth < 8; c = (c as { cause?: unknown }).cause, depth++) {
    if (errnoCode(c) === code) return true;
  }
  return false;
}

/** errno code of a Node system error, if any. */
export function errnoCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e && typeof (e as { code: unknown }).code === 'string'
    ? (e as { code: string }).code : undefined;
}
