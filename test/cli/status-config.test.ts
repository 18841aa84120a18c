/**
 * `drctl status` is what monitoring calls: a config folder it cannot fully use (an invalid
 * policy file, two files claiming one policy name, a --config that does not exist) must not
 * pass as "nothing to watch". It exits 2 and names every problem, and still shows the valid
 * policies. No repository is needed: status reads the config folder and the catalog only.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

interface StatusJson {
  policies: { name: string }[];
  problems: { file: string; line: number; column: number; path: string; message: string; fix?: string }[];
  invalidConfig: string[];
}

/** A config folder with target local and a valid policy `good` (policies/good.yaml). */
async function configFolder(t: ExecutionContext): Promise<{ dir: string; args: string[] }> {
  const root = await tempDir(t);
  const dir = join(root, 'config');
  await mkdir(join(dir, 'targets'), { recursive: true });
  await mkdir(join(dir, 'policies'));
  await writeFile(join(dir, 'targets', 'local.yaml'), `type: local\npath: ${join(root, 'repo')}\n`);
  await writeFile(join(dir, 'policies', 'good.yaml'), policy('good'));
  return { dir, args: ['--config', dir, '--state', join(root, 'state')] };
}

function policy(name: string, retention = '  generations: 3'): string {
  return [
    `name: ${name}`, //                 1
    'schedule: "* * * * *"', //          2
    'timezone: UTC', //                  3
    'target: local', //                  4
    'sources:', //                       5
    '  - path: /srv/files', //           6
    '    name: files', //                7
    'retention:', //                     8
    retention, //                        9
  ].join('\n') + '\n';
}

test('an invalid policy file: exit 2, the problem with file:line:column, the valid policy still shown', async (t) => {
  const { dir, args } = await configFolder(t);
  const bad = join(dir, 'policies', 'bad.yaml');
  await writeFile(bad, policy('bad', '  within: 2x'));
  const r = await drctl(['status', ...args]);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stdout, /^policy good → local/m);
  t.notRegex(r.stdout, /no policies/);
  t.true(r.stderr.includes(`${bad}:9:11: retention.within: "2x" is not a duration - write it like 2d`), r.stderr);
  t.regex(r.stderr, /^drctl: 1 problem in the config folder .*; a policy whose file has problems is not shown or monitored/m);

  const j = await drctl(['status', '--json', ...args]);
  t.is(j.code, 2, j.stderr);
  const doc = json<StatusJson>(j);
  t.deepEqual(doc.policies.map((p) => p.name), ['good']);
  t.deepEqual(doc.problems.map((p) => [p.file, p.line, p.column, p.path]), [[bad, 9, 11, 'retention.within']]);
  t.is(doc.invalidConfig.length, 1);
});

test('two files defining one policy name: exit 2 naming both, not "no policies"', async (t) => {
  const { dir, args } = await configFolder(t);
  const twin = join(dir, 'policies', 'good.json');
  await writeFile(twin, JSON.stringify({ name: 'good', target: 'local', sources: [{ path: '/srv/files' }], retention: { daily: 1 } }));
  const r = await drctl(['status', ...args]);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stdout, /^no valid policies in /m);
  t.true(r.stderr.includes(`${join(dir, 'policies', 'good.yaml')}:1:7: name: policy name "good" is also used by`), r.stderr);
  t.true(r.stderr.includes(`${twin}:1:9: name: policy name "good" is also used by`), r.stderr);
  const j = await drctl(['status', '--json', ...args]);
  t.is(j.code, 2);
  t.is(json<StatusJson>(j).problems.length, 2);
});

test('--config pointing at a folder that does not exist: exit 2 saying so, also with --json', async (t) => {
  const { dir } = await configFolder(t);
  const missing = join(dir, 'nope');
  const r = await drctl(['status', '--config', missing, '--state', join(dir, 'state')]);
  t.is(r.code, 2, r.stdout);
  t.regex(r.stderr, new RegExp(`^drctl: config folder ${missing} does not exist`));
  t.is(r.stdout, '');
  const j = await drctl(['status', '--json', '--config', missing, '--state', join(dir, 'state')]);
  t.is(j.code, 2);
  t.regex(json<{ error: { code: string; message: string } }>(j).error.message, /config folder .*nope does not exist/);
});

test('a valid config folder: status still exits by RPO (1: no point yet)', async (t) => {
  const { args } = await configFolder(t);
  const r = await drctl(['status', ...args]);
  t.is(r.code, 1, r.stderr);
  t.is(r.stderr, '');
  t.regex(r.stdout, /MISSED files \(path\): no point yet/);
});
