/**
 * The progress line on a terminal: a line printed while it is drawn starts on a cleared line
 * (prune's log lines were glued to it: "…0 MB/smarked 6 points"), phases that count points or
 * packs are not drawn as bytes and MB/s, and nothing is cleared after the last line of output.
 * A fake TTY stream records what a terminal would get, stdout and stderr in one transcript.
 */
import test from 'ava';
import { progressLine } from '../../cli/progress.js';
import type { CliContext } from '../../cli/context.js';
import { systemSleepClock } from '../../engine/runtime/clock.js';

function fakeTerminal(): { ctx: CliContext; transcript: () => string } {
  const out: string[] = [];
  const ctx: CliContext = {
    stdout: { write: (s: string) => out.push(s), isTTY: true },
    stderr: { write: (s: string) => out.push(s), isTTY: true },
    env: {}, clock: systemSleepClock, hostname: 'test', signal: new AbortController().signal,
  };
  return { ctx, transcript: () => out.join('') };
}

const CLEAR = '\r\x1b[K';

test('log lines clear the progress line first; a counting phase shows its unit, not bytes; no clear after the last line', (t) => {
  const { ctx, transcript } = fakeTerminal();
  const progress = progressLine(ctx, {}, { counts: { mark: 'points' } });
  progress.update({ phase: 'mark', doneBytes: 1, totalBytes: 6 });
  progress.log('marked 6 points: 6 packs');
  progress.update({ phase: 'mark', doneBytes: 6, totalBytes: 6 });
  progress.done();
  progress.log('freed 0 B');
  progress.done(); // a command's finally: nothing is drawn any more
  const text = transcript();
  t.regex(text, /^\r\x1b\[Kmark {2}1 \/ 6 points \(17%\)/);
  t.true(text.includes(`${CLEAR}marked 6 points: 6 packs\n`), JSON.stringify(text));
  t.notRegex(text, /B \/ 6 B|MB\/s/);
  t.true(text.endsWith('freed 0 B\n'), JSON.stringify(text));
  // Every line of output starts at the left margin: no progress text before it on its line.
  for (const line of text.split('\n').slice(0, -1)) t.false(/points \(\d+%\).*\w/.test(line.split(CLEAR).at(-1) ?? ''), JSON.stringify(line));
});

test('a byte phase still shows bytes and MB/s; nothing is drawn or cleared when stderr is not a terminal', (t) => {
  const { ctx, transcript } = fakeTerminal();
  const progress = progressLine(ctx, {}, { counts: { mark: 'points' } });
  progress.update({ phase: 'restore', doneBytes: 1024 * 1024, totalBytes: 2 * 1024 * 1024, item: 'disk.img' });
  progress.done();
  t.regex(transcript(), /^\r\x1b\[Krestore disk\.img {2}1\.0 MiB \/ 2\.0 MiB \(50%\).*MB\/s\r\x1b\[K$/);

  const piped = fakeTerminal();
  piped.ctx.stderr.isTTY = false;
  const quiet = progressLine(piped.ctx, {});
  quiet.update({ phase: 'mark', doneBytes: 1, totalBytes: 6 });
  quiet.log('a line');
  quiet.done();
  t.is(piped.transcript(), 'a line\n');
});
