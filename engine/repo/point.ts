/**
 * Recovery points. A point manifest is a small JSON file written last (the commit point of a
 * backup) and named by its SHA-256, so its id proves its content. A VM-level point holds, per
 * disk, the full chunk list (a synthetic full: it restores on its own, with no chain); a
 * file-level point holds the hash of its root tree.
 */
export type PointKind = 'vm' | 'files';

export interface DiskRecord {
  /** Name of the disk inside the point (source file name, or the VM's target dev). */
  name: string;
  sizeBytes: number;
  chunkBytes: number;
  /** Chunk-list blobs, each LIST_ENTRIES_PER_BLOB × 32-byte hashes; all-zero hash = zero chunk. */
  lists: string[];
  /** Source format of the disk (raw, qcow2); restores always give the raw content. */
  sourceFormat: string;
}

export interface ItemError {
  path: string;
  message: string;
}

export interface PointStats {
  logicalBytes: number;
  readBytes: number;
  newBytes: number;
  storedNewBytes: number;
  durationMs: number;
  files?: number;
  dirs?: number;
  unchangedFiles?: number;
  /** Bytes received from the host over SSH during the backup (VMs on remote hosts). */
  wireBytes?: number;
}

export interface PointManifest {
  formatVersion: 1;
  name: string;
  /** The policy whose run made this point; retention applies per policy and name. */
  policy?: string;
  kind: PointKind;
  time: string;
  hostname: string;
  /** For a VM: path is HOST/VM. */
  /** `root`: the backed-up folder's own metadata (file points since 0.2; earlier ones have none). */
  source: { type: 'image' | 'folder' | 'vm'; path: string; root?: RootMeta };
  parent?: string;
  disks?: DiskRecord[];
  tree?: string;
  stats: PointStats;
  /** Items that could not be backed up; non-empty means the point is partial. */
  errors: ItemError[];
  /** How changed data was found: a full read, or a changed-extent list against the parent. */
  changeTracking?: { mode: 'full-read' | 'changed-extents'; reason?: string };
  /** Set when a file-level request was served VM-level (Linux guests). */
  fallback?: { reason: string };
  warnings?: string[];
  /** Where a policy run put the point: its target, and when that is the fallback, from which target and why. */
  placement?: Placement;
  /** A libvirt VM: what the next incremental and a restore need. */
  vm?: VmRecord;
  /** A point taken by `restore` of the current state before overwriting it. */
  safetyFor?: string;
}

export interface Placement {
  target: string;
  fallbackFrom?: string;
  reason?: string;
}

export interface VmRecord {
  host: string;
  name: string;
  uuid: string;
  /** Domain XML (inactive) at backup time: restores rebuild the VM from it. */
  xml: string;
  /** libvirt checkpoint created with this point (base of the next incremental). */
  checkpoint?: string;
  quiesced: boolean;
}

export interface Point extends PointManifest {
  id: string;
}

/** Owner, mode and mtime of a file point's root folder, restored onto DEST. */
export interface RootMeta {
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: string;
}
