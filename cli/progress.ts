/**
 * A one-line progress display on stderr (bytes done, MB/s, ETA), only when stderr is a TTY
 * and the command is not in --json or --quiet mode. Redrawn at most 5 times a second.
 *
 * The line is drawn without a newline, so anything else a command prints while it is up must
 * go through `log` (which clears it first), and `done` clears it only while it is drawn: a
 * clear after the last line of output leaves a stray `\r\x1b[K` in a captured terminal log.
 */
import type { Progress, ProgressFn } from '../engine/progress.js';
import { say, type CliContext, type OutputOptions } from './context.js';
import { bytes, duration } from './format.js';

export interface ProgressLine {
  update: ProgressFn;
  /** Print a line of output (stdout, as `say`), clearing the progress line first. */
  log(line: string): void;
  /** Clear the progress line, if drawn. Safe to call more than once. */
  done(): void;
}

export interface ProgressLineOptions {
  /**
   * Phases whose doneBytes/totalBytes count things rather than bytes, and what they count:
   * `{ mark: 'points' }` draws "mark  3 / 6 points (50%)", with no MB/s.
   */
  counts?: Record<string, string>;
}

export function progressLine(ctx: CliContext, opts: OutputOptions, lineOpts: ProgressLineOptions = {}): ProgressLine {
  if (opts.json || opts.quiet || !ctx.stderr.isTTY) {
    return { update: () => undefined, log: (line) => say(ctx, opts, line), done: () => undefined };
  }
  const t0 = performance.now();
  let last = 0;
  let drawn = false;
  const clear = (): void => {
    if (drawn) ctx.stderr.write('\r\x1b[K');
    drawn = false;
  };
  return {
    update(p: Progress) {
      const now = performance.now();
      if (drawn && now - last < 200) return;
      last = now;
      drawn = true;
      ctx.stderr.write(`\r\x1b[K${render(p, now - t0, lineOpts.counts?.[p.phase])}`);
    },
    log(line: string) {
      clear();
      say(ctx, opts, line);
    },
    done: clear,
  };
}

function render(p: Progress, elapsedMs: number, unit: string | undefined): string {
  const perSecond = elapsedMs > 0 ? p.doneBytes / (elapsedMs / 1000) : 0;
  const amount = (n: number): string => (unit ? String(n) : bytes(n));
  const parts = [`${p.phase}${p.item ? ` ${p.item}` : ''}`, amount(p.doneBytes)];
  if (p.totalBytes > 0) {
    const frac = Math.min(1, p.doneBytes / p.totalBytes);
    parts[1] += ` / ${amount(p.totalBytes)}${unit ? ` ${unit}` : ''} (${(frac * 100).toFixed(0)}%)`;
    if (perSecond > 0 && frac < 1) parts.push(`ETA ${duration(((p.totalBytes - p.doneBytes) / perSecond) * 1000)}`);
  } else if (unit) {
    parts[1] += ` ${unit}`;
  }
  if (!unit) parts.push(`${(perSecond / 1e6).toFixed(0)} MB/s`);
  return parts.join('  ');
}
