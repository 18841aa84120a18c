#!/usr/bin/env -S node --max-semi-space-size=1
// The changed-extent backup of bench/run.sh inside one process that is already running, as
// the daemon runs its scheduled jobs: what that backup costs without Node's start, module
// loading and the codec workers' start. bench/NOTES.md has the numbers.
//
//   node bench/warm-cbt.mjs REPO IMAGE EXTENTS.json [RUNS]
//
// REPO holds the image's first backup (name = the image's file name, as in bench/run.sh); it is
// copied for every run, so it is left as it was. The first run warms up and is not counted.
import { execFileSync } from 'node:child_process';
import { cp, readFile, rm } from 'node:fs/promises';
import { basename } from 'node:path';
import { backupImage } from '../dist/engine/backup/index.js';
import { Repository, shutdownCodecPool } from '../dist/engine/repo/index.js';
import { systemClock } from '../dist/engine/runtime/index.js';
import { openLocalTarget } from '../dist/targets/index.js';

const [repo0, image, extentsFile, runsArg = '5'] = process.argv.slice(2);
if (!repo0 || !image || !extentsFile) {
  console.error('usage: node bench/warm-cbt.mjs REPO IMAGE EXTENTS.json [RUNS]');
  process.exit(2);
}
const changedExtents = JSON.parse(await readFile(extentsFile, 'utf8'));
const walls = [];
for (let run = 0; run <= Number(runsArg); run++) {
  const repoPath = `${repo0}.warm-${run}`;
  await rm(repoPath, { recursive: true, force: true });
  await cp(repo0, repoPath, { recursive: true });
  execFileSync('sync'); // the copy's writeback is not this backup's
  const t0 = performance.now();
  const repo = await Repository.open(await openLocalTarget(repoPath), { clock: systemClock });
  const lock = await repo.lock('shared', 'bench warm-cbt', { waitMs: 0 });
  try {
    await backupImage(repo, image, { name: basename(image), clock: systemClock, hostname: 'bench', changedExtents });
  } finally {
    await lock.release();
  }
  const wall = (performance.now() - t0) / 1000;
  if (run > 0) walls.push(wall);
  console.error(`run ${run}${run === 0 ? ' (warm-up)' : ''}: ${wall.toFixed(3)} s`);
  await rm(repoPath, { recursive: true, force: true });
}
await shutdownCodecPool();
walls.sort((a, b) => a - b);
console.log(JSON.stringify({ runs: walls.length, min_s: walls[0], median_s: walls[walls.length >> 1], max_s: walls.at(-1) }));
