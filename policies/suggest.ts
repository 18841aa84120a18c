/** "Did you mean …?" for misspelt keys, enum values and time zones. */

/** The closest candidate, when it is close enough to be a likely typo. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const w = norm(word);
  let best: string | undefined;
  let bestScore = Infinity;
  for (const c of candidates) {
    const n = norm(c);
    if (n === w) return c; // fallback_target, FallbackTarget
    const d = distance(w, n);
    const limit = Math.max(1, Math.floor(Math.max(w.length, n.length) / 3));
    const prefix = w.length >= 4 && n.length >= 4 && (n.startsWith(w) || w.startsWith(n));
    const score = d <= limit ? d : prefix ? limit + 0.5 : Infinity;
    if (score < bestScore) {
      bestScore = score;
      best = c;
    }
  }
  return best;
}

/** "did you mean daily?" or "allowed here: a, b, c". */
export function suggestion(word: string, candidates: readonly string[], what = 'allowed here'): string {
  const c = closest(word, candidates);
  return c ? `did you mean ${c}?` : `${what}: ${candidates.join(', ')}`;
}

function norm(s: string): string {
  return s.toLowerCase().replace(/[-_ ]/g, '');
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
export function distance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[] = new Array<number>(rows * cols).fill(0);
  const at = (i: number, j: number): number => d[i * cols + j] as number;
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, at(i - 2, j - 2) + 1);
      d[i * cols + j] = v;
    }
  }
  return at(a.length, b.length);
}
