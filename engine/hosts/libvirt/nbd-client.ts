/**
 * A small NBD client (fixed newstyle handshake, structured replies, block status) over any
 * byte stream — here an SSH streamlocal channel to the Unix socket of a libvirt pull-mode
 * backup or of qemu-nbd. Requests are pipelined: many reads in flight on one channel.
 *
 * Block status gives the extents worth reading: `base:allocation` (holes and zero ranges are
 * never read) and `qemu:dirty-bitmap:NAME` (what changed since a checkpoint).
 * Protocol: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md
 */
import type { Duplex } from 'node:stream';
import type { Extent } from '../types.js';

const NBDMAGIC = Buffer.from('NBDMAGIC');
const IHAVEOPT = Buffer.from('IHAVEOPT');
const OPT_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
const OPT = { go: 7, structuredReply: 8, setMetaContext: 10 } as const;
const REP = { ack: 1, info: 3, metaContext: 4 } as const;
const CMD = { read: 0, write: 1, disc: 2, flush: 3, writeZeroes: 6, blockStatus: 7 } as const;
const CHUNK = { none: 0, offsetData: 1, offsetHole: 2, blockStatus: 5 } as const;
/** Largest block-status request (the server may answer for less). */
const STATUS_SPAN = 1 << 30;

export class NbdError extends Error {}

interface Pending {
  resolve(): void;
  reject(e: Error): void;
  /** Structured chunks of this request. */
  onChunk?(type: number, payload: Buffer): void;
  /** Simple-reply read data lands here. */
  readInto?: { buf: Buffer; at: number; length: number };
  /** Data/hole chunks: where request offset 0 lands in `readInto.buf`. */
  base?: number;
}

