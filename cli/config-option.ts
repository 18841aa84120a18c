import { resolve } from 'node:path';
import type { CliContext } from './context.js';

export interface ConfigOptions {
  config?: string;
}

/** The config folder: --config, else $DRCTL_CONFIG, else ./drctl-data/config (the embedded default). */
export function configDir(ctx: CliContext, opts: ConfigOptions): string {
  return resolve(opts.config ?? ctx.env.DRCTL_CONFIG ?? 'drctl-data/config');
}
