/**
 * The few facts drctl needs from a libvirt domain XML, and the rewrite for "restore as a new
 * VM". Regular expressions on libvirt's own canonical output (dumpxml), not a general XML
 * parser: libvirt writes one element per line with single-quoted attributes.
 */
export interface DomainDisk {
  /** Target dev (vda, sdb): the disk's name inside a point. */
  dev: string;
  /** file | block | network … */
  type: string;
  /** Image path or block device; absent for network disks. */
  source?: string;
  /** qcow2, raw … */
  format: string;
}

/** What a network interface plugs into on the host: it must exist there for the VM to start. */
export interface DomainNetworkLink {
  /** 'network': a libvirt network; 'bridge': a host bridge; 'direct': a host NIC (macvtap). */
  type: 'network' | 'bridge' | 'direct';
  name: string;
}

export interface DomainInfo {
  name: string;
  uuid: string;
  disks: DomainDisk[];
  hasAgentChannel: boolean;
  links: DomainNetworkLink[];
  /** The UEFI variable store (pflash NVRAM) file of the VM, if it has one. */
  nvram?: string;
}

const DISK_RE = /<disk\b([^>]*)>([\s\S]*?)<\/disk>/g;

function attr(s: string, name: string): string | undefined {
  return new RegExp(`\\b${name}=(?:'([^']*)'|"([^"]*)")`).exec(s)?.slice(1).find((x) => x !== undefined);
}

export function parseDomain(xml: string): DomainInfo {
  const name = /<name>([^<]*)<\/name>/.exec(xml)?.[1] ?? '';
  const uuid = /<uuid>([^<]*)<\/uuid>/.exec(xml)?.[1] ?? '';
  const disks: DomainDisk[] = [];
  for (const m of xml.matchAll(DISK_RE)) {
    const head = m[1] ?? '';
    const body = m[2] ?? '';
    if ((attr(head, 'device') ?? 'disk') !== 'disk') continue; // cdrom, floppy, lun: not backed up
    const dev = attr(/<target\b[^>]*>/.exec(body)?.[0] ?? '', 'dev');
    if (!dev) continue;
    const src = /<source\b[^>]*>/.exec(body)?.[0] ?? '';
    const driver = /<driver\b[^>]*>/.exec(body)?.[0] ?? '';
    const source = attr(src, 'file') ?? attr(src, 'dev');
    disks.push({ dev, type: attr(head, 'type') ?? 'file', ...(source ? { source } : {}), format: attr(driver, 'type') ?? 'raw' });
  }
  const links: DomainNetworkLink[] = [];
  for (const m of xml.matchAll(INTERFACE_RE)) {
    const type = attr(m[1] ?? '', 'type');
    const src = /<source\b[^>]*>/.exec(m[2] ?? '')?.[0] ?? '';
    const name = type === 'network' ? attr(src, 'network') : type === 'bridge' ? attr(src, 'bridge') : type === 'direct' ? attr(src, 'dev') : undefined;
    if (name && (type === 'network' || type === 'bridge' || type === 'direct')) links.push({ type, name: unescapeXml(name) });
  }
  const nv = NVRAM_RE.exec(xml);
  const nvram = nv ? (attr(/<source\b[^>]*>/.exec(nv[3] ?? '')?.[0] ?? '', 'file') ?? (nv[3]?.trim() || undefined)) : undefined;
  return {
    name: unescapeXml(name), uuid, disks, hasAgentChannel: /<channel\b[\s\S]*?name=['"]org\.qemu\.guest_agent\.0['"]/.test(xml), links,
    ...(nvram && !nvram.startsWith('<') ? { nvram: unescapeXml(nvram) } : {}),
  };
}

const INTERFACE_RE = /<interface\b([^>]*)>([\s\S]*?)<\/interface>/g;
/** `<nvram template='…'>PATH</nvram>`, `<nvram type='file'><source file='PATH'/></nvram>` or `<nvram …/>`. */
const NVRAM_RE = /<nvram\b([^>]*?)(\/>|>([\s\S]*?)<\/nvram>)/;

export interface RewriteOptions {
  name: string;
  /** dev → new image path (qcow2). */
  diskPaths: Map<string, string>;
  noNetwork?: boolean;
  /**
   * The new VM's own UEFI variable store. Without it the path is dropped, so libvirt creates
   * NAME_VARS.fd from the template at define/start. Never the original VM's file: a shared
   * vars file is deleted by `virsh undefine COPY --nvram` and written by two running VMs.
   */
  nvramPath?: string;
}

/**
 * A new identity from a stored XML: new name, no UUID (libvirt assigns one), no MAC
 * addresses (libvirt generates new ones), disks pointing at the restored images, its own
 * UEFI NVRAM file, optionally without network interfaces. Everything else (CPU, memory, devices) stays as it was.
 */
export function rewriteForNewVm(xml: string, o: RewriteOptions): string {
  let out = xml.replace(/<name>[^<]*<\/name>/, `<name>${escapeXml(o.name)}</name>`);
  out = out.replace(/\s*<uuid>[^<]*<\/uuid>/, '');
  out = out.replace(/\s*<mac address=['"][^'"]*['"]\s*\/>/g, '');
  out = out.replace(DISK_RE, (whole, head: string, body: string) => {
    const dev = attr(/<target\b[^>]*>/.exec(body)?.[0] ?? '', 'dev');
    const path = dev ? o.diskPaths.get(dev) : undefined;
    if (!path) return whole;
    const newHead = head.replace(/\btype=(['"])[^'"]*\1/, `type='file'`);
    let newBody = body.replace(/<source\b[^>]*?(\/>|>[\s\S]*?<\/source>)/, `<source file='${escapeXml(path)}'/>`);
    newBody = newBody.replace(/(<driver\b[^>]*\btype=)(['"])[^'"]*\2/, `$1'qcow2'`);
    newBody = newBody.replace(/\s*<backingStore[\s\S]*?(<\/backingStore>|\/>)/g, '');
    return `<disk${newHead}>${newBody}</disk>`;
  });
  // File-backed serial/console logs cannot be shared by two running VMs: give the new VM its own.
  out = out.replace(/<(serial|console) type=(['"])file\2>([\s\S]*?)<\/\1>/g, (whole, _el: string, _q: string, body: string) =>
    whole.replace(body, body.replace(/(<source\b[^>]*\bpath=)(['"])([^'"]*)\2/, (_m, pre: string, _qq: string, path: string) => {
      const slash = path.lastIndexOf('/');
      return `${pre}'${path.slice(0, slash + 1)}${escapeXml(o.name)}-${path.slice(slash + 1)}'`;
    })));
  if (o.noNetwork) out = out.replace(/\s*<interface\b[\s\S]*?<\/interface>/g, '');
  out = out.replace(NVRAM_RE, (_whole, attrs: string) => {
    // Keep template and format attributes; type='file'/'network' belong to a <source> we drop.
    const keep = attrs.replace(/\s+type=(['"])[^'"]*\1/, '');
    return o.nvramPath ? `<nvram${keep}>${escapeXml(o.nvramPath)}</nvram>` : `<nvram${keep}/>`;
  });
  return out;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

function unescapeXml(s: string): string {
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&apos;/g, "'").replace(/&quot;/g, '"').replace(/&amp;/g, '&');
}
