import { printJson, say, type CliContext, type OutputOptions } from '../context.js';
import type { CommandSpec } from '../command.js';
import type { ConfigOptions } from '../config-option.js';
import { openConfiguredHost } from '../host-option.js';
import { bytes } from '../format.js';
import { ExitCode } from '../../engine/errors.js';

type Opts = ConfigOptions & OutputOptions & { host?: string };

export const hostsTestCommand: CommandSpec<Opts> = {
  name: 'hosts test',
  summary: 'check a host: SSH reachability and host key, libvirt version, guest agents, incremental backup support',
  args: '<name>',
  options: [],
  exitCodes: '0 reachable · 1 unreachable, wrong host key or libvirt failing · 2 unknown or invalid host file',
  async run(ctx: CliContext, opts: Opts, args: string[]) {
    const host = await openConfiguredHost(ctx, opts, args[0] as string);
    try {
      const t0 = performance.now();
      const version = await host.version();
      const names = await host.listNames();
      const vms = [];
      for (const n of names) {
        const state = await host.state(n);
        vms.push({ name: n, state, agent: state === 'running' ? ((await host.agentResponsive(n)) ? 'responsive' : 'not-responding') : 'vm-not-running' });
      }
      // Checkpoints and backup-begin arrived in libvirt 6.0 (pull mode with dirty bitmaps).
      const [maj = 0] = version.libvirt.split('.').map(Number);
      const incremental = maj >= 6;
      const report = { host: args[0], reachable: true, connectMs: Math.round(performance.now() - t0), libvirt: version.libvirt, hypervisor: version.hypervisor, incrementalBackup: incremental, vms };
      if (opts.json) printJson(ctx, report);
      say(ctx, opts, `${host.label}: reachable, libvirt ${version.libvirt}, ${version.hypervisor}`);
      say(ctx, opts, `  incremental backup (checkpoints + dirty bitmaps): ${incremental ? 'supported' : 'not supported (libvirt < 6.0): every backup reads whole disks'}`);
      for (const v of vms) say(ctx, opts, `  ${v.name}: ${v.state}, guest agent ${v.agent}`);
      return ExitCode.ok;
    } finally {
      await host.transport.close();
    }
  },
};

export const vmsCommand: CommandSpec<Opts> = {
  name: 'vms',
  summary: 'list the VMs of a host: state, disks with sizes, guest OS family, guest agent',
  options: [{ flags: '--host <name>', description: 'host from the config folder (hosts/NAME.yaml)' }],
  exitCodes: '0 listed · 1 host unreachable · 2 unknown or invalid host',
  async run(ctx: CliContext, opts: Opts) {
    if (!opts.host) {
      const { UsageError } = await import('../../engine/errors.js');
      throw new UsageError('vms needs --host NAME', 'e.g. `drctl vms --host hv1`');
    }
    const host = await openConfiguredHost(ctx, opts, opts.host);
    try {
      const vms = [];
      for (const n of await host.listNames()) vms.push(await host.summary(n));
      if (opts.json) printJson(ctx, { host: opts.host, vms });
      for (const v of vms) {
        say(ctx, opts, `${v.name}  ${v.state}  os ${v.osFamily}  agent ${v.agent}`);
        for (const d of v.disks) say(ctx, opts, `  ${d.dev}  ${bytes(d.sizeBytes)}  ${d.format}  ${d.source ?? ''}`);
      }
      if (!vms.length) say(ctx, opts, `${host.label}: no VMs`);
      return ExitCode.ok;
    } finally {
      await host.transport.close();
    }
  },
};
