/**
 * An iSCSI LUN that holds a filesystem with a repository at its root. The config comes from
 * targets/NAME.yaml (policies/target-schema.ts checks it; policies' TargetConfig is assignable).
 */
export interface IscsiTargetConfig {
  name: string;
  /** The YAML file it came from (named in errors). */
  file: string;
  /** host:port, or [v6]:port. */
  portal: string;
  iqn: string;
  lun: number;
  chap?: { user: string; secretFile: string };
  filesystem: 'ext4' | 'xfs';
  mountpoint: string;
  attach: 'kernel' | 'userspace' | 'auto';
  keepAttached: boolean;
  ioTimeoutSeconds: number;
  initiatorName?: string;
}

export interface Portal {
  host: string;
  port: number;
}

export function parsePortal(portal: string): Portal {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(portal);
  if (!m) throw new Error(`bad portal ${portal}`);
  return { host: (m[1] ?? m[2]) as string, port: Number(m[3]) };
}

/** The block device a strategy produced, before the filesystem is mounted. */
export interface BlockAttachment {
  strategy: 'kernel' | 'userspace';
  device: string;
  /** userspace: the qemu-storage-daemon that serves the FUSE export. */
  qsdPid?: number;
  /** userspace: the regular file the LUN is exported onto (backing file of the loop device). */
  exportFile?: string;
}

/** Which LUN an attach is of: two targets naming the same one must not both attach it. */
export interface LunId {
  portal: string;
  iqn: string;
  lun: number;
}

/**
 * What `<stateDir>/targets/NAME/attach.json` records, shared by every drctl process. It is
 * written *before* anything is started (phase `attaching`, naming every path the attach may
 * create), so a drctl killed half way leaves evidence for `detach` and the next attach to
 * clean up: the FUSE export file, the daemon's pid file, the CHAP secret copy.
 */
export interface AttachState extends BlockAttachment {
  version: 1;
  /**
   * attaching: being set up (or its process died doing so); block: attached without mounting
   * (`target attach --no-mount`, for repairs); mounted: in use. Absent in records of older
   * drctl versions: mounted.
   */
  phase?: 'attaching' | 'block' | 'mounted';
  lunId?: LunId;
  /** userspace: where qemu-storage-daemon writes its pid, and the CHAP secret copy it reads. */
  pidFile?: string;
  secretFile?: string;
  /** The drctl process doing the attach (phase attaching). */
  attachingPid?: number;
  /** The mounted filesystem's UUID (ext4/xfs). */
  uuid?: string;
  /** ext4 with multi-mount protection (another machine cannot mount it at the same time). */
  mmp?: boolean;
  mountpoint: string;
  /** Processes (jobs) using the volume now; the last one detaches. */
  users: number[];
  /** Attached by `drctl target attach`: stays until `drctl target detach`. */
  manual: boolean;
  attachedAt: string;
}

export function lunIdOf(t: Pick<IscsiTargetConfig, 'portal' | 'iqn' | 'lun'>): LunId {
  return { portal: t.portal, iqn: t.iqn, lun: t.lun };
}

/** Same LUN: IQNs are case-insensitive (RFC 3722), so is the portal's host name. */
export function sameLun(a: LunId, b: LunId): boolean {
  const p = (x: LunId) => { const { host, port } = parsePortal(x.portal); return `${host.toLowerCase()}:${port}`; };
  return a.lun === b.lun && a.iqn.toLowerCase() === b.iqn.toLowerCase() && p(a) === p(b);
}

/** Default initiator name of the userspace strategy (libiscsi needs one). */
export const DEFAULT_INITIATOR = 'iqn.2026-01.invalid.drctl:initiator';
