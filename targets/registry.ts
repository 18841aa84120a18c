import type { TargetDriver } from './types.js';
import { localTarget } from './local/local-target.js';

/** Open the repository storage for a plain path (the only kind the CLI takes via --repo for now). */
export async function openLocalTarget(path: string): Promise<TargetDriver> {
  return localTarget.open({ path });
}
