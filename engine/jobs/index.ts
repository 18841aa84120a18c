/**
 * Jobs: the runner (limits per volume and host, every job recorded in the catalog), the daemon
 * that feeds it from the policies' schedules (one per state folder: daemon-lock.ts), and the
 * status computed from both. Policies and retention rules come in as plain values and
 * functions, so jobs/ does not depend on policies/.
 *
 * forget.ts is an entry point of its own as well: `drctl forget` needs only forgetPoints, and
 * this index loads the runner (p-limit, prune), ~12 ms more at start-up.
 */
export { JobRunner, catalogPoint, type JobLimits, type JobPolicy } from './runner.js';
export { Daemon, type PolicyLoad, type Schedules } from './daemon.js';
export { acquireDaemonLock, type DaemonLock } from './daemon-lock.js';
export { computeStatus } from './status.js';
export { forgetPoints } from './forget.js';
