/**
 * Run the real drctl binary (built to dist/) as a child process, as an operator would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const DRCTL = fileURLToPath(new URL('../../cli/main.js', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function drctl(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = startDrctl(args, opts);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({
      code: code ?? (signal ? 128 : 1),
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(err).toString('utf8'),
    }));
  });
}

export function startDrctl(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): ChildProcess {
  const env = { ...process.env, ...opts.env };
  delete env.DRCTL_REPO;
  if (opts.env?.DRCTL_REPO) env.DRCTL_REPO = opts.env.DRCTL_REPO;
  return spawn(process.execPath, [DRCTL, ...args], { env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Parse the one JSON document a --json command prints. */
export function json<T = unknown>(r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`stdout is not one JSON document (exit ${r.code}):\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
}
