/**
 * A tar (or tar.gz) stream of planned items, written into any Writable: an archive file
 * (archive-restore.ts) or standard output (dump.ts). Entries are written in plan order with
 * names relative to the point's root, their mode, owner and mtime; a PAX record carries what a
 * ustar header cannot hold. The sink is ended when the archive is complete, destroyed when it
 * fails; the first error (of the content, the pack or the sink) is thrown.
 */
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { pack as tarPack, type Header as TarHeader, type Pack as TarPack } from 'tar-stream';
import type { TreeEntry } from '../repo/tree.js';
import type { PlanItem } from './files-plan.js';
import type { Content, Kind } from './archive-content.js';
import { utimeArg } from './file-meta.js';

export async function writeTar(sink: Writable, items: PlanItem[], kinds: Kind[], content: Content, gzip: boolean): Promise<void> {
  const pack = tarPack();
  const done = gzip ? pipeline(pack, createGzip({ level: 1 }), sink) : pipeline(pack, sink);
  done.catch(() => undefined); // awaited below
  try {
    for (let i = 0; i < items.length; i++) {
      const { rel, entry } = items[i] as PlanItem;
      const kind = kinds[i] as Kind;
      const header: Partial<TarHeader> & { name: string } = {
        name: kind === 'dir' ? `${rel}/` : rel,
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        ...tarTimes(entry),
      };
      if (kind === 'dir') await tarEntry(pack, { ...header, type: 'directory' });
      else if (kind === 'symlink') await tarEntry(pack, { ...header, type: 'symlink', linkname: entry.target });
      else if (kind === 'link') await tarEntry(pack, { ...header, type: 'link', linkname: entry.linkTo });
      else await tarEntry(pack, { ...header, type: 'file', size: entry.size }, content(entry, rel));
    }
    pack.finalize();
  } catch (e) {
    pack.destroy(e as Error);
    await done.catch(() => undefined);
    throw e;
  }
  await done;
}

/** Largest uid/gid and mtime (seconds) tar-stream writes into a ustar header as they are. */
const USTAR_MAX_ID = 0o777777;
const USTAR_MAX_SECONDS = 2 ** 31 - 1;

/**
 * The mtime for the ustar header, plus a PAX record (which GNU tar, bsdtar and Python read
 * before the ustar fields) for what the header cannot hold: an owner above 262143 (sssd,
 * winbind, NFS `nobody` = 4294967294) or an mtime before 1970 or after 2038, which
 * tar-stream would otherwise clamp or wrap without a word.
 */
function tarTimes(entry: TreeEntry): { mtime: Date; pax?: Record<string, string> } {
  const pax: Record<string, string> = {};
  if (entry.uid > USTAR_MAX_ID) pax.uid = String(entry.uid);
  if (entry.gid > USTAR_MAX_ID) pax.gid = String(entry.gid);
  const ns = BigInt(entry.mtimeNs);
  const seconds = Number(ns / 1_000_000_000n) - (ns < 0n && ns % 1_000_000_000n !== 0n ? 1 : 0);
  if (seconds < 0 || seconds > USTAR_MAX_SECONDS) pax.mtime = utimeArg(entry.mtimeNs);
  const shown = Math.min(Math.max(seconds, 0), USTAR_MAX_SECONDS);
  return { mtime: new Date(shown * 1000), ...(Object.keys(pax).length > 0 ? { pax } : {}) };
}

function tarEntry(pack: TarPack, header: Partial<TarHeader> & { name: string }, data?: AsyncIterable<Buffer>): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const entry = pack.entry(header, (err) => (err ? reject(err) : resolve()));
    // An entry is destroyed with the error of its content, or of the pack when the archive
    // file fails; both reach the caller through this promise. Unheard, the entry's 'error'
    // event would end the process.
    entry.on('error', () => undefined);
    if (!data) return;
    void (async () => {
      for await (const chunk of data) if (!entry.write(chunk)) await once(entry, 'drain');
      entry.end(undefined);
    })().catch((e: unknown) => {
      reject(e); // first: the cause, not the "tar entry destroyed" the callback then gets
      entry.destroy(e as Error);
    });
  });
}
