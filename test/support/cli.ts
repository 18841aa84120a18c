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

/**
 * Run drctl to its end. `timeoutMs`: a drctl still running then is killed and its result says so
 * (exit 124), so a hang fails the test that met it instead of stalling the whole suite.
 */
export function drctl(args: string[], opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = startDrctl(args, opts);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let hung = false;
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
      hung = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code: hung ? 124 : code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + (hung ? `\n(drctl ${args.join(' ')} was still running after ${opts.timeoutMs} ms and was killed)` : ''),
      });
    });
  });
}

export function startDrctl(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): ChildProcess {
  const env = { ...process.env, ...opts.env };
  delete env.DRCTL_REPO;
  if (opts.env?.DRCTL_REPO) env.DRCTL_REPO = opts.env.DRCTL_REPO;
  return spawn(process.execPath, [DRCTL, ...args], { env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The operator-facing error: exactly one line on stderr (throws otherwise). */
export function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  if (lines.length !== 1) throw new Error(`expected one line on stderr, got:\n${stderr}`);
  return lines[0] as string;
}

/** Parse the one JSON document a --json command prints. */
export function json<T = unknown>(r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`stdout is not one JSON document (exit ${r.code}):\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
}
