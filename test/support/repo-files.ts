/** The files of a repository on a local volume, for tests that damage or inspect them. */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Every pack file of `repo`, sorted. */
export async function packFiles(repo: string): Promise<string[]> {
  const out: string[] = [];
  for (const d of await readdir(join(repo, 'data'))) for (const f of await readdir(join(repo, 'data', d))) out.push(join(repo, 'data', d, f));
  return out.sort();
}

/** Make `repo` (just initialised) write packs of about `bytes`: many small packs, so damage to one hits one point's data only. */
export async function useSmallPacks(repo: string, bytes: number): Promise<void> {
  const cfgPath = join(repo, 'config.json');
  const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as { packTargetBytes: number };
  cfg.packTargetBytes = bytes;
  await writeFile(cfgPath, JSON.stringify(cfg));
}
