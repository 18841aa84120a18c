/**
 * The real `restic forget` as a test oracle for policies/retention.ts: "which of these points
 * does restic keep for these rules?".
 *
 * `restic backup --time` per point would cost seconds per timeline, so the oracle writes
 * snapshot files itself, encrypted the way restic's design document describes:
 * - a key file (keys/<id>) holds scrypt parameters and `data` = the master key JSON
 *   {mac: {k, r}, encrypt} encrypted with the user key; the user key is the 64-byte scrypt
 *   output: 32 bytes AES-256 key, then the MAC key as 16 bytes k and 16 bytes r;
 * - every other file is IV(16) ‖ AES-256-CTR ciphertext ‖ Poly1305-AES MAC of the ciphertext,
 *   named by the SHA-256 of the whole file; format v2 allows a plain JSON plaintext.
 * The one real snapshot from `restic backup` is the template (same tree, host, paths), so
 * restic reads our snapshots exactly as its own; a crypto mistake makes restic fail loudly.
 *
 * Each restic run derives its key with scrypt (~0.5 s with the key `init` writes), so the
 * oracle also adds a second key with cheap scrypt parameters (same password, same master key)
 * and points restic at it with --key-hint: a forget run then takes tens of milliseconds.
 */
import { execFile } from 'node:child_process';
import { createCipheriv, createDecipheriv, createHash, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decompress } from 'zstd-napi';
import type { RetentionRules } from '../../policies/retention.js';

export interface OraclePoint {
  id: string;
  /** ISO 8601 instant; written to restic in UTC with millisecond precision. */
  time: string;
}

export interface ResticVerdict {
  /** Point ids restic keeps, newest first as restic lists them. */
  keep: string[];
  /** Point ids restic removes, newest first. */
  remove: string[];
}

export interface ResticOracle {
  /**
   * Run `restic forget --dry-run` over exactly these points. Calls are queued, so concurrent
   * tests can share one oracle. Throws with restic's stderr when restic fails.
   */
  resticKeeps(points: readonly OraclePoint[], rules: RetentionRules): Promise<ResticVerdict>;
}

const PASSWORD = 'drctl-restic-oracle';
/** restic's flag for each drctl rule. */
const FLAGS: Record<keyof RetentionRules, string> = {
  generations: '--keep-last',
  hourly: '--keep-hourly',
  daily: '--keep-daily',
  weekly: '--keep-weekly',
  monthly: '--keep-monthly',
  yearly: '--keep-yearly',
  within: '--keep-within',
};

