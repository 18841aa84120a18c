/** A list of recovery points as JSON, `[{"id": "...", "time": "2026-03-01T04:00:00Z"}, …]` (extra keys allowed, so `drctl points --json` output works as is). */
import type { ConfigProblem } from '../engine/errors.js';
import { ConfigDocument } from './document.js';
import { describe } from './issues.js';
import type { TimedPoint } from './retention.js';

const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i;

/** Parse and check a points file's text; every bad entry is a problem naming its index. */
export function parseTimedPoints(file: string, text: string): { points: TimedPoint[]; problems: ConfigProblem[] } {
  const { doc, value } = ConfigDocument.parse(file, text);
  const points: TimedPoint[] = [];
  if (value === undefined) return { points, problems: doc.problems };
  if (!Array.isArray(value)) {
    doc.add([], 'value', `expected a list of points, got ${describe(value)}`, 'write [{"id": "a1", "time": "2026-03-01T04:00:00Z"}, …]');
    return { points, problems: doc.problems };
  }
  const seen = new Map<string, number>();
  value.forEach((entry: unknown, i) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
      doc.add([i], 'value', `entry ${i} is ${describe(entry)}, not a point`, 'each entry is {"id": "...", "time": "2026-03-01T04:00:00Z"}');
      return;
    }
    const { id, time } = entry as { id?: unknown; time?: unknown };
    let ok = true;
    if (typeof id !== 'string' || !id) {
      ok = false;
      doc.add([i, 'id'], id === undefined ? 'parent' : 'value',
        id === undefined ? `entry ${i} has no id` : `entry ${i}: id is ${describe(id)}; expected non-empty text`, 'e.g. "id": "3f2a9c1e"');
    } else if (seen.has(id)) {
      ok = false;
      doc.add([i, 'id'], 'value', `entry ${i} repeats id "${id}" of entry ${String(seen.get(id))}`, 'each point needs its own id');
    } else seen.set(id, i);
    if (typeof time !== 'string' || !INSTANT.test(time) || Number.isNaN(Date.parse(time))) {
      ok = false;
      doc.add([i, 'time'], time === undefined ? 'parent' : 'value',
        time === undefined ? `entry ${i} has no time` : `entry ${i}: time ${typeof time === 'string' ? JSON.stringify(time) : describe(time)} is not an ISO 8601 instant with a zone`,
        'e.g. "time": "2026-03-01T04:00:00Z" (Z or an offset like +09:00)');
    }
    if (ok) points.push({ id: id as string, time: time as string });
  });
  return { points, problems: doc.problems };
}
