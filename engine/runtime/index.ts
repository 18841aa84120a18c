/**
 * The process's ambient powers — time and child processes — as plain values, so that the
 * engine and the CLI take them as arguments and tests substitute their own (a fixed or a
 * simulated clock). The rest of runtime/ (fs, worker pool, GC pacing) serves the pipelines
 * inside engine/ and is not part of this surface.
 */
export { systemClock, systemSleepClock, type Clock, type SleepClock } from './clock.js';
export { execFile } from './exec.js';
export { shutdown } from './shutdown.js';
export { makeDirs } from './fs.js';
export { printable } from './text.js';
