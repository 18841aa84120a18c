/**
 * What must stop before the process can end (worker pools: an idle worker is unref'd, but a
 * MessagePort can still hold the event loop open). Pools register themselves when they start,
 * so the CLI stops them without loading their modules: `drctl --version` loaded the whole
 * repository code, zstd addon included, only to find no pool to stop.
 */
const hooks = new Set<() => Promise<void>>();
let ended = false;

/** Run `stop` at shutdown() (once, however often it is registered). */
export function onShutdown(stop: () => Promise<void>): void {
  hooks.add(stop);
}

/**
 * True once shutdown() has run: a pool must not start again then. Work still in flight when a
 * command ends (reads an interrupted archive restore had prefetched) would otherwise start new
 * workers after their pool was stopped, and keep the process alive after its last line.
 */
export function hasShutDown(): boolean {
  return ended;
}

/** Run and forget every registered hook. */
export async function shutdown(): Promise<void> {
  ended = true;
  const all = [...hooks];
  hooks.clear();
  await Promise.all(all.map((stop) => stop()));
}
