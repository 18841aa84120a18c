/**
 * What must stop before the process can end (worker pools: an idle worker is unref'd, but a
 * MessagePort can still hold the event loop open). Pools register themselves when they start,
 * so the CLI stops them without loading their modules: `drctl --version` loaded the whole
 * repository code, zstd addon included, only to find no pool to stop.
 */
const hooks = new Set<() => Promise<void>>();

/** Run `stop` at shutdown() (once, however often it is registered). */
export function onShutdown(stop: () => Promise<void>): void {
  hooks.add(stop);
}

/** Run and forget every registered hook. */
export async function shutdown(): Promise<void> {
  const all = [...hooks];
  hooks.clear();
  await Promise.all(all.map((stop) => stop()));
}
