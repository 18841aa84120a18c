/**
 * Request/reply over a few worker threads: each request goes to the least busy worker and is
 * matched to its reply by id. Workers are unref'd while idle so an idle pool never keeps the
 * process alive. A worker that ends (an uncaught error, an out-of-memory abort) fails every
 * request it holds and is replaced: requests sent to a thread that has ended are never
 * answered, and the daemon keeps one pool for months.
 */
import { Worker } from 'node:worker_threads';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WorkerThreadError } from '../errors.js';

interface Slot {
  worker: Worker;
  pending: number;
  /** Threads of this slot that ended in a row without a reply in between. */
  ended: number;
  /** Why the slot is given up (its threads keep ending: a broken install): requests fail at once. */
  dead?: WorkerThreadError;
}

/** Threads a slot may lose in a row before it is given up instead of started again. */
const MAX_ENDED_IN_A_ROW = 3;

export class WorkerPool<Reply extends { id: number }> {
  private readonly slots: Slot[] = [];
  private readonly waiting = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void; slot: Slot }>();
  private nextId = 1;
  private stopping = false;
  /** The script's file name, for errors. */
  private readonly name: string;

  constructor(private readonly script: URL, size: number) {
    this.name = script.protocol === 'file:' ? basename(fileURLToPath(script)) : script.href;
    for (let i = 0; i < Math.max(1, size); i++) {
      const slot = { pending: 0, ended: 0 } as Slot;
      this.start(slot);
      this.slots.push(slot);
    }
  }

  /** Send `message` (its `id` is set here) with `transfer`, resolve with the worker's reply. */
  request(message: Record<string, unknown>, transfer: ArrayBuffer[]): Promise<Reply> {
    const live = this.slots.filter((s) => !s.dead);
    if (live.length === 0) return Promise.reject(this.slots[0]?.dead ?? new WorkerThreadError(this.name, 'no worker threads'));
    const slot = live.reduce((a, b) => (b.pending < a.pending ? b : a));
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, slot });
      if (slot.pending++ === 0) slot.worker.ref();
      slot.worker.postMessage({ ...message, id }, transfer);
    });
  }

  async terminate(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  /** A new thread for `slot`; when it ends on its own, its requests fail and another takes its place. */
  private start(slot: Slot): void {
    const worker = new Worker(this.script);
    let failure: WorkerThreadError | undefined;
    slot.worker = worker;
    worker.unref();
    worker.on('message', (reply: Reply) => this.settle(reply));
    // What the thread threw arrives as a copy, not a native Error: give callers a real one.
    worker.on('error', (e: Error) => (failure = new WorkerThreadError(this.name, e?.message ?? String(e), { cause: e })));
    worker.on('exit', (code) => {
      if (this.stopping) return;
      const why = failure ?? new WorkerThreadError(this.name, `it ended (exit code ${code})`);
      this.failAll(slot, why);
      if (++slot.ended >= MAX_ENDED_IN_A_ROW) slot.dead = why;
      else this.start(slot);
    });
  }

  private settle(reply: Reply): void {
    const p = this.waiting.get(reply.id);
    if (!p) return;
    this.waiting.delete(reply.id);
    p.slot.ended = 0;
    if (--p.slot.pending === 0) p.slot.worker.unref();
    p.resolve(reply);
  }

  private failAll(slot: Slot, e: Error): void {
    for (const [id, p] of this.waiting) {
      if (p.slot !== slot) continue;
      this.waiting.delete(id);
      p.reject(e);
    }
    slot.pending = 0;
    slot.worker.unref();
  }
}
