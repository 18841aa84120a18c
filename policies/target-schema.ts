/** targets/NAME.yaml and hosts/NAME.yaml: the object's name is its file name. */
import { z } from 'zod';
import type { ConfigDocument } from './document.js';
import { reportIssues, type SchemaDocs } from './issues.js';
import type { HostConfig, TargetConfig } from './types.js';

const absolute = z.string().regex(/^\//);
const localTarget = z.strictObject({ type: z.literal('local'), path: absolute });
const chap = z.strictObject({ user: z.string().min(1), secretFile: absolute });
const iscsiTarget = z.strictObject({
  type: z.literal('iscsi'),
  portal: z.string().regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/),
  iqn: z.string().regex(/^(iqn\.\d{4}-\d{2}\.[^\s:]+(:\S+)?|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$/),
  lun: z.number().int().min(0).max(16383),
  chap: chap.optional(),
  filesystem: z.enum(['ext4', 'xfs']),
  mountpoint: absolute,
  attach: z.enum(['kernel', 'userspace', 'auto']).optional(),
  keepAttached: z.boolean().optional(),
  ioTimeoutSeconds: z.number().int().min(1).max(3600).optional(),
  initiatorName: z.string().regex(/^(iqn\.\d{4}-\d{2}\.[^\s:]+(:\S+)?|eui\.[0-9A-Fa-f]{16})$/).optional(),
});

const targetDocs = (keys: readonly string[]): SchemaDocs => ({
  keys: { '': keys, chap: Object.keys(chap.shape) },
  fields: {
    type: { expect: 'local or iscsi', example: 'type: local' },
    path: { expect: 'an absolute folder path', example: 'path: /srv/drctl' },
    portal: { expect: 'host:port of the iSCSI portal', example: 'portal: 192.0.2.20:3260' },
    iqn: { expect: 'an iSCSI qualified name (iqn.YYYY-MM.reversed.domain:name)', example: 'iqn: iqn.2026-01.com.example:backup' },
    lun: { expect: 'a LUN number (0-16383)', example: 'lun: 1' },
    chap: { expect: 'a mapping with user and secretFile', example: 'chap: { user: drctl, secretFile: /etc/drctl/secrets/san1 }' },
    'chap.user': { expect: 'the CHAP user name', example: 'user: drctl' },
    'chap.secretFile': { expect: 'the absolute path of a file holding the CHAP secret', example: 'secretFile: /etc/drctl/secrets/san1' },
    filesystem: { expect: 'ext4 or xfs', example: 'filesystem: ext4' },
    mountpoint: { expect: 'an absolute folder path', example: 'mountpoint: /mnt/drctl/san1' },
    attach: { expect: 'kernel, userspace or auto', example: 'attach: auto' },
    keepAttached: { expect: 'true or false', example: 'keepAttached: false' },
    ioTimeoutSeconds: { expect: 'seconds (1-3600) the portal may be unreachable before a job fails', example: 'ioTimeoutSeconds: 30' },
    initiatorName: { expect: 'this machine\'s iSCSI initiator name (an iqn)', example: 'initiatorName: iqn.2026-01.com.example:drctl-node1' },
  },
});

export function checkTarget(doc: ConfigDocument, raw: unknown, name: string, file: string): TargetConfig | undefined {
  if (!isObject(doc, raw, 'a target (type: local or type: iscsi)')) return undefined;
  const type = raw.type;
  if (type !== 'local' && type !== 'iscsi') {
    doc.add(['type'], type === undefined ? 'parent' : 'value', type === undefined ? 'missing' : `must be local or iscsi, got ${JSON.stringify(type)}`,
      'type: local (with path:) or type: iscsi (with portal, iqn, lun, filesystem, mountpoint)');
    return undefined;
  }
  const schema = type === 'local' ? localTarget : iscsiTarget;
  const r = schema.safeParse(raw);
  if (!r.success) {
    reportIssues(doc, raw, r.error.issues, targetDocs(Object.keys(schema.shape)));
    return undefined;
  }
  const t = r.data;
  if (t.type === 'local') return { name, file, type: 'local', path: t.path };
  return {
    name, file, type: 'iscsi', portal: t.portal, iqn: t.iqn, lun: t.lun, ...(t.chap ? { chap: t.chap } : {}),
    filesystem: t.filesystem, mountpoint: t.mountpoint, attach: t.attach ?? 'auto', keepAttached: t.keepAttached ?? false,
    ioTimeoutSeconds: t.ioTimeoutSeconds ?? 30, ...(t.initiatorName ? { initiatorName: t.initiatorName } : {}),
  };
}

const ssh = z.strictObject({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).optional(),
  user: z.string().min(1),
  keyFile: absolute.optional(),
  hostKey: z.string().regex(/^(SHA256:[A-Za-z0-9+/]{43}=?|(ssh|ecdsa|sk)-[a-z0-9@.-]+ [A-Za-z0-9+/=]+)$/).optional(),
  knownHosts: absolute.optional(),
});
const hostSchema = z.strictObject({
  driver: z.enum(['libvirt', 'hyperv', 'local']),
  ssh: ssh.optional(),
  uri: z.string().regex(/^[a-z][a-z0-9+]*:\/\//).optional(),
});
const hostDocs: SchemaDocs = {
  keys: { '': Object.keys(hostSchema.shape), ssh: Object.keys(ssh.shape) },
  fields: {
    driver: { expect: 'libvirt, hyperv or local', example: 'driver: libvirt' },
    ssh: { expect: 'a mapping with host, user and keyFile', example: 'ssh: { host: 10.0.0.5, user: root, keyFile: /etc/drctl/keys/id_ed25519, hostKey: "SHA256:..." }' },
    'ssh.host': { expect: 'a host name or address', example: 'host: 10.0.0.5' },
    'ssh.port': { expect: 'a TCP port (1-65535)', example: 'port: 22' },
    'ssh.user': { expect: 'a user name', example: 'user: root' },
    'ssh.keyFile': { expect: 'the absolute path of a private key', example: 'keyFile: /etc/drctl/keys/id_ed25519' },
    'ssh.hostKey': { expect: 'a pinned host key fingerprint (ssh-keygen -lf) or public key', example: 'hostKey: "SHA256:..."' },
    'ssh.knownHosts': { expect: 'the absolute path of a known_hosts file', example: 'knownHosts: /etc/drctl/known_hosts' },
    uri: { expect: 'a libvirt connection URI', example: 'uri: qemu:///system' },
  },
};

export function checkHost(doc: ConfigDocument, raw: unknown, name: string, file: string): HostConfig | undefined {
  if (!isObject(doc, raw, 'a host (driver: libvirt, hyperv or local)')) return undefined;
  const before = doc.problems.length;
  const r = hostSchema.safeParse(raw);
  if (!r.success) reportIssues(doc, raw, r.error.issues, hostDocs);
  const s = raw.ssh as Record<string, unknown> | undefined;
  if (s && typeof s === 'object') {
    if (s.hostKey === undefined && s.knownHosts === undefined) {
      doc.add(['ssh', 'hostKey'], 'parent', 'missing; drctl connects only to hosts whose key it knows',
        'add hostKey: "SHA256:..." (ssh-keyscan HOST | ssh-keygen -lf -) or knownHosts: /etc/drctl/known_hosts');
    } else if (s.hostKey !== undefined && s.knownHosts !== undefined) {
      doc.add(['ssh', 'knownHosts'], 'key', 'give either hostKey or knownHosts, not both', 'remove one of them');
    }
  }
  if (raw.driver === 'hyperv' && raw.ssh === undefined) {
    doc.add(['ssh'], 'parent', 'missing; a Hyper-V host is reached over SSH (Windows OpenSSH)', hostDocs.fields.ssh?.example);
  }
  if (raw.uri !== undefined && raw.driver !== 'libvirt') doc.add(['uri'], 'key', 'only a libvirt host takes uri', 'remove uri');
  if (!r.success || doc.problems.length > before) return undefined;
  const h = r.data;
  return {
    name, file, driver: h.driver,
    ...(h.ssh ? { ssh: { ...h.ssh, port: h.ssh.port ?? 22 } } : {}),
    ...(h.driver === 'libvirt' ? { uri: h.uri ?? 'qemu:///system' } : {}),
  };
}

function isObject(doc: ConfigDocument, raw: unknown, what: string): raw is Record<string, unknown> {
  if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) return true;
  doc.add([], 'value', raw === null || raw === undefined ? 'the file is empty' : `expected ${what} as key: value lines`, 'see README.md, section Policies (the config folder)');
  return false;
}
