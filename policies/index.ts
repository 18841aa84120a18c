/**
 * Policies: what to protect, when, where, and how many generations to keep.
 *
 * - config.ts reads the config folder (policies/, targets/, hosts/) and reports every problem
 *   with file:line:column; it is the only file here that does I/O.
 * - cron.ts answers "when does this run next" in the policy's time zone (node-cron decides
 *   what matches); plan.ts shows what a policy means over a year.
 * - retention.ts decides which points a policy keeps, with restic forget 0.14 semantics in UTC.
 */
export { loadConfig, requireConfigFolder, validatePolicyFiles, loadRetentionFile, loadPolicyFile, policyLookupError, formatProblem, displayPath, invalidFileError } from './config.js';
export { parseTimedPoints } from './points-file.js';
export type { ConfigProblem, HostConfig, LoadedConfig, Policy, PolicySource, TargetConfig } from './types.js';
export { CronSchedule, cronProblem } from './cron.js';
export { planPolicy, type PolicyPlan } from './plan.js';
export { DEFAULT_PRUNE, DEFAULT_SCHEDULE } from './policy-schema.js';
export { formatInZone, timeZoneProblem } from './zone.js';
export {
  applyRetention, isEmptyRetention, parseWithin,
  type KeptPoint, type RetentionResult, type RetentionRules, type TimedPoint, type WithinDuration,
} from './retention.js';
