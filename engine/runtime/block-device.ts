/**
 * The size of a block device, which stat gives as 0: sysfs has it in 512-byte sectors under the
 * device's major:minor (Linux dev_t as glibc splits it); `blockdev --getsize64` where sysfs is
 * not mounted. Shared by image backups of a device, restores onto one and iSCSI targets.
 */
import { fsp } from './fs.js';
import { execFile } from './exec.js';

/** The bytes of the block device at `path` (`rdev`: its st_rdev, stat'ed when not given), or why they are unknown. */
export async function blockDeviceBytes(path: string, rdev?: number): Promise<{ bytes: number } | { why: string }> {
  const dev = BigInt(rdev ?? (await fsp.stat(path)).rdev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const sysfs = `/sys/dev/block/${major}:${minor}/size`;
  const sectors = await fsp.readFile(sysfs, 'utf8').then((s) => (s.trim() === '' ? NaN : Number(s.trim())), () => NaN);
  if (Number.isSafeInteger(sectors)) return { bytes: sectors * 512 };
  const r = await execFile('blockdev', ['--getsize64', path]).catch((e: unknown) => ({ code: 1, stdout: '', stderr: (e as Error).message }));
  const n = Number(r.stdout.trim());
  if (r.code === 0 && r.stdout.trim() !== '' && Number.isSafeInteger(n)) return { bytes: n };
  return { why: `${sysfs} is unreadable and blockdev failed: ${r.stderr.trim().split('\n')[0] ?? ''}` };
}
