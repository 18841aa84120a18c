import { initCommand } from './init.js';
import { backupCommand } from './backup.js';
import { pointsCommand } from './points.js';
import { restoreCommand } from './restore.js';
import { checkCommand } from './check.js';
import { forgetCommand } from './forget.js';
import { pruneCommand } from './prune.js';
import { daemonCommand } from './daemon.js';
import { statusCommand } from './status.js';
import { catalogRebuildCommand } from './catalog.js';
import { policyValidateCommand } from './policy-validate.js';
import { policyPlanCommand } from './policy-plan.js';
import { retentionSimulateCommand } from './retention-simulate.js';
import { targetCommands } from './target.js';
import { hostsTestCommand, vmsCommand } from './hosts.js';

/** Every command, in the order `drctl --help` lists them. */
export const commands = [
  initCommand, backupCommand, pointsCommand, restoreCommand, checkCommand,
  forgetCommand, pruneCommand, daemonCommand, statusCommand, catalogRebuildCommand,
  policyValidateCommand, policyPlanCommand, retentionSimulateCommand,
  ...targetCommands,
  hostsTestCommand, vmsCommand,
];
