/**
 * Request/reply over a few worker threads: each request goes to the least busy worker and is
 * matched to its reply by id. Workers are unref'd while idle so an idle pool never keeps the
 * process alive; a worker that crashes fails every request it holds.
 */
import { Worker } from 'node:worker_threads';

interface Slot {
  worker: Worker;
  pending: number;
}

export class WorkerPool<Reply extends { id: number }> {
  private readonly slots: Slot[] = [];
  private readonly waiting = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void; slot: Slot }>();
  private nextId = 1;

  constructor(script: URL, size: number) {
    for (let i = 0; i < Math.max(1, size); i++) {
      const slot: Slot = { worker: new Worker(script), pending: 0 };
      slot.worker.unref();
      slot.worker.on('message', (reply: Reply) => this.settle(reply));
      slot.worker.on('error', (e) => this.failAll(slot, e));
      this.slots.push(slot);
    }
  }

  /** Send `message` (its `id` is set here) with `transfer`, resolve with the worker's reply. */
  request(message: Record<string, unknown>, transfer: ArrayBuffer[]): Promise<Reply> {
    const slot = this.slots.reduce((a, b) => (b.pending < a.pending ? b : a));
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, slot });
      if (slot.pending++ === 0) slot.worker.ref();
      slot.worker.postMessage({ ...message, id }, transfer);
    });
  }

  async terminate(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private settle(reply: Reply): void {
    const p = this.waiting.get(reply.id);
    if (!p) return;
    this.waiting.delete(reply.id);
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
