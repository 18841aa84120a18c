/**
 * A libvirt host driven by `virsh -c URI …` over the host's transport (SSH). Everything drctl
 * does on the host goes through here: listing domains, the guest agent, checkpoints, pull-mode
 * backup jobs, qemu-nbd for restores.
 */
import { UsageError } from '../../errors.js';
import { RemoteCommandError, shq, type HostTransport } from '../../ssh/index.js';
import { parseDomain, type DomainInfo } from './domain-xml.js';

export interface VmSummary {
  name: string;
  uuid: string;
  state: string;
  disks: { dev: string; source?: string; format: string; sizeBytes: number }[];
  /** Guest agent answered a ping (running VMs only). */
  agent: 'responsive' | 'not-responding' | 'no-channel' | 'vm-not-running';
  osFamily: 'linux' | 'windows' | 'unknown';
}

export class LibvirtHost {
  constructor(readonly transport: HostTransport, readonly uri: string) {}

  get label(): string {
    return this.transport.label;
  }

  /** Run virsh; non-zero exit → RemoteCommandError with virsh's own message. */
  async virsh(args: string[], opts: { stdin?: string; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<string> {
    const cmd = ['virsh', '-q', '-c', this.uri, ...args].map(shq).join(' ');
    const r = await this.transport.exec(cmd, opts);
    if (r.code !== 0) {
      const msg = r.stderr.trim().split('\n').filter(Boolean).join('; ').replace(/^error: /, '') || `exit ${r.code}`;
      throw new RemoteCommandError(`${this.label}: virsh ${args[0] ?? ''} failed - ${msg}`,
        r.code === 127 ? 'install libvirt-clients on the host' : 'check the VM and libvirtd on the host (`virsh -c URI list --all`)');
    }
    return r.stdout;
  }

  /** A shell command on the host that must succeed. */
  async sh(cmd: string, what: string, opts: { timeoutMs?: number; stdin?: string } = {}): Promise<string> {
    const r = await this.transport.exec(cmd, opts);
    if (r.code !== 0) throw new RemoteCommandError(`${this.label}: ${what} failed - ${r.stderr.trim().split('\n')[0] ?? `exit ${r.code}`}`, 'check the host');
    return r.stdout;
  }

  async version(): Promise<{ libvirt: string; hypervisor: string }> {
    const out = await this.virsh(['version']);
    return {
      libvirt: /Using library: libvirt ([\d.]+)/.exec(out)?.[1] ?? 'unknown',
      hypervisor: /Running hypervisor: (.+)/.exec(out)?.[1]?.trim() ?? 'unknown',
    };
  }

  async listNames(): Promise<string[]> {
    return (await this.virsh(['list', '--all', '--name'])).split('\n').map((s) => s.trim()).filter(Boolean);
  }

  async exists(name: string): Promise<boolean> {
    const r = await this.transport.exec(['virsh', '-q', '-c', this.uri, 'domuuid', name].map(shq).join(' '));
    return r.code === 0;
  }

  /**
   * Throws UsageError (exit 2) naming the VMs the host has when `name` is not one of them.
   * `hostName` is the config name (hosts/NAME.yaml) for the hint.
   */
  async requireVm(name: string, hostName?: string): Promise<void> {
    if (await this.exists(name)) return;
    // domuuid also fails when libvirtd does not answer: then listing fails with that cause.
    const names = await this.listNames();
    const list = names.length ? ` - VMs there: ${names.join(', ')}` : ' - it has no VMs';
    throw new UsageError(`${this.label} has no VM named ${name}${list}`,
      `check the VM name (case matters)${hostName ? `; \`drctl vms --host ${hostName}\` lists them with their state` : ''}`);
  }

  /**
   * The job running on the domain (`virsh domjobinfo`), undefined when none. `operation` is
   * libvirt's name for it: Backup, Outgoing migration, Snapshot…
   */
  async activeJob(name: string): Promise<{ type: string; operation?: string } | undefined> {
    const out = await this.virsh(['domjobinfo', name]);
    const type = /^Job type:\s*(.+?)\s*$/m.exec(out)?.[1] ?? 'None';
    if (type === 'None') return undefined;
    const operation = /^Operation:\s*(.+?)\s*$/m.exec(out)?.[1];
    return { type, ...(operation ? { operation } : {}) };
  }

  /** Unix socket of the running pull-mode backup job; undefined when none (or push mode). */
  async backupJobSocket(name: string): Promise<string | undefined> {
    const r = await this.transport.exec(['virsh', '-q', '-c', this.uri, 'backup-dumpxml', name].map(shq).join(' '));
    if (r.code !== 0) return undefined;
    return /<server\b[^>]*\bsocket=['"]([^'"]+)['"]/.exec(r.stdout)?.[1];
  }

  /** The description of a checkpoint ('' when it has none). */
  async checkpointDescription(name: string, checkpoint: string): Promise<string> {
    const xml = await this.virsh(['checkpoint-dumpxml', name, checkpoint]);
    return /<description>([^<]*)<\/description>/.exec(xml)?.[1] ?? '';
  }

  async state(name: string): Promise<string> {
    return (await this.virsh(['domstate', name])).trim();
  }

  async domainXml(name: string, inactive = true): Promise<string> {
    return this.virsh(['dumpxml', ...(inactive ? ['--inactive'] : []), name]);
  }

  async domain(name: string): Promise<DomainInfo> {
    return parseDomain(await this.domainXml(name, false));
  }

  async diskSize(name: string, dev: string): Promise<number> {
    const out = await this.virsh(['domblkinfo', name, dev]);
    return Number(/Capacity:\s+(\d+)/.exec(out)?.[1] ?? 0);
  }

  /** One guest-agent command; undefined when the agent does not answer. */
  async agent(name: string, command: object, timeoutS = 5): Promise<unknown> {
    const r = await this.transport.exec(['virsh', '-q', '-c', this.uri, 'qemu-agent-command', name, JSON.stringify(command), '--timeout', String(timeoutS)].map(shq).join(' '));
    if (r.code !== 0) return undefined;
    try {
      return (JSON.parse(r.stdout) as { return?: unknown }).return;
    } catch {
      return undefined;
    }
  }

  async agentResponsive(name: string): Promise<boolean> {
    return (await this.agent(name, { execute: 'guest-ping' }, 3)) !== undefined;
  }

  async osFamily(name: string): Promise<VmSummary['osFamily']> {
    // Windows agents report id "mswindows"; Linux ones a kernel release (and id from os-release if present).
    const info = await this.agent(name, { execute: 'guest-get-osinfo' }, 3) as { 'kernel-release'?: string; 'kernel-version'?: string; id?: string } | undefined;
    if (!info) return 'unknown';
    if (info.id === 'mswindows') return 'windows';
    if (info['kernel-release'] || info.id) return 'linux';
    return 'unknown';
  }

  async summary(name: string): Promise<VmSummary> {
    const state = await this.state(name);
    const dom = await this.domain(name);
    const disks = [];
    for (const d of dom.disks) disks.push({ dev: d.dev, ...(d.source ? { source: d.source } : {}), format: d.format, sizeBytes: await this.diskSize(name, d.dev) });
    const running = state === 'running';
    const agent: VmSummary['agent'] = !dom.hasAgentChannel ? 'no-channel' : !running ? 'vm-not-running'
      : (await this.agentResponsive(name)) ? 'responsive' : 'not-responding';
    const osFamily = agent === 'responsive' ? await this.osFamily(name) : 'unknown';
    return { name, uuid: dom.uuid, state, disks, agent, osFamily };
  }

  async checkpoints(name: string): Promise<string[]> {
    return (await this.virsh(['checkpoint-list', name, '--name'])).split('\n').map((s) => s.trim()).filter(Boolean);
  }
}
