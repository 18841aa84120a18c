import { join } from 'node:path';
import { loadConfig, formatProblem } from '../policies/config.js';
import { ConfigError, UsageError } from '../engine/errors.js';
import { openHostTransport } from '../engine/ssh/index.js';
import { LibvirtHost } from '../engine/hosts/index.js';
import type { CliContext } from './context.js';
import { configDir, type ConfigOptions } from './config-option.js';

/** A libvirt host of the config folder (hosts/NAME.yaml), connected lazily over SSH. */
export async function openConfiguredHost(ctx: CliContext, opts: ConfigOptions, name: string): Promise<LibvirtHost> {
  const dir = configDir(ctx, opts);
  const config = await loadConfig(dir);
  const h = config.hosts.get(name);
  if (!h) {
    const problems = config.problems.filter((p) => p.file.includes(`/hosts/${name}.`) || p.file.startsWith(`hosts/${name}.`));
    if (problems.length) {
      throw new ConfigError(`host ${name} is defined in ${problems[0]?.file}, which has problems:\n${problems.map(formatProblem).join('\n')}`, problems,
        'fix the fields listed and run the command again');
    }
    const known = [...config.hosts.keys()];
    throw new UsageError(`host ${name} is not defined in ${join(dir, 'hosts')}`,
      known.length ? `known hosts: ${known.join(', ')}` : `create ${join(dir, 'hosts', `${name}.yaml`)} with driver: libvirt and ssh: {host, user, keyFile, hostKey} (see README, "Hosts")`);
  }
  if (h.driver !== 'libvirt') throw new UsageError(`host ${name} (${h.file}) has driver ${h.driver}; this command needs a libvirt host`, 'Hyper-V hosts come in a later version');
  return new LibvirtHost(await openHostTransport(h), h.uri ?? 'qemu:///system');
}
