/**
 * `npm run quickstart`: the main job on embedded defaults, as an operator would run it.
 * A config folder ./drctl-data/config with one target (a local repository under
 * ./drctl-data/repo) and one policy protecting a sample disk image (VM-level) and a sample
 * folder (file-level); the policy is validated and run, run again after a change
 * (incremental), then the points, the status, a restore of each and a byte-for-byte
 * verification.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rm, symlink, writeFile, lstat, readlink } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const DRCTL = fileURLToPath(new URL('../cli/main.js', import.meta.url));
const base = resolve('drctl-data');
const repo = join(base, 'repo');
const samples = join(base, 'samples');
const image = join(samples, 'sample-vm.img');
const folder = join(samples, 'files');
const restoreDir = join(base, 'restore');
const config = join(base, 'config');
const MiB = 1024 * 1024;

function run(args: string[]): void {
  console.log(`\n$ drctl ${args.join(' ').replaceAll(base, './drctl-data')}`);
  const r = spawnSync(process.execPath, [DRCTL, ...args], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`quickstart: drctl ${args[0]} exited ${r.status}`);
    process.exit(r.status ?? 1);
  }
}

function bytes(seed: string, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let off = 0, i = 0; off < n; i++) off += createHash('sha256').update(`${seed}${i}`).digest().copy(out, off);
  return out;
}

async function makeSamples(): Promise<void> {
  await rm(samples, { recursive: true, force: true });
  await mkdir(join(folder, 'docs', 'empty'), { recursive: true });
  // A 256 MiB sparse "VM disk": a boot area, log text, random data, and holes in between.
  const fh = await open(image, 'w');
  await fh.truncate(256 * MiB);
  await fh.write(bytes('boot', 2 * MiB), 0, 2 * MiB, 0);
  const log = Buffer.from(Array.from({ length: 200000 }, (_, i) => `2026-11-23 node${i % 7} job ${i} ok in ${i % 91} ms\n`).join(''));
  await fh.write(log, 0, log.length, 16 * MiB);
  await fh.write(bytes('data', 24 * MiB), 0, 24 * MiB, 100 * MiB);
  await fh.close();
  await writeFile(join(folder, 'README.txt'), 'sample files protected by the quickstart\n');
  await writeFile(join(folder, 'docs', 'report.csv'), Array.from({ length: 5000 }, (_, i) => `${i},${i * 3},ok`).join('\n'));
  await writeFile(join(folder, 'docs', 'blob.bin'), bytes('blob', 3 * MiB));
  await symlink('docs/report.csv', join(folder, 'latest-report'));
}

async function change(): Promise<void> {
  const fh = await open(image, 'r+');
  await fh.write(bytes('changed', MiB), 0, MiB, 101 * MiB);
  await fh.close();
  await writeFile(join(folder, 'docs', 'report.csv'), 'replaced after the first backup\n');
  await writeFile(join(folder, 'new-file.txt'), 'added after the first backup\n');
}

/** The embedded default config: one local target, one policy with both kinds of source. */
async function writeConfig(): Promise<void> {
  await mkdir(join(config, 'targets'), { recursive: true });
  await mkdir(join(config, 'policies'), { recursive: true });
  await writeFile(join(config, 'targets', 'local.yaml'), `# the repository on this machine\ntype: local\npath: ${repo}\n`);
  await writeFile(join(config, 'policies', 'quickstart.yaml'), [
    'name: quickstart',
    'schedule: "0 */4 * * *"        # every 4 hours (what `drctl daemon` would run)',
    'target: local',
    'sources:',
    `  - image: ${image}     # VM-level: a disk image`,
    '    name: sample-vm',
    `  - path: ${folder}       # file-level: a folder`,
    '    name: sample-files',
    'retention:',
    '  generations: 42',
    '  daily: 14',
    '',
  ].join('\n'));
}

/** Every path under `dir` with its type and content hash, for a byte-for-byte comparison. */
async function snapshot(dir: string, root = dir, out = new Map<string, string>()): Promise<Map<string, string>> {
  for (const name of (await readdir(dir)).sort()) {
    const p = join(dir, name);
    const st = await lstat(p);
    const rel = relative(root, p);
    if (st.isDirectory()) {
      out.set(rel, `dir ${st.mode & 0o7777}`);
      await snapshot(p, root, out);
    } else if (st.isSymbolicLink()) out.set(rel, `link ${await readlink(p)}`);
    else out.set(rel, `file ${st.mode & 0o7777} ${createHash('sha256').update(await readFile(p)).digest('hex')}`);
  }
  return out;
}

async function main(): Promise<void> {
  console.log(`drctl quickstart: repository ${repo}`);
  await mkdir(base, { recursive: true });
  await makeSamples();
  if (!existsSync(join(repo, 'config.json'))) run(['init', '--repo', repo]);
  else console.log('\n(repository already exists: new points are added to it)');
  await writeConfig();
  // No --config / --state flags: ./drctl-data/config and ./drctl-data/state are the defaults.
  run(['policy', 'validate']);
  run(['backup', '--policy', 'quickstart']);
  await change();
  console.log('\n-- changed 1 MiB of the disk, one file, and added a file; the second run stores only that:');
  run(['backup', '--policy', 'quickstart']);
  run(['points', '--target', 'local']);
  run(['status']);
  await rm(restoreDir, { recursive: true, force: true });
  await mkdir(restoreDir, { recursive: true });
  const imgOut = join(restoreDir, 'sample-vm.img');
  const filesOut = join(restoreDir, 'sample-files');
  run(['restore', '--repo', repo, 'latest', '--name', 'sample-vm', '--to', imgOut]);
  run(['restore', '--repo', repo, 'latest', '--name', 'sample-files', '--to', filesOut]);
  run(['check', '--repo', repo, '--read-data']);
  const imgSame = (await readFile(imgOut)).equals(await readFile(image));
  const a = await snapshot(folder);
  const b = await snapshot(filesOut);
  const filesSame = a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
  console.log(`\nverify: restored disk image ${imgSame ? 'is byte-identical' : 'DIFFERS'} (${imgOut})`);
  console.log(`verify: restored folder ${filesSame ? `is identical (${a.size} entries)` : 'DIFFERS'} (${filesOut})`);
  if (!imgSame || !filesSame) process.exit(1);
  console.log(`\nDone. Everything lives in ${base}:\n  config/   the policy and target (edit them, check with \`drctl policy validate\`)\n  repo/     the repository (point manifests in repo/points/)\n  state/    the catalog of jobs and points\n  samples/  what was backed up\n  restore/  what was restored\nTry: node ${relative(process.cwd(), DRCTL)} policy plan ${relative(process.cwd(), join(config, 'policies', 'quickstart.yaml'))}   # what the policy keeps over a year\n     node ${relative(process.cwd(), DRCTL)} ls --repo ${relative(process.cwd(), repo)} latest --name sample-files -l            # what a point holds, to restore one file with --include\n     node ${relative(process.cwd(), DRCTL)} daemon                                          # run it every 4 hours`);
}

await main();
