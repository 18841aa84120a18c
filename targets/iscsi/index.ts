/**
 * iSCSI volumes as targets. A LUN holds one filesystem (ext4 or xfs) with a repository at its
 * root. Two attach strategies produce its block device: `kernel` (open-iscsi) and `userspace`
 * (qemu-storage-daemon + libiscsi → FUSE → loop), chosen by `attach:` (auto: kernel when the
 * initiator works). volume.ts shares one attach among processes; iscsi-target.ts is the
 * TargetDriver jobs use; the watchdog bounds how long a job can hang on a vanished portal.
 */
export type { IscsiTargetConfig, AttachState } from './types.js';
export { IscsiTarget } from './iscsi-target.js';
export { acquireVolume, attachedState, chooseStrategy, detachVolume, readSecret, withBlockDevice, targetStateDir } from './volume.js';
export { IscsiAttachError, IscsiAuthError, IscsiPortalLostError } from './errors.js';
export { probeDevice, probePortal } from './system.js';
