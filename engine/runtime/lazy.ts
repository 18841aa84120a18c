/**
 * An async function that loads its module on first call. Area indexes (engine/backup,
 * engine/restore, engine/repo) export their heavy pipelines this way, so importing an index
 * costs nothing until a pipeline runs, and one pipeline never pays for another's
 * dependencies (archiver, ssh2, …).
 */
type AsyncFn = (...args: never[]) => Promise<unknown>;

export function loadOnCall<M extends Record<K, AsyncFn>, K extends keyof M>(load: () => Promise<M>, name: K): M[K] {
  return (async (...args: Parameters<M[K]>) => (await load())[name](...args)) as M[K];
}
