/**
 * Module boundaries (STYLE.md §2.1): cli/ and web-status/ reach an engine area only through its
 * index.ts, so an area can reorganise its files, and decide what loads when (its heavy
 * pipelines load on first call), without its callers noticing; and engine/ never imports the
 * programs built on it. Reads the TypeScript sources, not dist/.
 */
import test from 'ava';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: this file runs as dist/test/architecture.test.js. */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Files that are an entry point of their area besides index.ts, and why. */
const EXTRA_ENTRY_POINTS = new Map([
  ['engine/jobs/forget.js', '`drctl forget` needs only forgetPoints, and jobs/index.ts loads the job runner'],
  ['engine/repo/codec-pool.js', 'cli/main.ts starts the codec workers before the rest of drctl loads; repo/index.ts would load the repository code first (~20 ms)'],
]);

/** Static and type imports, re-exports, `import 'x'`, and `import('x')` (calls and type positions). */
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])([^'"\n]+)\1/g;

interface Import {
  /** Where, as `path:line` from the repository root. */
  at: string;
  /** What, as a path from the repository root ('engine/repo/index.js'). */
  target: string;
}

async function tsFiles(dir: string): Promise<string[]> {
  const entries = await readdir(join(ROOT, dir), { withFileTypes: true }).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [];
    throw e;
  });
  const out: string[] = [];
  for (const e of entries) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) out.push(...(await tsFiles(rel)));
    else if (e.name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

/** The relative imports of the .ts files under `dirs`. */
async function importsUnder(...dirs: string[]): Promise<Import[]> {
  const out: Import[] = [];
  for (const file of (await Promise.all(dirs.map(tsFiles))).flat()) {
    const text = await readFile(join(ROOT, file), 'utf8');
    for (const m of text.matchAll(SPECIFIER)) {
      const spec = m[2] as string;
      if (!spec.startsWith('.')) continue;
      const line = text.slice(0, m.index).split('\n').length;
      const target = relative(ROOT, resolve(ROOT, dirname(file), spec)).split(sep).join('/');
      out.push({ at: `${file}:${line}`, target });
    }
  }
  return out;
}

test('cli/ and web-status/ import an engine area only through its index.ts', async (t) => {
  const imports = await importsUnder('cli', 'web-status');
  // Guards against a wrong ROOT, which would make this test pass on nothing.
  t.true(imports.some((i) => i.at.startsWith('cli/main.ts:') && i.target === 'engine/runtime/index.js'), 'cli/main.ts was not scanned');
  const deep = imports
    .filter((i) => /^engine\/[^/]+\/.+$/.test(i.target) && !i.target.endsWith('/index.js') && !EXTRA_ENTRY_POINTS.has(i.target))
    .map((i) => `${i.at} imports ${i.target}: import ${i.target.split('/').slice(0, 2).join('/')}/index.js (export the name there if it is missing)`);
  t.deepEqual(deep, []);
  // The direct-import exceptions above are real files still.
  for (const entry of EXTRA_ENTRY_POINTS.keys()) {
    await t.notThrowsAsync(readFile(join(ROOT, entry.replace(/\.js$/, '.ts'))), `${entry} is listed as an entry point but does not exist`);
  }
});

test('engine/ never imports cli/ or web-status/', async (t) => {
  const imports = await importsUnder('engine');
  t.true(imports.length > 50, 'engine/ was not scanned');
  const up = imports.filter((i) => /^(cli|web-status)\//.test(i.target)).map((i) => `${i.at} imports ${i.target}`);
  t.deepEqual(up, []);
});
