/** A list of recovery points as JSON, `[{"id": "...", "time": "2026-03-01T04:00:00Z"}, …]` (extra keys allowed, so `drctl points --json` output works as is). */
import { extname } from 'node:path';
import type { ConfigProblem } from '../engine/errors.js';
import { ConfigDocument } from './document.js';
import { describe } from './issues.js';
import type { TimedPoint } from './retention.js';

const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i;

/** Parse and check a points file's text; every bad entry is a problem naming its index. */
export function parseTimedPoints(file: string, text: string): { points: TimedPoint[]; problems: ConfigProblem[] } {
  // `drctl points --json > x` is the usual source, whatever the file is called.
  const json = extname(file).toLowerCase() === '.json' || /^\s*[[{]/.test(text);
  const { doc, value } = ConfigDocument.parse(file, text, json ? 'json' : 'yaml');
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
    const badDate = typeof time === 'string' && INSTANT.test(time) ? calendarProblem(time) : undefined;
    if (badDate) {
      ok = false;
      doc.add([i, 'time'], 'value', `${JSON.stringify(time)} is not a valid ${badDate.what} (${badDate.why})`, badDate.fix);
    } else if (typeof time !== 'string' || !INSTANT.test(time) || Number.isNaN(Date.parse(time))) {
      ok = false;
      doc.add([i, 'time'], time === undefined ? 'parent' : 'value',
        time === undefined ? `entry ${i} has no time` : `entry ${i}: time ${typeof time === 'string' ? JSON.stringify(time) : describe(time)} is not an ISO 8601 instant with a zone`,
        'e.g. "time": "2026-03-01T04:00:00Z" (Z or an offset like +09:00)');
    }
    if (ok) points.push({ id: id as string, time: time as string });
  });
  return { points, problems: doc.problems };
}

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

/**
 * A date or time of day that does not exist ("2026-02-30", "25:00"), which Date.parse would
 * silently roll over into the next month or day. `time` already has the INSTANT shape.
 */
function calendarProblem(time: string): { what: 'date' | 'time'; why: string; fix: string } | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/.exec(time);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1).map((x) => Number(x ?? 0)) as [number, number, number, number, number, number];
  if (month < 1 || month > 12) return { what: 'date', why: `there is no month ${m[2] as string}`, fix: 'months are 01-12, e.g. "2026-03-01T04:00:00Z"' };
  const days = [31, leap(year) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1] as number;
  if (day < 1 || day > days) {
    const fixed = `${time.slice(0, 8)}${String(days).padStart(2, '0')}${time.slice(10)}`;
    return { what: 'date', why: `${MONTHS[month - 1] as string} ${year} has ${days} days`, fix: `give a day that exists, e.g. ${JSON.stringify(fixed)}` };
  }
  if (hour > 24 || minute > 59 || second > 59 || (hour === 24 && minute + second > 0)) {
    return { what: 'time', why: `${time.slice(11, 16)} is not a time of day`, fix: 'hours are 00-23, minutes and seconds 00-59, e.g. "2026-03-01T04:00:00Z"' };
  }
  return undefined;
}

function leap(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}
