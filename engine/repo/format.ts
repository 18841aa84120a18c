/**
 * On-disk format constants and the repository config. See FORMAT.md for the whole layout.
 */
export const FORMAT_VERSION = 1;

/** A blob hash as the format writes it: 64 lowercase hex digits (SHA-256). */
export function isBlobHash(h: unknown): h is string {
  return typeof h === 'string' && /^[0-9a-f]{64}$/.test(h);
}

export interface RepoConfig {
  formatVersion: number;
  id: string;
  createdAt: string;
  /** Fixed chunk size for disk images, bytes. */
  imageChunkBytes: number;
  /** Content-defined chunking of files. */
  fileChunking: { minBytes: number; avgBytes: number; maxBytes: number; seed: number };
  compression: { codec: 'zstd'; level: number };
  encryption: 'none';
  packTargetBytes: number;
}

/** zstd's compression levels (the binding's minCLevel()/maxCLevel(); negative levels are its fast modes). */
const ZSTD_MIN_LEVEL = -131072;
const ZSTD_MAX_LEVEL = 22;
const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * What is wrong with the fields of a parsed config.json that this drctl uses, one entry per
 * field ("imageChunkBytes must be …, got 0"); empty when it can be used. `formatVersion` is
 * checked by the caller first (a newer format may have other fields). Fields it does not know
 * are left alone, as a reader of format 1 ignores unknown point fields.
 *
 * Written by hand rather than with zod: loading zod costs every command ~4 times what loading
 * commander does, and a repository is opened by nearly every command.
 */
export function repoConfigProblems(c: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const bad = (field: string, expect: string, got: unknown) => problems.push(`${field} must be ${expect}, got ${shown(got)}`);
  const int = (field: string, got: unknown, min: number, max: number, multipleOf = 1): boolean => {
    const ok = typeof got === 'number' && Number.isSafeInteger(got) && got >= min && got <= max && got % multipleOf === 0;
    if (!ok) bad(field, `an integer from ${min} to ${max}${multipleOf > 1 ? ` and a multiple of ${multipleOf}` : ''}`, got);
    return ok;
  };
  if (typeof c.id !== 'string' || c.id === '') bad('id', 'a non-empty string', c.id);
  if (typeof c.createdAt !== 'string') bad('createdAt', 'an ISO date string', c.createdAt);
  // Whole 4 KiB blocks: a restore leaves zero chunks as holes, which a filesystem keeps only
  // in whole blocks. 0 made a backup loop forever, a negative size failed as an internal error.
  int('imageChunkBytes', c.imageChunkBytes, 4 * KiB, 64 * MiB, 4 * KiB);
  const fc = c.fileChunking;
  if (!isRecord(fc)) bad('fileChunking', 'an object {minBytes, avgBytes, maxBytes, seed}', fc);
  else {
    const ok = [int('fileChunking.minBytes', fc.minBytes, 1, 64 * MiB), int('fileChunking.avgBytes', fc.avgBytes, 1, 64 * MiB),
      int('fileChunking.maxBytes', fc.maxBytes, 1, 64 * MiB)].every(Boolean);
    int('fileChunking.seed', fc.seed, -(2 ** 31), 2 ** 32 - 1);
    if (ok && !((fc.minBytes as number) <= (fc.avgBytes as number) && (fc.avgBytes as number) <= (fc.maxBytes as number))) {
      problems.push(`fileChunking must have minBytes <= avgBytes <= maxBytes, got ${fc.minBytes}, ${fc.avgBytes}, ${fc.maxBytes}`);
    }
  }
  const comp = c.compression;
  if (!isRecord(comp)) bad('compression', 'an object {codec, level}', comp);
  else {
    if (comp.codec !== 'zstd') bad('compression.codec', 'zstd (the only codec this drctl knows)', comp.codec);
    int('compression.level', comp.level, ZSTD_MIN_LEVEL, ZSTD_MAX_LEVEL);
  }
  // Anything but "none" would be written in the clear by this drctl, which knows no cipher.
  if (c.encryption === undefined || typeof c.encryption !== 'string') bad('encryption', '"none"', c.encryption);
  else if (c.encryption !== 'none') problems.push(`encryption: this drctl cannot read or write encryption ${shown(c.encryption)} (it knows only "none")`);
  // Offsets in a pack are u32; a pack is sealed once it reaches this size, plus one blob.
  int('packTargetBytes', c.packTargetBytes, 4 * KiB, 1024 * MiB);
  return problems;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function shown(v: unknown): string {
  if (v === undefined) return 'nothing (the field is missing)';
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/**
 * 256 KiB: measured on the shared 2 GiB bench image after its 2% scattered change, the stored
 * growth is 59 MiB at 256 KiB vs 119 MiB at 1 MiB and 332 MiB at 4 MiB (restic: 154 MiB),
 * while a 1 TiB disk still needs only 4 Mi list entries (128 MiB of chunk list).
 */
export const DEFAULT_IMAGE_CHUNK_BYTES = 256 * 1024;
/** Entries per chunk-list blob: 16384 × 256 KiB = 4 GiB of disk per list blob. */
export const LIST_ENTRIES_PER_BLOB = 16384;

export function defaultConfig(id: string, createdAt: string): RepoConfig {
  return {
    formatVersion: FORMAT_VERSION,
    id,
    createdAt,
    imageChunkBytes: DEFAULT_IMAGE_CHUNK_BYTES,
    fileChunking: { minBytes: 512 * 1024, avgBytes: 1024 * 1024, maxBytes: 8 * 1024 * 1024, seed: 0 },
    // Level 1: on the bench image mix it compresses as well as level 3 (ratio 0.545 both)
    // at 363 vs 211 MB/s per core.
    compression: { codec: 'zstd', level: 1 },
    encryption: 'none',
    packTargetBytes: 16 * 1024 * 1024,
  };
}

export const Keys = {
  config: 'config.json',
  pack: (id: string) => `data/${id.slice(0, 2)}/${id}`,
  index: (id: string) => `index/${id}`,
  point: (id: string) => `points/${id}.json`,
  lock: (id: string) => `locks/${id}.json`,
} as const;

/**
 * Pack trailer: u32 LE header length + 8-byte magic. The magic says how the pack is named:
 * `DRCTLPK2` (written now) by the SHA-256 of its header and trailer, `DRCTLPK1` (earlier
 * builds, still read) by the SHA-256 of all its bytes. See FORMAT.md "Packs".
 */
export const PACK_MAGIC = Buffer.from('DRCTLPK2', 'ascii');
export const PACK_MAGIC_WHOLE = Buffer.from('DRCTLPK1', 'ascii');
export const PACK_TRAILER_BYTES = 4 + PACK_MAGIC.length;

/**
 * Why a pack of `size` bytes cannot be whole, by its size and (once read) the header length its
 * trailer gives; undefined when these fit. Shared by check and repair index, which say the same.
 */
export function packSizeProblem(size: number, headerBytes?: number): string | undefined {
  if (size < PACK_TRAILER_BYTES) return `is too short to hold a header (${size} bytes)`;
  if (headerBytes !== undefined && headerBytes + PACK_TRAILER_BYTES > size) return 'has a header length larger than the pack (truncated or overwritten)';
  return undefined;
}
