/**
 * The drctl command line as a function: builds the commands, runs one, and is the only place
 * that turns errors into messages and exit codes. cli/main.ts wires it to the real process.
 */
import { createRequire } from 'node:module';
import { Command, CommanderError, Option } from 'commander';
import { ConfigError, isDrError, ExitCode } from '../engine/errors.js';
import { printJson, type CliContext } from './context.js';
import type { CommandSpec } from './command.js';
import { commandsFor } from './commands/index.js';

/** Descriptions of the group commands (`drctl policy …`). */
const GROUPS: Record<string, string> = {
  policy: 'check and explain policy files',
  retention: 'try retention rules without a repository',
  repair: 'mend a repository from what it still holds: repair index',
  catalog: 'the catalog of jobs and recovery points (a cache of the repositories)',
  target: 'volumes that hold repositories: test, attach, detach, format, df',
  hosts: 'hypervisor hosts of the config folder',
};

export async function main(argv: string[], ctx: CliContext): Promise<number> {
  const program = new Command('drctl')
    .description('backup and disaster recovery for VMs and files')
    .option('--debug', 'print stack traces of unexpected errors')
    .version(`drctl ${version()}`, '-V, --version', 'print the version')
    .exitOverride()
    .configureOutput({ writeOut: (s) => ctx.stdout.write(s), writeErr: (s) => ctx.stderr.write(s) })
    .showHelpAfterError('(run with --help for usage)');
  let code: number = ExitCode.ok;
  let json = false;
  const groups = new Map<string, Command>();
  const specs = (await commandsFor(argv)) as CommandSpec<Record<string, unknown>>[];
  for (const spec of specs) {
    // "policy validate" is the sub-command validate of a group command policy.
    const words = spec.name.split(' ');
    let parent = program;
    for (const w of words.slice(0, -1)) {
      let g = groups.get(w);
      if (!g) {
        g = parent.command(w).description(GROUPS[w] ?? '').exitOverride();
        groups.set(w, g);
      }
      parent = g;
    }
    const leaf = words.at(-1) as string;
    const cmd = parent.command(spec.args ? `${leaf} ${spec.args}` : leaf).description(spec.summary);
    cmd.option('--repo <dir>', 'repository folder (default: $DRCTL_REPO)');
    cmd.option('--target <name>', 'the repository of a target defined in the config folder, instead of --repo');
    cmd.option('--state <dir>', 'state folder holding the catalog (default: $DRCTL_STATE or ./drctl-data/state)');
    cmd.option('--config <dir>', 'config folder with policies/, targets/, hosts/ (default: $DRCTL_CONFIG or ./drctl-data/config)');
    for (const o of spec.options) {
      if (o.repeatable) cmd.addOption(new Option(o.flags, o.description).argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]));
      else cmd.option(o.flags, o.description);
    }
    if (!spec.dataOnStdout) cmd.option('--json', 'print exactly one JSON document on stdout');
    cmd.option('-q, --quiet', 'print nothing but errors');
    cmd.addHelpText('after', `\nExit codes: ${spec.exitCodes}`);
    cmd.exitOverride().action(async (...a: unknown[]) => {
      const command = a.at(-1) as Command;
      const opts = command.opts();
      json = !!opts.json;
      code = await spec.run(ctx, opts, command.args);
    });
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version are "errors" to commander; usage mistakes exit 2. Commander has
      // printed the mistake on stderr; --json still gets its one document on stdout.
      if (e.exitCode === 0) return ExitCode.ok;
      const words = argv.includes('--') ? argv.slice(0, argv.indexOf('--')) : argv;
      if (words.includes('--json') && !dataOnStdout(specs, words)) printJson(ctx, { error: { code: 'USAGE', message: e.message.replace(/^error: /, ''), hint: 'run with --help for usage' } });
      return ExitCode.usage;
    }
    return reportError(ctx, e, json, argv.includes('--debug'));
  }
}

/** Whether the command `words` runs writes its data on stdout: then no JSON error goes there. */
function dataOnStdout(specs: CommandSpec<Record<string, unknown>>[], words: string[]): boolean {
  const plain = words.filter((w) => !w.startsWith('-'));
  return specs.some((s) => s.dataOnStdout && s.name.split(' ').every((w, i) => plain[i] === w));
}

/** The version in drctl's package.json (dist/cli/program.js is two levels below it). */
function version(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
}

function reportError(ctx: CliContext, e: unknown, json: boolean, debug: boolean): number {
  if (isDrError(e)) {
    const problems = e instanceof ConfigError && e.problems.length ? { problems: e.problems } : {};
    if (json) ctx.stdout.write(JSON.stringify({ error: { code: e.code, message: e.message, hint: e.hint, ...problems } }, null, 2) + '\n');
    // A multi-line message (a ConfigError listing problems) keeps its summary and hint on the
    // first line; the details follow one per line, unprefixed, so editors can jump to file:line.
    const [head, ...details] = e.message.split('\n');
    ctx.stderr.write(`drctl: ${head ?? ''}${e.hint ? ` (${e.hint})` : ''}\n`);
    for (const d of details) ctx.stderr.write(d + '\n');
    if (debug && e.stack) ctx.stderr.write(e.stack + '\n');
    return e.exitCode;
  }
  const msg = e instanceof Error ? e.message : String(e);
  if (json) ctx.stdout.write(JSON.stringify({ error: { code: 'INTERNAL', message: msg } }, null, 2) + '\n');
  ctx.stderr.write(`drctl: unexpected error: ${msg} (this is a bug; run again with --debug for details)\n`);
  if (debug && e instanceof Error && e.stack) ctx.stderr.write(e.stack + '\n');
  return ExitCode.failed;
}

