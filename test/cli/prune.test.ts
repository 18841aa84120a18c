/**
 * Prune against a real repository through the real CLI: what it frees, that kept points still
 * restore byte-identical, that a backup running meanwhile is not blocked and its point
 * survives the sweep, and that `kill -9` at any moment loses nothing.
 */
import test, { type ExecutionContext } from 'ava';
import { cp, open, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { hostname } from 'node:os';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { drctl, json, startDrctl } from '../support/cli.js';
import { sharedTempDir, tempDir } from '../support/tmp.js';
import { hasTool, requireTools } from '../support/tools.js';
import { MiB, makeRawImage, seededBytes } from '../support/images.js';

interface PointJson { id: string; name: string; time: string }
interface PruneJson {
  packsDeleted: number; packsRepacked: number; packsRescued: number; unindexedPacksDeleted: number;
  bytesFreed: number; blobsRemoved: number; durationMs: number;
}

const IMAGE_BYTES = 40 * MiB;
const GENERATIONS = 8;
const KEEP = 4;

let root = '';
let template = '';
/** sha256 of each generation's image, by point id (only the points `forget` kept). */
const kept = new Map<string, string>();
let gen0Image = '';
let ready = false;

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const b of createReadStream(path)) h.update(b as Buffer);
  return h.digest('hex');
}

/** Generation 0 fills the disk; generation g rewrites 6 MiB somewhere in the first 30 MiB. */
async function writeGeneration(img: string, g: number): Promise<void> {
  if (g === 0) {
    await makeRawImage(img, IMAGE_BYTES, [{ offset: 0, data: seededBytes('gen0', IMAGE_BYTES) }]);
    return;
  }
  const fh = await open(img, 'r+');
  try {
    const data = seededBytes(`gen${g}`, 6 * MiB);
    await fh.write(data, 0, data.length, ((g - 1) % 5) * 6 * MiB);
  } finally {
    await fh.close();
  }
}

test.before(async () => {
  if (!hasTool('qemu-img')) return;
  root = await sharedTempDir('drctl-prune-');
  template = join(root, 'template');
  const img = join(root, 'disk.img');
  const r0 = await drctl(['init', '--repo', template]);
  if (r0.code !== 0) throw new Error(r0.stderr);
  const byGen: string[] = [];
  for (let g = 0; g < GENERATIONS; g++) {
    await writeGeneration(img, g);
    if (g === 0) await cp(img, (gen0Image = join(root, 'gen0.img')));
    const r = await drctl(['backup', '--repo', template, '--image', img, '--name', 'disk', '--json']);
    if (r.code !== 0) throw new Error(r.stderr);
    const p = json<PointJson>(r);
    byGen.push(p.id);
    kept.set(p.id, await sha256File(img));
  }
  const f = await drctl(['forget', '--repo', template, '--name', 'disk', '--keep-last', String(KEEP)]);
  if (f.code !== 0) throw new Error(f.stderr);
  for (const id of byGen.slice(0, GENERATIONS - KEEP)) kept.delete(id);
  ready = true;
});

test.after.always(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

async function copyOfTemplate(t: Parameters<typeof tempDir>[0]): Promise<string> {
  const dir = await tempDir(t, 'drctl-prune-case-');
  const repo = join(dir, 'repo');
  await cp(template, repo, { recursive: true });
  return repo;
}

async function listing(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) if (e.isFile()) out.push(join(e.parentPath, e.name));
  return out.sort();
}

async function repoBytes(repo: string, withTemp = true): Promise<number> {
  let n = 0;
  for (const f of await listing(repo)) {
    if (!withTemp && f.startsWith(join(repo, 'tmp') + '/')) continue;
    const fh = await open(f, 'r');
    n += (await fh.stat()).size;
    await fh.close();
  }
  return n;
}

/** Every point `forget` kept restores byte-identical; returns how many were checked. */
async function assertKeptRestore(t: Parameters<typeof tempDir>[0], repo: string, label: string): Promise<void> {
  const out = await tempDir(t, 'drctl-prune-out-');
  const points = json<PointJson[]>(await drctl(['points', '--repo', repo, '--json']));
  t.deepEqual(points.map((p) => p.id).filter((id) => kept.has(id)).sort(), [...kept.keys()].sort(), `${label}: the kept points are all listed`);
  for (const [id, sha] of kept) {
    const dest = join(out, `${id}.img`);
    const r = await drctl(['restore', '--repo', repo, id, '--to', dest]);
    t.is(r.code, 0, `${label}: restore ${id.slice(0, 10)}: ${r.stderr}`);
    t.is(await sha256File(dest), sha, `${label}: point ${id.slice(0, 10)} restores byte-identical`);
    await rm(dest);
  }
}

