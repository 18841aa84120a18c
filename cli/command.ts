import type { CliContext } from './context.js';

export interface OptionSpec {
  flags: string;
  description: string;
  /** Repeatable option collected into an array. */
  repeatable?: boolean;
}

/** One CLI command: flags it takes, and run() which calls the engine and formats output. */
export interface CommandSpec<O> {
  name: string;
  summary: string;
  /** Positional arguments in commander syntax, e.g. '<point>'. */
  args?: string;
  options: OptionSpec[];
  /**
   * Standard output carries the command's data (`drctl dump`), so it has no --json, and
   * nothing else (notices, usage errors as JSON) may be written there.
   */
  dataOnStdout?: true;
  /** Exit codes this command can return, for --help. */
  exitCodes: string;
  run(ctx: CliContext, opts: O, args: string[]): Promise<number>;
}
