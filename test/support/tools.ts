import { execFileSync, spawnSync } from 'node:child_process';
import type { ExecutionContext } from 'ava';

/**
 * Integration tests need real tools (qemu-img, losetup, mount). A missing one skips the test
 * with a message — unless DR_REQUIRE_INTEGRATION=1 (always in CI), where it fails the run.
 */
export function hasTool(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

export function requireTools(t: ExecutionContext, ...cmds: string[]): boolean {
  const missing = cmds.filter((c) => !hasTool(c));
  if (missing.length === 0) return true;
  const msg = `needs ${missing.join(', ')} (run scripts/setup.sh)`;
  if (process.env.DR_REQUIRE_INTEGRATION === '1') t.fail(msg);
  else t.log(`skipped: ${msg}`);
  t.pass();
  return false;
}

/** Root is needed (loop devices, mounts, device nodes): false skips the test, or fails it when DR_REQUIRE_INTEGRATION=1. */
export function requireRoot(t: ExecutionContext, why: string): boolean {
  if (process.getuid?.() === 0) return true;
  if (process.env.DR_REQUIRE_INTEGRATION === '1') t.fail(`needs root to ${why}`);
  else t.pass();
  return false;
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8' });
}
