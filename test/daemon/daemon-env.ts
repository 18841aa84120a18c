/**
 * A config folder with one local target and one policy, and helpers to watch a `drctl daemon`
 * child process: the setup of the daemon tests in this folder.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { tempDir } from '../support/tmp.js';

export interface Env {
  dir: string;
  config: string;
  state: string;
  repo: string;
  args: string[];
}

/** `policy` is written as YAML, one `key: JSON` line per field, into policies/NAME.yaml; the target is vol1. */
export async function env(t: Parameters<typeof tempDir>[0], policy: Record<string, unknown>): Promise<Env> {
  const dir = await tempDir(t);
  const config = join(dir, 'config');
  await mkdir(join(config, 'targets'), { recursive: true });
  await mkdir(join(config, 'policies'), { recursive: true });
  // The target's folder exists (empty): a job creates the repository in it, never the folder.
  const repo = join(dir, 'repo');
  await mkdir(repo);
  await writeFile(join(config, 'targets', 'vol1.yaml'), `type: local\npath: ${repo}\n`);
  await writeFile(join(config, 'policies', `${policy.name as string}.yaml`), Object.entries(policy).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join('\n') + '\n');
  const state = join(dir, 'state');
  return { dir, config, state, repo, args: ['--config', config, '--state', state] };
}

/** Replace the placeholder `"from"` (a JSON string) in a policy file by the JSON of `to`. */
export async function fillIn(e: Env, policy: string, from: string, to: string): Promise<void> {
  const file = join(e.config, 'policies', `${policy}.yaml`);
  await writeFile(file, (await readFile(file, 'utf8')).replace(JSON.stringify(from), JSON.stringify(to)));
}

/** A catalog that remembers a run `hoursAgo` hours ago: a daemon started now owes one catch-up run. */
export async function lastRunHoursAgo(e: Env, policy: string, hoursAgo: number): Promise<void> {
  await mkdir(e.state, { recursive: true });
  const at = new Date(Date.now() - hoursAgo * 3_600_000).toISOString();
  await writeFile(join(e.state, 'catalog.json'), JSON.stringify({ version: 1, jobs: [], points: [], policies: { [policy]: { lastScheduledAt: at } } }));
}

/** Collect a child's stdout and resolve when a line matches. */
export function waitFor(child: ChildProcess, re: RegExp, out: { text: string }, ms = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re} in:\n${out.text}`)), ms);
    const check = (): void => {
      if (re.test(out.text)) {
        clearTimeout(timer);
        child.stdout?.off('data', check);
        resolve();
      }
    };
    child.stdout?.on('data', check);
    check();
  });
}

export function collect(child: ChildProcess): { text: string; err: string } {
  const out = { text: '', err: '' };
  child.stdout?.on('data', (b: Buffer) => (out.text += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out.err += b.toString()));
  return out;
}

export function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
    else child.on('close', (code) => resolve(code));
  });
}

/** The exit code, or 'still running' (and the child is killed) when it has not exited within `ms`. */
export async function exitWithin(child: ChildProcess, ms: number): Promise<number | null | 'still running'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'still running'>((resolve) => (timer = setTimeout(() => resolve('still running'), ms)));
  const r = await Promise.race([exited(child), late]);
  clearTimeout(timer);
  if (r === 'still running') {
    child.kill('SIGKILL');
    await exited(child);
  }
  return r;
}
