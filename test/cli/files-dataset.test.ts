/**
 * The shared benchmark's file tree (make-dataset.sh's generator, scaled down): backup, the
 * benchmark's gen2 change, incremental backup, restore of both points: diff -r clean, and
 * modes and mtimes kept.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { requireTools } from '../support/tools.js';

const DATASET_PY = fileURLToPath(new URL('../../../../shared/bench/dataset.py', import.meta.url));

async function metadata(root: string, dir = root, out = new Map<string, string>()): Promise<Map<string, string>> {
  for (const name of await readdir(dir)) {
    const p = join(dir, name);
    const st = await lstat(p);
    out.set(p.slice(root.length), `${st.mode.toString(8)} ${Math.floor(st.mtimeMs)} ${st.isDirectory() ? '' : st.size}`);
    if (st.isDirectory()) await metadata(root, p, out);
  }
  return out;
}

test('the benchmark tree round-trips through two points: diff -r clean, modes and mtimes kept', async (t) => {
  if (!requireTools(t, 'python3', 'diff', 'rsync')) return;
  if (!existsSync(DATASET_PY)) {
    if (process.env.DR_REQUIRE_INTEGRATION === '1') t.fail(`${DATASET_PY} not found (shared/ must sit next to the repository)`);
    else t.pass();
    return;
  }
  const dir = await tempDir(t);
  const gen = (args: string[]) => execFileSync('python3', [DATASET_PY, '--seed', '7', ...args], { stdio: 'ignore' });
  const tree1 = join(dir, 'tree1');
  const tree2 = join(dir, 'tree2');
  gen(['--nlarge', '3', 'tree', tree1, '3000']);
  execFileSync('cp', ['-a', tree1, tree2]);
  gen(['tree-gen2', tree2, '3000']);
  const src = join(dir, 'src');
  execFileSync('rsync', ['-a', `${tree1}/`, `${src}/`]);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const p1 = json<{ id: string; stats: { files: number } }>(await drctl(['backup', '--repo', repo, '--files', src, '--name', 'tree', '--json']));
  t.is(p1.stats.files, 3000);
  execFileSync('rsync', ['-a', '--delete', `${tree2}/`, `${src}/`]);
  const r2 = await drctl(['backup', '--repo', repo, '--files', src, '--name', 'tree', '--json']);
  t.is(r2.code, 0, r2.stderr);
  const p2 = json<{ id: string; stats: { unchangedFiles: number; files: number } }>(r2);
  t.true(p2.stats.unchangedFiles >= 2900, `only changed files are read again (unchanged: ${p2.stats.unchangedFiles})`);
  for (const [p, want] of [[p1, tree1], [p2, tree2]] as const) {
    const out = join(dir, `out-${p.id.slice(0, 8)}`);
    const r = await drctl(['restore', '--repo', repo, p.id, '--to', out]);
    t.is(r.code, 0, r.stderr);
    t.notThrows(() => execFileSync('diff', ['-r', '--no-dereference', out, want]), `diff -r ${out} ${want}`);
    const [a, b] = [await metadata(want), await metadata(out)];
    t.is(b.size, a.size);
    const wrong = [...a].filter(([k, v]) => b.get(k) !== v).slice(0, 5);
    t.deepEqual(wrong, [], 'mode / mtime / size differ');
  }
});