test.serial('prune frees the data of forgotten points; kept points restore byte-identical and check --read-data passes', async (t) => {
  if (!requireTools(t, 'qemu-img') || !ready) return;
  const repo = await copyOfTemplate(t);
  const before = await repoBytes(repo);
  const r = await drctl(['prune', '--repo', repo, '--repack-threshold', '10', '--json']);
  t.is(r.code, 0, r.stderr);
  const rep = json<PruneJson>(r);
  t.log(`prune: ${rep.packsDeleted} packs deleted, ${rep.packsRepacked} repacked, ${(rep.bytesFreed / MiB).toFixed(1)} MiB freed in ${rep.durationMs} ms`);
  t.true(rep.packsDeleted + rep.packsRepacked > 0, 'something was deleted or repacked');
  const after = await repoBytes(repo);
  // Generations 1-3 alone wrote 18 MiB of incompressible data that no kept point uses.
  t.true(before - after >= 12 * MiB, `repository shrank by ${((before - after) / MiB).toFixed(1)} MiB`);
  const c = await drctl(['check', '--repo', repo, '--read-data']);
  t.is(c.code, 0, c.stdout + c.stderr);
  await assertKeptRestore(t, repo, 'after prune');
  // A second prune finds nothing left to do.
  const again = json<PruneJson>(await drctl(['prune', '--repo', repo, '--repack-threshold', '10', '--json']));
  t.is(again.packsDeleted + again.packsRepacked + again.unindexedPacksDeleted, 0);
});

test.serial('prune --dry-run reports what it would free and deletes nothing', async (t) => {
  if (!requireTools(t, 'qemu-img') || !ready) return;
  const repo = await copyOfTemplate(t);
  const before = await listing(repo);
  const r = await drctl(['prune', '--repo', repo, '--dry-run', '--json']);
  t.is(r.code, 0, r.stderr);
  t.true(json<PruneJson>(r).bytesFreed > 0);
  t.deepEqual(await listing(repo), before);
});

interface ConcurrentRun { backupCode: number; backupOut: string; backupErr: string; pruneCode: number; pruneOut: string }

/**
 * Start a backup of IMAGE, freeze it (SIGSTOP: a live process, so its lock is not stale) once it
 * holds its lock, run prune and let the backup go on when prune says it waits for it. Whatever
 * the machine's speed, the backup is then still running when prune reaches its final step.
 * Returns 'late' when the freeze came after the backup had already committed its point (a slow
 * test process polling the lock folder): prune then marks that point like any other and the
 * case under test did not happen.
 */
