/** The one way engine code reads time; tests inject their own. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

export function fixedClock(at: Date | string): Clock {
  const t = new Date(at);
  return { now: () => new Date(t) };
}

/** A clock the daemon can sleep on. Tests use a simulated one that jumps instead of waiting. */
export interface SleepClock extends Clock {
  /** Resolve when now() ≥ t, or early when `signal` aborts. */
  sleepUntil(t: Date, signal?: AbortSignal): Promise<void>;
  /** True when sleeping jumps the clock: the daemon then lets running jobs finish before it sleeps. */
  readonly simulated: boolean;
}

/** Longest single timer: wakes up regularly so a changed wall clock (NTP, suspend) is noticed. */
const MAX_TIMER_MS = 60_000;

export const systemSleepClock: SleepClock = {
  now: () => new Date(),
  simulated: false,
  async sleepUntil(t: Date, signal?: AbortSignal): Promise<void> {
    while (!signal?.aborted) {
      const left = t.getTime() - Date.now();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(left, MAX_TIMER_MS));
        function done(): void {
          clearTimeout(timer);
          signal?.removeEventListener('abort', done);
          resolve();
        }
        signal?.addEventListener('abort', done, { once: true });
      });
    }
  },
};

/**
 * Simulated time: it flows at the real rate (so jobs have real durations and orderings) and
 * jumps forward when something sleeps. Months of schedule run in seconds.
 */
export class SimulatedClock implements SleepClock {
  readonly simulated = true;
  private base: number;
  private readonly real0 = performance.now();

  constructor(start: Date | string) {
    this.base = new Date(start).getTime();
  }

  now(): Date {
    return new Date(this.base + (performance.now() - this.real0));
  }

  /** Jump to `t` (never backwards). */
  async sleepUntil(t: Date, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return;
    const gap = t.getTime() - this.now().getTime();
    if (gap > 0) this.base += gap;
  }

  /** Move the clock forward by `ms` (a simulated outage). */
  advance(ms: number): void {
    this.base += ms;
  }
}
