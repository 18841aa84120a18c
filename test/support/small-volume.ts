/**
 * A real small volume for target tests: a tmpfs of a given size mounted on a folder, unmounted
 * when the test ends (before its temp dir is removed: teardowns run last-registered first).
 * Mounting needs root; without it the test is skipped with a message, or fails when
 * DR_REQUIRE_INTEGRATION=1.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir, statfs } from 'node:fs/promises';
import type { ExecutionContext } from 'ava';

/** Mount a `sizeMiB` tmpfs on `dir` (made if missing); false when this machine cannot (the test then returns). */
export async function mountSmallVolume(t: ExecutionContext, dir: string, sizeMiB: number): Promise<boolean> {
  await mkdir(dir, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0755`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (e) {
    const msg = `needs to mount a tmpfs (root): ${(e as Error).message.split('\n')[0] ?? ''}`;
    if (process.env.DR_REQUIRE_INTEGRATION === '1') t.fail(msg);
    else t.log(`skipped: ${msg}`);
    t.pass();
    return false;
  }
  t.teardown(() => unmount(dir)); // a test that unmounted it already: umount fails, harmlessly
  return true;
}

/** Unmount a volume mounted by mountSmallVolume (the test's "the volume went away"). */
export function unmount(dir: string): void {
  spawnSync('umount', [dir], { stdio: 'ignore' });
}

export async function freeBytes(dir: string): Promise<number> {
  const st = await statfs(dir);
  return st.bavail * st.bsize;
}