async function backupDuringPrune(t: ExecutionContext, repo: string, image: string): Promise<ConcurrentRun | 'late'> {
  const pointsBefore = (await readdir(join(repo, 'points'))).length;
  const backup = startDrctl(['backup', '--repo', repo, '--image', image, '--name', 'big', '--json']);
  const bOut: Buffer[] = [];
  const bErr: Buffer[] = [];
  backup.stdout?.on('data', (b: Buffer) => bOut.push(b));
  backup.stderr?.on('data', (b: Buffer) => bErr.push(b));
  let exited = false;
  const backupDone = new Promise<number>((res) => backup.on('close', (code) => {
    exited = true;
    res(code ?? 1);
  }));
  // (Waiting up to 2 minutes: a loaded machine can take seconds to start a process.)
  for (let k = 0; k < 4800 && !exited && (await readdir(join(repo, 'locks'))).length === 0; k++) await new Promise((r) => setTimeout(r, 25));
  backup.kill('SIGSTOP');
  const locked = (await readdir(join(repo, 'locks'))).length > 0;
  const committed = (await readdir(join(repo, 'points'))).length > pointsBefore;
  if (!locked || committed) {
    backup.kill('SIGCONT');
    const code = await backupDone;
    if (code !== 0 || !committed) t.fail(`the backup failed or never took its lock (exit ${code}): ${Buffer.concat(bErr).toString()}`);
    return 'late';
  }
  const pruneProc = startDrctl(['prune', '--repo', repo, '--repack-threshold', '10']);
  let pruneOut = '';
  let resumed = false;
  const resume = (): void => {
    if (!resumed) backup.kill('SIGCONT');
    resumed = true;
  };
  const onPruneOutput = (b: Buffer): void => {
    pruneOut += b.toString();
    if (/waiting for `drctl backup/.test(pruneOut)) resume();
  };
  pruneProc.stdout?.on('data', onPruneOutput);
  pruneProc.stderr?.on('data', onPruneOutput);
  const pruneCode = await new Promise<number>((res) => pruneProc.on('close', (code) => res(code ?? 1)));
  resume();
  const backupCode = await backupDone;
  return { backupCode, backupOut: Buffer.concat(bOut).toString(), backupErr: Buffer.concat(bErr).toString(), pruneCode, pruneOut };
}

test.serial('a backup running during prune is not blocked; prune waits for it and keeps the packs it reused', async (t) => {
  if (!requireTools(t, 'qemu-img') || !ready) return;
  const dir = await tempDir(t, 'drctl-prune-big-');
  // A backup whose first 40 MiB are generation 0 (forgotten: its packs are prune's to drop),
  // followed by 64 MiB of new chunks (each 256 KiB chunk of a random block made unique by its
  // number).
  const big = join(dir, 'big.img');
  await cp(gen0Image, big);
  const fh = await open(big, 'a');
  const block = seededBytes('big', 16 * MiB);
  for (let k = 0; k < 4; k++) {
    for (let at = 0; at < block.length; at += 256 * 1024) block.writeUInt32LE(k, at);
    await fh.write(block);
  }
  await fh.close();
  const bigSha = await sha256File(big);

  let repo = '';
  let run: ConcurrentRun | 'late' = 'late';
  for (let attempt = 1; attempt <= 4 && run === 'late'; attempt++) {
    repo = await copyOfTemplate(t);
    const tPrune = Date.now();
    run = await backupDuringPrune(t, repo, big);
    if (run === 'late') t.log(`attempt ${attempt}: the backup had committed its point before it was frozen; again on a fresh copy`);
    else t.log(`prune took ${Date.now() - tPrune} ms alongside the backup`);
  }
  if (run === 'late') {
    t.fail('in 4 attempts the backup was never caught before it committed its point');
    return;
  }
  t.is(run.backupCode, 0, run.backupErr);
  t.is(run.pruneCode, 0, run.pruneOut);
  t.regex(run.pruneOut, /waiting for `drctl backup/, 'prune waited for the backup before its final step');
  t.regex(run.pruneOut, /[1-9]\d* kept for backups that ran meanwhile/, 'packs the backup reused were kept');
  const point = json<PointJson>({ code: 0, stdout: run.backupOut, stderr: '' });

  const c = await drctl(['check', '--repo', repo, '--read-data']);
  t.is(c.code, 0, c.stdout + c.stderr);
  const dest = join(dir, 'restored.img');
  const r = await drctl(['restore', '--repo', repo, point.id, '--to', dest]);
  t.is(r.code, 0, r.stderr);
  t.is(await sha256File(dest), bigSha, 'the point made during prune restores byte-identical');
  await assertKeptRestore(t, repo, 'after concurrent prune');
});

test.serial('kill -9 of prune at 12 moments: check passes, every kept point restores, the next prune finishes the job', async (t) => {
  if (!requireTools(t, 'qemu-img') || !ready) return;
  // How long a whole prune takes here (process start included), to spread the kills over it:
  // the faster of two runs (the first can be slowed by a cold start or the test next door).
  let fullMs = Infinity;
  let probeBytes = 0;
  for (let k = 0; k < 2; k++) {
    const probe = await copyOfTemplate(t);
    const t0 = Date.now();
    const full = await drctl(['prune', '--repo', probe, '--repack-threshold', '10']);
    t.is(full.code, 0, full.stderr);
    fullMs = Math.min(fullMs, Date.now() - t0);
    probeBytes = await repoBytes(probe, false);
    await rm(probe, { recursive: true, force: true });
  }
  t.log(`a whole prune takes ${fullMs} ms`);
  const trials = 12;
  let killedMidway = 0;
  for (let k = 0; k < trials; k++) {
    const repo = await copyOfTemplate(t);
    const delay = Math.round(((k + Math.random()) / trials) * fullMs);
    const started = Date.now();
    const child = startDrctl(['prune', '--repo', repo, '--repack-threshold', '10']);
    const done = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
    const timer = setTimeout(() => child.kill('SIGKILL'), delay);
    const code = await done;
    clearTimeout(timer);
    if (code === null) killedMidway++;
    // A prune that finished before its kill shows how long one takes now (the probes above may
    // have run beside a heavy test): the later kills are spread over that.
    else fullMs = Math.min(fullMs, Date.now() - started);
    const c = await drctl(['check', '--repo', repo]);
    t.is(c.code, 0, `trial ${k} (kill after ${delay} ms): check: ${c.stdout}${c.stderr}`);
    await assertKeptRestore(t, repo, `trial ${k} (kill after ${delay} ms)`);
    const again = await drctl(['prune', '--repo', repo, '--repack-threshold', '10']);
    t.is(again.code, 0, `trial ${k}: the next prune: ${again.stderr}`);
    const c2 = await drctl(['check', '--repo', repo, '--read-data']);
    t.is(c2.code, 0, `trial ${k}: check after the next prune: ${c2.stdout}${c2.stderr}`);
    // Nothing the killed prune left behind survives the next one.
    const left = json<PruneJson>(await drctl(['prune', '--repo', repo, '--repack-threshold', '10', '--dry-run', '--json']));
    t.is(left.packsDeleted + left.packsRepacked + left.unindexedPacksDeleted, 0, `trial ${k}: nothing left to prune`);
    // Temp files of the killed write stay until they are an hour old (tested below); packs may
    // keep up to the repack threshold (10 %) of duplicates the kill left behind.
    const size = await repoBytes(repo, false);
    t.true(size <= probeBytes * 1.1 + MiB, `trial ${k}: ${size} bytes, an uninterrupted prune leaves ${probeBytes}`);
    await rm(repo, { recursive: true, force: true });
  }
  t.log(`${killedMidway} of ${trials} prunes were killed before they finished`);
  t.true(killedMidway >= trials / 2, 'most kills landed while prune was running');
});

