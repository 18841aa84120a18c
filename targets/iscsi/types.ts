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

/** What `<stateDir>/targets/NAME/attach.json` records, shared by every drctl process. */
export interface AttachState extends BlockAttachment {
  version: 1;
  mountpoint: string;
  /** Processes (jobs) using the volume now; the last one detaches. */
  users: number[];
  /** Attached by `drctl target attach`: stays until `drctl target detach`. */
  manual: boolean;
  attachedAt: string;
}

/** Default initiator name of the userspace strategy (libiscsi needs one). */
export const DEFAULT_INITIATOR = 'iqn.2026-01.invalid.drctl:initiator';
