/**
 * Mistakes in a target file get a message that names the mistake: a LUN that does not exist is
 * not an unreachable portal, and a LUN too small for xfs says so instead of mkfs's usage text.
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireTools } from '../support/tools.js';
import { MiB } from '../support/images.js';
import { ISCSI_TOOLS, iscsiLab, leftovers } from './iscsi-lab.js';

test('a LUN number the target does not have is reported as that, not as an unreachable portal', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS)) return;
  const lab = await iscsiLab(t);
  const yaml = await readFile(join(lab.config, 'targets', 'san1.yaml'), 'utf8');
  await lab.writeTarget('lun7', yaml.replace('lun: 1', 'lun: 7').replace(lab.mountpoint, `${lab.mountpoint}-7`));
  const r = await lab.run(['target', 'attach', 'lun7']);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, new RegExp(`target lun7: LUN 7 does not exist on ${lab.tgtd.iqn} at ${lab.tgtd.portal.replace(/\./g, '\\.')}`));
  t.regex(r.stderr, /check lun: in \S+lun7\.yaml/);
  t.notRegex(r.stderr, /unreachable/);
  t.deepEqual(await leftovers(lab), []);
});

test('mkfs.xfs on a LUN that is too small: the reason, not the last line of its usage text', async (t) => {
  if (!requireTools(t, ...ISCSI_TOOLS, 'mkfs.xfs')) return;
  const lab = await iscsiLab(t, { filesystem: 'xfs', lunBytes: 200 * MiB });
  const r = await lab.run(['target', 'format', 'san1', '--format']);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /target san1: mkfs\.xfs on LUN 1 failed - Filesystem must be larger than 300MB/);
  t.notRegex(r.stderr, /<value>|xxx/);
  t.deepEqual(await leftovers(lab), []);
});
