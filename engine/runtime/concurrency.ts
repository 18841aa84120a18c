/**
 * Run async jobs produced lazily by `jobs` with at most `limit` in flight. The producer is
 * only advanced when a slot is free, so memory stays bounded by `limit` jobs whatever the
 * input size. The first failure stops new jobs; the rest are awaited before it is rethrown.
 */
export async function runBounded(jobs: Iterable<() => Promise<void>> | AsyncIterable<() => Promise<void>>, limit: number, signal?: AbortSignal): Promise<void> {
  const inFlight = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  for await (const job of jobs) {
    if (failure || signal?.aborted) break;
    while (inFlight.size >= limit) await Promise.race(inFlight);
    if (failure) break;
    const p: Promise<void> = job().then(
      () => { inFlight.delete(p); },
      (e: unknown) => { inFlight.delete(p); failure ??= { error: e }; },
    );
    inFlight.add(p);
  }
  await Promise.all(inFlight);
  if (failure) throw failure.error;
}

/** A counting semaphore; waiters are served in order. */
export class Slots {
  private readonly waiters: { units: number; resolve: () => void }[] = [];
  private free: number;

  constructor(private readonly capacity: number) {
    this.free = capacity;
  }

  /** Take `units` (at most the capacity, so a big one still gets through); returns how many to release. */
  async acquire(units = 1): Promise<number> {
    const n = Math.min(units, this.capacity);
    if (this.waiters.length === 0 && this.free >= n) {
      this.free -= n;
      return n;
    }
    await new Promise<void>((resolve) => this.waiters.push({ units: n, resolve }));
    return n;
  }

  release(units = 1): void {
    this.free += units;
    for (let w = this.waiters[0]; w && w.units <= this.free; w = this.waiters[0]) {
      this.waiters.shift();
      this.free -= w.units;
      w.resolve();
    }
  }
}

/**
 * Jobs started one by one that share one fate: the first failure (or an abort of `signal`,
 * as `onAbort()`) is kept instead of rejecting, so no promise is ever left unhandled, and
 * `settle()` waits until no job runs any more before it rethrows that failure. A backup that
 * failed must not report while something may still be writing to the repository.
 */
export class JobGroup {
  private failure: unknown;
  private readonly running = new Set<Promise<unknown>>();

  constructor(private readonly signal?: AbortSignal, private readonly onAbort: () => unknown = () => new Error('aborted')) {}

  /** `p`, with its failure recorded instead of rejected (it then resolves to undefined). */
  guard<T>(p: Promise<T>): Promise<T | undefined> {
    const g = p.catch((e: unknown) => {
      this.fail(e);
      return undefined;
    });
    this.running.add(g);
    void g.then(() => this.running.delete(g));
    return g;
  }

  /** Record `e` unless a failure is recorded already. */
  fail(e: unknown): void {
    this.failure ??= e;
  }

  failed(): boolean {
    if (this.failure === undefined && this.signal?.aborted) this.failure = this.onAbort();
    return this.failure !== undefined;
  }

  throwIfFailed(): void {
    if (this.failed()) throw this.failure;
  }

  /** Wait for every guarded job, then throw the first failure, if any. */
  async settle(): Promise<void> {
    while (this.running.size > 0) await Promise.all(this.running);
    this.throwIfFailed();
  }
}
