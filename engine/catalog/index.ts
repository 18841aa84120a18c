/**
 * The catalog is a cache of what the repositories hold plus the job history, shared by the
 * daemon and one-off CLI runs. Callers go through this boundary so that its storage (one
 * lowdb file under a lock file today) can change without touching them.
 */
export { Catalog, CatalogError, type CatalogData, type CatalogPoint } from './catalog.js';