test.serial('Ctrl-C while prune waits for a backup says interrupted, deletes nothing, and leaves no lock', async (t) => {
  if (!requireTools(t, 'qemu-img') || !ready) return;
  const repo = await copyOfTemplate(t);
  // A backup that holds its shared lock (a live process, as FORMAT.md describes lock files).
  const holder = spawn('sleep', ['60']);
  t.teardown(() => holder.kill());
  const now = new Date().toISOString();
  await writeFile(join(repo, 'locks', 'f'.repeat(32) + '.json'), JSON.stringify({
    kind: 'shared', host: hostname(), pid: holder.pid, command: 'drctl backup', startedAt: now, heartbeatAt: now,
  }));
  const before = (await listing(repo)).filter((f) => !f.includes('/locks/'));
  const child = startDrctl(['prune', '--repo', repo]);
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  const code = new Promise<number | null>((res) => child.on('close', (c) => res(c)));
  for (let k = 0; k < 400 && !/waiting for/.test(out); k++) await new Promise((r) => setTimeout(r, 25));
  t.regex(out, /waiting for `drctl backup`/);
  child.kill('SIGINT');
  t.is(await code, 1, out);
  t.regex(out, /interrupted/);
  t.notRegex(out, /cannot lock|locked/i);
  const after = new Set(await listing(repo));
  t.deepEqual(before.filter((f) => !after.has(f)), [], 'nothing deleted (repacked copies may stay for the next prune)');
  const c = await drctl(['check', '--repo', repo]);
  t.is(c.code, 0, c.stdout + c.stderr);
  t.deepEqual((await readdir(join(repo, 'locks'))), ['f'.repeat(32) + '.json'], 'only the backup\'s lock is left');
});

test.serial('temp files of a backup killed mid-write are deleted by prune once they are an hour old', async (t) => {
  if (!requireTools(t, 'qemu-img') || !ready) return;
  const repo = await copyOfTemplate(t);
  const dir = await tempDir(t, 'drctl-prune-tmp-');
  const img = join(dir, 'new.img');
  await makeRawImage(img, 96 * MiB, [{ offset: 0, data: seededBytes('killed', 96 * MiB) }]);
  const tmp = join(repo, 'tmp');
  // Kill the backup while a pack is being written (its temp file exists from its first blob
  // on); the write can finish (link into place) between seeing its temp file and the kill
  // landing, so a few attempts may be needed.
  let left: string[] = [];
  for (let attempt = 0; attempt < 6 && left.length === 0; attempt++) {
    const child = startDrctl(['backup', '--repo', repo, '--image', img, '--name', `killed${attempt}`]);
    const done = new Promise<void>((res) => child.on('close', () => res()));
    let exited = false;
    void done.then(() => (exited = true));
    const packTemp = async () => (await readdir(tmp).catch(() => [] as string[])).some((f) => f.includes('pack'));
    while (!exited && !(await packTemp())) await new Promise((r) => setTimeout(r, 2));
    child.kill('SIGKILL');
    await done;
    left = await readdir(tmp);
  }
  t.true(left.length > 0, 'the killed backup left a temp file');
  // A fresh temp file may be a write in progress: prune leaves it alone.
  const fresh = await prune();
  t.is(fresh.tempFilesDeleted, 0);
  t.deepEqual((await readdir(tmp)).sort(), left.sort());
  const old = new Date(Date.now() - 2 * 3600_000);
  for (const f of left) await utimes(join(tmp, f), old, old);
  const rep = await prune();
  t.is(rep.tempFilesDeleted, left.length);
  t.deepEqual(await readdir(tmp), []);
  const c = await drctl(['check', '--repo', repo]);
  t.is(c.code, 0, c.stdout + c.stderr);

  async function prune(): Promise<PruneJson & { tempFilesDeleted: number }> {
    const r = await drctl(['prune', '--repo', repo, '--json']);
    t.is(r.code, 0, r.stderr);
    return json(r);
  }
});
