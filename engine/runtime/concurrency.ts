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