/** `restic init` a repository in `dir` (which must exist and be empty) and back up one tiny folder. */
export async function createResticOracle(dir: string): Promise<ResticOracle> {
  const repo = join(dir, 'repo');
  const src = join(dir, 'src');
  await mkdir(src);
  await writeFile(join(src, 'hello.txt'), 'hello\n');
  const run = (args: string[]) => runRestic(['--repo', repo, '--no-cache', ...args]);
  await run(['init', '--repository-version', '2']);
  const backup = await run(['backup', '--json', '--host', 'oracle', '--time', '2000-01-01 00:00:00', src]);
  const summary = backup.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { message_type?: string; snapshot_id?: string })
    .find((m) => m.message_type === 'summary');
  if (!summary?.snapshot_id) throw new Error(`restic backup printed no snapshot id:\n${backup}`);

  const [keyName, ...others] = await readdir(join(repo, 'keys'));
  if (!keyName || others.length) throw new Error(`expected one key after restic init, found ${others.length + 1}`);
  const keyFile = JSON.parse(await readFile(join(repo, 'keys', keyName), 'utf8')) as KeyFile;
  const userKey = await deriveKey(keyFile);
  const masterJson = decrypt(userKey, Buffer.from(keyFile.data, 'base64'));
  const master = parseMasterKey(masterJson);
  const keyHint = await addCheapKey(repo, keyFile, masterJson);

  // Read restic's own snapshot back: proves decryption and the MAC, and gives the template.
  const snapshotNames = await readdir(join(repo, 'snapshots'));
  const snapshotName = snapshotNames.find((n) => n.startsWith(summary.snapshot_id as string));
  if (!snapshotName) throw new Error(`snapshot ${summary.snapshot_id} not in ${repo}/snapshots`);
  const template = parseSnapshot(decrypt(master, await readFile(join(repo, 'snapshots', snapshotName))));

  // The snapshots now in the repository: restic's id → point id, and for which points.
  let written: { points: string; pointOf: Map<string, string> } | undefined;

  let queue: Promise<unknown> = Promise.resolve();
  return {
    resticKeeps(points, rules) {
      const next = queue.then(() => forget(points, rules));
      queue = next.catch(() => undefined);
      return next;
    },
  };

  async function forget(points: readonly OraclePoint[], rules: RetentionRules): Promise<ResticVerdict> {
    const key = JSON.stringify(points.map((p) => [p.id, p.time]));
    if (written?.points !== key) {
      written = undefined; // a failed write leaves nothing to reuse
      written = { points: key, pointOf: await writeSnapshots(points) };
    }
    const flags = Object.entries(rules).filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${FLAGS[k as keyof RetentionRules]}=${String(v)}`);
    const out = await run(['--key-hint', keyHint, '--no-lock', '--json', 'forget', '--dry-run', '--group-by', 'host,paths', ...flags]);
    return verdict(out, written.pointOf);
  }

  async function writeSnapshots(points: readonly OraclePoint[]): Promise<Map<string, string>> {
    if (new Set(points.map((p) => p.id)).size !== points.length) throw new Error('point ids must be unique');
    const files = points.map((p) => {
      const time = new Date(p.time);
      if (Number.isNaN(time.getTime())) throw new Error(`point ${p.id}: "${p.time}" is not a time`);
      const file = encrypt(master, Buffer.from(JSON.stringify({ ...template, time: time.toISOString() })));
      return { id: p.id, name: createHash('sha256').update(file).digest('hex'), file };
    });
    const dirSnapshots = join(repo, 'snapshots');
    await rm(dirSnapshots, { recursive: true, force: true });
    await mkdir(dirSnapshots);
    await Promise.all(files.map((f) => writeFile(join(dirSnapshots, f.name), f.file)));
    return new Map(files.map((f) => [f.name, f.id]));
  }
}

function verdict(stdout: string, pointOf: Map<string, string>): ResticVerdict {
  // With no rule at all (or only zero ones) restic 0.14 prints nothing and removes nothing.
  if (stdout.trim() === '') return { keep: [...pointOf.values()], remove: [] };
  const groups = JSON.parse(stdout) as { keep: { id: string }[] | null; remove: { id: string }[] | null }[];
  if (groups.length !== 1) throw new Error(`expected one snapshot group from restic forget, got ${groups.length}`);
  const group = groups[0] as (typeof groups)[number];
  const ids = (list: { id: string }[] | null) => (list ?? []).map((s) => {
    const id = pointOf.get(s.id);
    if (id === undefined) throw new Error(`restic listed unknown snapshot ${s.id}`);
    return id;
  });
  const result = { keep: ids(group.keep), remove: ids(group.remove) };
  if (result.keep.length + result.remove.length !== pointOf.size) {
    throw new Error(`restic kept ${result.keep.length} and removed ${result.remove.length} of ${pointOf.size} snapshots`);
  }
  return result;
}

function runRestic(args: string[]): Promise<string> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RESTIC_')) env[k] = v;
  env.RESTIC_PASSWORD = PASSWORD;
  env.TZ = 'UTC';
  return new Promise((resolve, reject) => {
    execFile('restic', args, { env, maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`restic ${args.join(' ')} failed (${err.code ?? err.message}):\n${stderr}`, { cause: err }));
      else resolve(stdout);
    });
  });
}

interface KeyFile {
  kdf: string;
  N: number;
  r: number;
  p: number;
  salt: string;
  data: string;
  [other: string]: unknown;
}

interface CryptoKey {
  encrypt: Buffer;
  /** Poly1305-AES: k is the AES-128 key for the nonce, r the polynomial key. */
  macK: Buffer;
  macR: Buffer;
}

async function deriveKey(keyFile: Pick<KeyFile, 'kdf' | 'N' | 'r' | 'p' | 'salt'>): Promise<CryptoKey> {
  if (keyFile.kdf !== 'scrypt') throw new Error(`unexpected restic key kdf ${keyFile.kdf}`);
  const out = await new Promise<Buffer>((resolve, reject) => {
    scrypt(PASSWORD, Buffer.from(keyFile.salt, 'base64'), 64,
      { N: keyFile.N, r: keyFile.r, p: keyFile.p, maxmem: 512 * 1024 * 1024 },
      (err, key) => (err ? reject(err) : resolve(key)));
  });
  return { encrypt: out.subarray(0, 32), macK: out.subarray(32, 48), macR: out.subarray(48, 64) };
}

function parseMasterKey(json: Buffer): CryptoKey {
  const m = JSON.parse(json.toString('utf8')) as { mac: { k: string; r: string }; encrypt: string };
  return { encrypt: Buffer.from(m.encrypt, 'base64'), macK: Buffer.from(m.mac.k, 'base64'), macR: Buffer.from(m.mac.r, 'base64') };
}

/** A second key for the same master key with scrypt N=1024: restic accepts any valid parameters. */
async function addCheapKey(repo: string, original: KeyFile, masterJson: Buffer): Promise<string> {
  const params = { kdf: 'scrypt', N: 1024, r: 8, p: 1, salt: randomBytes(64).toString('base64') };
  const user = await deriveKey(params);
  const body = Buffer.from(JSON.stringify({ ...original, ...params, data: encrypt(user, masterJson).toString('base64') }));
  const id = createHash('sha256').update(body).digest('hex');
  await writeFile(join(repo, 'keys', id), body);
  return id;
}

function encrypt(key: CryptoKey, plaintext: Buffer): Buffer {
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-256-ctr', key.encrypt, iv);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([iv, ciphertext, poly1305Aes(key, iv, ciphertext)]);
}

function decrypt(key: CryptoKey, file: Buffer): Buffer {
  if (file.length < 32) throw new Error('restic file too short to be encrypted');
  const iv = file.subarray(0, 16);
  const ciphertext = file.subarray(16, file.length - 16);
  if (!timingSafeEqual(poly1305Aes(key, iv, ciphertext), file.subarray(file.length - 16))) {
    throw new Error('restic file MAC does not verify (wrong key or wrong Poly1305-AES)');
  }
  const decipher = createDecipheriv('aes-256-ctr', key.encrypt, iv);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

/** Format v2 plaintext: JSON as is when it starts with '{', else version byte 2 + zstd. */
function parseSnapshot(plaintext: Buffer): Record<string, unknown> {
  const json = plaintext[0] === 0x7b ? plaintext : plaintext[0] === 2 ? decompress(plaintext.subarray(1)) : undefined;
  if (!json) throw new Error(`unknown restic plaintext version ${plaintext[0]}`);
  return JSON.parse(json.toString('utf8')) as Record<string, unknown>;
}

const P1305 = (1n << 130n) - 5n;

/** Poly1305-AES (Bernstein 2005): tag = (poly1305_r(msg) + AES-128_k(nonce)) mod 2^128, little endian. */
function poly1305Aes(key: CryptoKey, nonce: Buffer, msg: Buffer): Buffer {
  const r = littleEndian(key.macR) & 0x0ffffffc0ffffffc0ffffffc0fffffffn; // clamp
  const aes = createCipheriv('aes-128-ecb', key.macK, null).setAutoPadding(false);
  const s = littleEndian(Buffer.concat([aes.update(nonce), aes.final()]));
  let acc = 0n;
  for (let i = 0; i < msg.length; i += 16) {
    const block = msg.subarray(i, i + 16);
    acc = ((acc + littleEndian(block) + (1n << BigInt(8 * block.length))) * r) % P1305;
  }
  let tag = (acc + s) & ((1n << 128n) - 1n);
  const out = Buffer.alloc(16);
  for (let i = 0; i < 16; i++, tag >>= 8n) out[i] = Number(tag & 0xffn);
  return out;
}

function littleEndian(bytes: Uint8Array): bigint {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i] as number);
  return n;
}
