import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';

/** A fresh temp dir for one test, removed when the test ends (pass or fail). */
export async function tempDir(t: ExecutionContext, prefix = 'drctl-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A temp dir shared by all tests of one file, for fixtures too slow to build per test. Hooks
 * cannot use t.teardown, so the caller removes it in `test.after.always`.
 */
export function sharedTempDir(prefix = 'drctl-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}