/** Pulls exact byte counts off a stream. */
class ByteReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private waiter?: { n: number; resolve(b: Buffer): void; reject(e: Error): void };
  private error?: Error;

  constructor(stream: Duplex) {
    stream.on('data', (b: Buffer) => {
      this.chunks.push(b);
      this.have += b.length;
      this.wake();
    });
    const fail = (e: Error): void => {
      this.error ??= e;
      const w = this.waiter;
      this.waiter = undefined;
      w?.reject(this.error);
    };
    stream.on('error', (e: Error) => fail(new NbdError(`NBD connection failed: ${e.message}`)));
    stream.on('close', () => fail(new NbdError('NBD connection closed')));
    stream.on('end', () => fail(new NbdError('NBD connection closed')));
  }

  read(n: number): Promise<Buffer> {
    if (this.have >= n) return Promise.resolve(this.take(n));
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  private wake(): void {
    const w = this.waiter;
    if (w && this.have >= w.n) {
      this.waiter = undefined;
      w.resolve(this.take(w.n));
    }
  }

  private take(n: number): Buffer {
    const first = this.chunks[0] as Buffer;
    if (first.length >= n) {
      // The common case needs no copy: a slice of the first chunk.
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.have -= n;
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const c = this.chunks[0] as Buffer;
      const k = Math.min(c.length, n - got);
      c.copy(out, got, 0, k);
      got += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.have -= n;
    return out;
  }
}

export interface NbdExport {
  sizeBytes: number;
  /** Context ids the server granted, by name. */
  contexts: Map<string, number>;
}

export class NbdClient {
  private readonly reader: ByteReader;
  private readonly pending = new Map<bigint, Pending>();
  private nextHandle = 1n;
  private dead?: Error;
  sizeBytes = 0;
  contexts = new Map<string, number>();

  private constructor(private readonly stream: Duplex) {
    this.reader = new ByteReader(stream);
  }

  /** Handshake and select `exportName`, asking for the given metadata contexts. */
  static async connect(stream: Duplex, exportName: string, metaContexts: string[] = []): Promise<NbdClient> {
    const c = new NbdClient(stream);
    await c.handshake(exportName, metaContexts);
    void c.replyLoop();
    return c;
  }

  private async handshake(name: string, metas: string[]): Promise<void> {
    const hello = await this.reader.read(18);
    if (!hello.subarray(0, 8).equals(NBDMAGIC) || !hello.subarray(8, 16).equals(IHAVEOPT)) throw new NbdError('not an NBD newstyle server');
    const flags = hello.readUInt16BE(16);
    if (!(flags & 1)) throw new NbdError('NBD server does not support fixed newstyle');
    this.stream.write(u32(flags & 2 ? 3 : 1));
    await this.option(OPT.structuredReply, Buffer.alloc(0));
    if (metas.length) {
      const nameB = Buffer.from(name);
      const parts = [u32(nameB.length), nameB, u32(metas.length)];
      for (const m of metas) {
        const mb = Buffer.from(m);
        parts.push(u32(mb.length), mb);
      }
      await this.option(OPT.setMetaContext, Buffer.concat(parts), (type, data) => {
        if (type === REP.metaContext) this.contexts.set(data.subarray(4).toString('utf8'), data.readUInt32BE(0));
      });
    }
    const nameB = Buffer.from(name);
    const infoReq = Buffer.alloc(2);
    await this.option(OPT.go, Buffer.concat([u32(nameB.length), nameB, infoReq]), (type, data) => {
      if (type === REP.info && data.readUInt16BE(0) === 0) this.sizeBytes = Number(data.readBigUInt64BE(2));
    });
  }

  private async option(opt: number, data: Buffer, onReply?: (type: number, data: Buffer) => void): Promise<void> {
    this.stream.write(Buffer.concat([IHAVEOPT, u32(opt), u32(data.length), data]));
    for (;;) {
      const h = await this.reader.read(20);
      if (h.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw new NbdError('bad NBD option reply');
      const type = h.readUInt32BE(12);
      const len = h.readUInt32BE(16);
      const payload = len ? await this.reader.read(len) : Buffer.alloc(0);
      if (type & 0x80000000) throw new NbdError(`NBD server refused option ${opt} (error ${type & 0x7fffffff}${payload.length ? `: ${payload.toString('utf8')}` : ''})`);
      if (type === REP.ack) return;
      onReply?.(type, payload);
    }
  }

  private async replyLoop(): Promise<void> {
    try {
      for (;;) {
        const magic = (await this.reader.read(4)).readUInt32BE(0);
        if (magic === SIMPLE_REPLY_MAGIC) {
          const h = await this.reader.read(12);
          const err = h.readUInt32BE(0);
          const p = this.pending.get(h.readBigUInt64BE(4));
          if (!p) throw new NbdError('NBD reply for an unknown request');
          if (!err && p.readInto) (await this.reader.read(p.readInto.length)).copy(p.readInto.buf, p.readInto.at);
          this.pending.delete(h.readBigUInt64BE(4));
          if (err) p.reject(new NbdError(`NBD request failed (errno ${err})`));
          else p.resolve();
        } else if (magic === STRUCTURED_REPLY_MAGIC) {
          const h = await this.reader.read(16);
          const flags = h.readUInt16BE(0);
          const type = h.readUInt16BE(2);
          const handle = h.readBigUInt64BE(4);
          const len = h.readUInt32BE(12);
          const payload = len ? await this.reader.read(len) : Buffer.alloc(0);
          const p = this.pending.get(handle);
          if (!p) throw new NbdError('NBD reply for an unknown request');
          if (type & 0x8000) {
            this.pending.delete(handle);
            const msgLen = payload.readUInt16BE(4);
            p.reject(new NbdError(`NBD request failed (errno ${payload.readUInt32BE(0)}${msgLen ? `: ${payload.subarray(6, 6 + msgLen).toString('utf8')}` : ''})`));
            continue;
          }
          p.onChunk?.(type, payload);
          if (flags & 1) {
            this.pending.delete(handle);
            p.resolve();
          }
        } else {
          throw new NbdError(`bad NBD reply magic ${magic.toString(16)}`);
        }
      }
    } catch (e) {
      this.dead = e instanceof Error ? e : new NbdError(String(e));
      for (const p of this.pending.values()) p.reject(this.dead);
      this.pending.clear();
    }
  }

  private request(type: number, offset: number, length: number, p: Omit<Pending, 'resolve' | 'reject'>, data?: Buffer, flags = 0): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
    const handle = this.nextHandle++;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(handle, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    return new Promise<void>((resolve, reject) => {
      this.pending.set(handle, { ...p, resolve, reject });
      this.stream.write(data ? Buffer.concat([h, data]) : h);
    });
  }

  /** Read `length` bytes at `offset` into `into` at `at` (holes come back as zeros). */
  async read(offset: number, length: number, into: Buffer, at: number): Promise<void> {
    into.fill(0, at, at + length);
    await this.request(CMD.read, offset, length, {
      readInto: { buf: into, at, length },
      onChunk: (type, payload) => {
        if (type === CHUNK.offsetData) payload.copy(into, at + Number(payload.readBigUInt64BE(0)) - offset, 8);
        // offsetHole: already zero-filled
      },
    });
  }

  async write(offset: number, data: Buffer): Promise<void> {
    await this.request(CMD.write, offset, data.length, {}, data);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    await this.request(CMD.writeZeroes, offset, length, {});
  }

  async flush(): Promise<void> {
    await this.request(CMD.flush, 0, 0, {});
  }

  /**
   * Extents of `context` over the whole export where `pick(flags)` holds, merged. One request
   * per span; the server may answer for part of it, so we continue from where it stopped.
   */
  async extents(context: string, pick: (flags: number) => boolean): Promise<Extent[]> {
    const id = this.contexts.get(context);
    if (id === undefined) throw new NbdError(`NBD server did not grant metadata context ${context}`);
    const out: Extent[] = [];
    let pos = 0;
    while (pos < this.sizeBytes) {
      const len = Math.min(STATUS_SPAN, this.sizeBytes - pos);
      let covered = 0;
      await this.request(CMD.blockStatus, pos, len, {
        onChunk: (type, payload) => {
          if (type !== CHUNK.blockStatus || payload.readUInt32BE(0) !== id) return;
          for (let k = 4; k + 8 <= payload.length; k += 8) {
            const n = payload.readUInt32BE(k);
            const flags = payload.readUInt32BE(k + 4);
            const start = pos + covered;
            if (pick(flags)) {
              const last = out.at(-1);
              if (last && last.offset + last.length === start) last.length += n;
              else out.push({ offset: start, length: n });
            }
            covered += n;
          }
        },
      });
      if (covered === 0) throw new NbdError(`NBD block status made no progress at offset ${pos}`);
      pos += covered;
    }
    const end = this.sizeBytes;
    const last = out.at(-1);
    if (last && last.offset + last.length > end) last.length = end - last.offset;
    return out;
  }

  async close(): Promise<void> {
    if (!this.dead) {
      const h = Buffer.alloc(28);
      h.writeUInt32BE(REQUEST_MAGIC, 0);
      h.writeUInt16BE(CMD.disc, 6);
      this.stream.write(h);
    }
    this.stream.end();
    this.stream.destroy();
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}
