/**
 * A name from a point or a source, safe to print on a terminal or in a one-line message:
 * control characters (a newline, an ESC that starts a terminal sequence) are shown as \n, \t
 * or \xNN. `--json` prints names as they are.
 */
export function printable(name: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return name.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => (c === '\n' ? '\\n' : c === '\t' ? '\\t' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
}
