/**
 * A one-line progress display on stderr (bytes done, MB/s, ETA), only when stderr is a TTY
 * and the command is not in --json or --quiet mode. Redrawn at most 5 times a second.
 */
import type { Progress, ProgressFn } from '../engine/progress.js';
import type { CliContext, OutputOptions } from './context.js';
import { bytes, duration } from './format.js';

export interface ProgressLine {
  update: ProgressFn;
  done(): void;
}

export function progressLine(ctx: CliContext, opts: OutputOptions): ProgressLine {
  if (opts.json || opts.quiet || !ctx.stderr.isTTY) return { update: () => undefined, done: () => undefined };
  const t0 = performance.now();
  let last = 0;
  let shown = false;
  return {
    update(p: Progress) {
      const now = performance.now();
      if (now - last < 200) return;
      last = now;
      shown = true;
      ctx.stderr.write(`\r\x1b[K${render(p, now - t0)}`);
    },
    done() {
      if (shown) ctx.stderr.write('\r\x1b[K');
    },
  };
}

function render(p: Progress, elapsedMs: number): string {
  const mbs = elapsedMs > 0 ? p.doneBytes / 1e6 / (elapsedMs / 1000) : 0;
  const parts = [`${p.phase}${p.item ? ` ${p.item}` : ''}`, bytes(p.doneBytes)];
  if (p.totalBytes > 0) {
    const frac = Math.min(1, p.doneBytes / p.totalBytes);
    parts[1] += ` / ${bytes(p.totalBytes)} (${(frac * 100).toFixed(0)}%)`;
    if (mbs > 0 && frac < 1) parts.push(`ETA ${duration(((p.totalBytes - p.doneBytes) / 1e6 / mbs) * 1000)}`);
  }
  parts.push(`${mbs.toFixed(0)} MB/s`);
  return parts.join('  ');
}
