export type { TargetDriver, BlobInfo, ByteRange, ObjectUpload, TargetFactory } from './types.js';
export { BlobNotFoundError } from './types.js';
export { LocalTarget, localTarget } from './local/local-target.js';
export { openLocalTarget } from './registry.js';
export { IscsiTarget } from './iscsi/index.js';
export type { IscsiTargetConfig } from './iscsi/index.js';
