/**
 * Every command, in the order `drctl --help` lists them, loaded on demand: a command module
 * pulls in its own dependencies (zod and yaml for config files, ssh2 for hosts, lowdb for the
 * catalog …), and loading all of them took longer than a whole incremental backup of a
 * changed-extent list. `drctl backup …` loads only backup.js; `drctl --help` loads them all.
 */
import type { CommandSpec } from '../command.js';

type AnySpec = CommandSpec<Record<string, unknown>>;

export interface CommandModule {
  /** First word of the command line that selects this module ("policy" for "policy validate"). */
  word: string;
  load(): Promise<AnySpec[]>;
}

const one = (spec: unknown): AnySpec[] => [spec as AnySpec];

export const commandModules: CommandModule[] = [
  { word: 'init', load: async () => one((await import('./init.js')).initCommand) },
  { word: 'backup', load: async () => one((await import('./backup.js')).backupCommand) },
  { word: 'points', load: async () => one((await import('./points.js')).pointsCommand) },
  { word: 'ls', load: async () => one((await import('./ls.js')).lsCommand) },
  { word: 'dump', load: async () => one((await import('./dump.js')).dumpCommand) },
  { word: 'restore', load: async () => one((await import('./restore.js')).restoreCommand) },
  { word: 'check', load: async () => one((await import('./check.js')).checkCommand) },
  { word: 'forget', load: async () => one((await import('./forget.js')).forgetCommand) },
  { word: 'prune', load: async () => one((await import('./prune.js')).pruneCommand) },
  { word: 'daemon', load: async () => one((await import('./daemon.js')).daemonCommand) },
  { word: 'status', load: async () => one((await import('./status.js')).statusCommand) },
  { word: 'repair', load: async () => one((await import('./repair.js')).repairIndexCommand) },
  { word: 'catalog', load: async () => one((await import('./catalog.js')).catalogRebuildCommand) },
  {
    word: 'policy',
    load: async () => [...one((await import('./policy-validate.js')).policyValidateCommand), ...one((await import('./policy-plan.js')).policyPlanCommand)],
  },
  { word: 'retention', load: async () => one((await import('./retention-simulate.js')).retentionSimulateCommand) },
  { word: 'target', load: async () => (await import('./target.js')).targetCommands as unknown as AnySpec[] },
  { word: 'hosts', load: async () => one((await import('./hosts.js')).hostsTestCommand) },
  { word: 'vms', load: async () => one((await import('./hosts.js')).vmsCommand) },
];

/**
 * The commands needed to run `argv`: only the module its first word names, none for
 * `--version`, or all of them (help, a mistyped command: commander then lists or suggests
 * from the full set).
 */
export async function commandsFor(argv: string[]): Promise<AnySpec[]> {
  const word = argv.find((a) => !a.startsWith('-'));
  if (word === undefined && (argv.includes('--version') || argv.includes('-V'))) return [];
  const mods = commandModules.filter((m) => m.word === word);
  const chosen = mods.length > 0 ? mods : commandModules;
  return (await Promise.all(chosen.map((m) => m.load()))).flat();
}
