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
  /** Exit codes this command can return, for --help. */
  exitCodes: string;
  run(ctx: CliContext, opts: O, args: string[]): Promise<number>;
}
