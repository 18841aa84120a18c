/**
 * Hypervisor hosts, one driver per folder (libvirt/ now, Hyper-V later). The disk backup
 * pipeline reads through the small DiskSource interface of types.ts, so it does not depend on
 * where a disk comes from (a local image file, libvirt's NBD export).
 *
 * Importing this loads the libvirt driver and with it ssh2 (~60 ms): a command that needs a
 * host only on some paths imports it there, with `await import()`.
 */
export { LibvirtHost } from './libvirt/libvirt-host.js';
export type { Extent } from './types.js';
