/**
 * What a host driver hands the backup pipeline for one disk: its size, which guest ranges
 * hold data (everything else reads as zeros and is neither read nor stored), and positional
 * reads. Drivers: local image files now; libvirt (NBD) and Hyper-V (RCT) later.
 */
export interface Extent {
  offset: number;
  length: number;
}

export interface DiskSource {
  /** Name of the disk inside a point (file name, or target dev such as "vda"). */
  readonly name: string;
  readonly sizeBytes: number;
  /** Format of the source (raw, qcow2, vhdx…); the stored content is always the raw disk. */
  readonly format: string;
  /**
   * Allocated (possibly non-zero) guest ranges, sorted, non-overlapping. `coarse`: the caller
   * reads only ranges it already knows to have changed (a changed-extent list), so the source
   * may answer with more than is allocated, up to the whole disk, when finding its holes costs
   * more than reading a few of them (a raw file's holes read as zeros, and zero chunks are not
   * stored).
   */
  dataExtents(opts?: { coarse?: boolean }): Promise<Extent[]>;
  /** Read `length` guest bytes at `offset` into `into` at `intoOffset`; the range lies inside one data extent. */
  read(offset: number, length: number, into: Buffer, intoOffset: number): Promise<void>;
  /**
   * A source that is a file on this machine: its path and where guest bytes sit in it (the
   * range lies inside one data extent). Worker threads then read it themselves.
   */
  readonly localPath?: string;
  fileOffset?(offset: number, length: number): number;
  /** Warnings worth recording on the point (e.g. a fallback read path). */
  readonly warnings: string[];
  close(): Promise<void>;
}
