/**
 * What a command gets from the outside world. cli/main.ts wires the real process; tests can
 * run commands in-process with their own streams.
 */
import type { Clock } from '../engine/runtime/index.js';

export interface Writer {
  write(s: string): unknown;
  isTTY?: boolean;
}

export interface CliContext {
  stdout: Writer;
  stderr: Writer;
  env: Record<string, string | undefined>;
  clock: Clock;
  hostname: string;
  signal: AbortSignal;
}

export interface OutputOptions {
  json?: boolean;
  quiet?: boolean;
}

export function printJson(ctx: CliContext, value: unknown): void {
  ctx.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function say(ctx: CliContext, opts: OutputOptions, line: string): void {
  if (!opts.json && !opts.quiet) ctx.stdout.write(line + '\n');
}
