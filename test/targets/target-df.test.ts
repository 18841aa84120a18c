/**
 * `drctl target df` on a local target whose folder is missing: the one line `target test`
 * prints, not an "unexpected error … (this is a bug)".
 */
import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

test('df of a local target whose path is missing says what target test says, exit 1', async (t) => {
  const dir = await tempDir(t);
  const config = join(dir, 'config');
  await mkdir(join(config, 'targets'), { recursive: true });
  await writeFile(join(config, 'targets', 'vol1.yaml'), `type: local\npath: ${join(dir, 'not-mounted', 'drctl')}\n`);
  const args = ['vol1', '--config', config, '--state', join(dir, 'state')];
  const df = await drctl(['target', 'df', ...args]);
  const tested = await drctl(['target', 'test', ...args]);
  t.is(df.code, 1, df.stderr);
  t.notRegex(df.stderr, /unexpected error|this is a bug|ENOENT/);
  t.is(df.stderr, tested.stderr);
  t.regex(df.stderr, /^drctl: target vol1 \(\S+vol1\.yaml\): \S+ does not exist - mount its volume if it lives on one, or create the repository with `drctl init --target vol1`\n$/);
});
