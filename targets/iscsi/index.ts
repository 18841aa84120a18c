/**
 * iSCSI volumes as targets. A LUN holds one filesystem (ext4 or xfs) with a repository at its
 * root. Two attach strategies produce its block device: `kernel` (open-iscsi) and `userspace`
 * (qemu-storage-daemon + libiscsi → FUSE → loop), chosen by `attach:` (auto: kernel when the
 * initiator works). volume.ts shares one attach among processes (attach-record.ts: its files
 * in the state folder; teardown.ts: cleanup by evidence after crashes); filesystem.ts checks
 * and mounts, refusing a filesystem mounted elsewhere; format.ts formats and inspects LUNs
 * (lun-content.ts tells empty from damaged); busy.ts finds who uses a volume; iscsi-target.ts
 * is the TargetDriver jobs use; the watchdog bounds how long a job can hang on a vanished portal.
 */
export type { IscsiTargetConfig, AttachState } from './types.js';
export { IscsiTarget } from './iscsi-target.js';
export { acquireVolume, attachedState, chooseStrategy, detachVolume, readSecret, recordedAttach, withBlockDevice, targetStateDir } from './volume.js';
export type { DetachResult as VolumeDetachResult } from './volume.js';
export { formatLun, inspectTargetLun, type FormatResult, type LunReport } from './format.js';
export { describeUsers } from './busy.js';
export { IscsiAttachError, IscsiAuthError, IscsiInUseError, IscsiPortalLostError } from './errors.js';
export { probeDevice, probePortal } from './system.js';
