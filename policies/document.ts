/**
 * A config file parsed with positions. YAML and JSON both go through the `yaml` parser (JSON is
 * YAML 1.2), so every problem, a syntax error or a wrong field, gets a line and column.
 */
import { LineCounter, Scalar, isAlias, isMap, isPair, isScalar, isSeq, parseDocument, visit, type Document, type Node, type YAMLError } from 'yaml';
import { extname, isAbsolute, relative } from 'node:path';
import type { ConfigProblem } from '../engine/errors.js';

export type FieldPath = readonly (string | number)[];

/** A path as given, or relative to the working directory when it is absolute and inside it. */
export function displayPath(file: string): string {
  if (!isAbsolute(file)) return file;
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file;
}

/** `retention.daily`, `sources[2].host`, '' for the root. */
export function pathText(path: FieldPath): string {
  let s = '';
  for (const seg of path) s += typeof seg === 'number' ? `[${seg}]` : s ? `.${seg}` : seg;
  return s;
}

/** Where a problem points: at the key of a field, at its value, or at the field holding it (missing fields). */
export type Anchor = 'key' | 'value' | 'parent';

interface Step {
  node: Node | undefined;
  key: Node | undefined;
}

export class ConfigDocument {
  readonly problems: ConfigProblem[] = [];
  private constructor(readonly file: string, private readonly doc: Document, private readonly lines: LineCounter) {}

  /**
   * Parse a file's text. `value` is the plain JS value, or undefined when the text has syntax
   * errors (they are in `problems`; a half-parsed file would only add confusing follow-ups).
   * `format` names the syntax in messages; default: JSON for a .json file, else YAML.
   */
  static parse(file: string, text: string, format: 'json' | 'yaml' = extname(file).toLowerCase() === '.json' ? 'json' : 'yaml'): { doc: ConfigDocument; value: unknown } {
    const lines = new LineCounter();
    const parsed = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
    const doc = new ConfigDocument(file, parsed, lines);
    const seen = new Set<string>();
    for (const e of parsed.errors) {
      const { line, col } = lines.linePos(errorOffset(parsed, e));
      const key = `${line}:${e.code}`;
      if (seen.has(key)) continue; // an unquoted "*/5 * * * *" gives one error per star
      seen.add(key);
      doc.problems.push({
        file, line, column: col, path: '', message: `${format === 'json' ? 'JSON' : 'YAML'} syntax error: ${format === 'json' ? jsonWords(e.message) : firstLine(e.message)}`,
        fix: syntaxFix(e.code, e.message, lineText(text, line), format),
      });
    }
    if (doc.problems.length) return { doc, value: undefined };
    try {
      return { doc, value: parsed.toJS({ maxAliasCount: 100 }) };
    } catch (e) {
      doc.problems.push({ file, line: 1, column: 1, path: '', message: `YAML error: ${firstLine((e as Error).message)}` });
      return { doc, value: undefined };
    }
  }

  /** Problems in file order. */
  sortedProblems(): ConfigProblem[] {
    return [...this.problems].sort((a, b) => a.line - b.line || a.column - b.column);
  }

  /** Record a problem at the field `path`. */
  add(path: FieldPath, anchor: Anchor, message: string, fix?: string): void {
    const { line, column } = this.position(path, anchor);
    this.problems.push({ file: this.file, line, column, path: pathText(path), message, ...(fix ? { fix } : {}) });
  }

  position(path: FieldPath, anchor: Anchor): { line: number; column: number } {
    const steps = this.walk(path);
    const last = steps[path.length];
    let offset: number | undefined;
    if (anchor === 'key' && last) offset = (last.key ?? last.node)?.range?.[0];
    else if (anchor === 'value' && last) offset = (last.node ?? last.key)?.range?.[0];
    if (offset === undefined) {
      // Missing (or asked for the parent): the nearest field that exists, at its key.
      for (let i = Math.min(anchor === 'parent' ? path.length - 1 : path.length, steps.length - 1); i >= 0 && offset === undefined; i--) {
        const s = steps[i];
        offset = (s?.key ?? s?.node)?.range?.[0];
      }
    }
    if (offset === undefined) return { line: 1, column: 1 };
    const { line, col } = this.lines.linePos(offset);
    return { line, column: col };
  }

  /** steps[i] is the node reached after i path segments; shorter when the path leaves the document. */
  private walk(path: FieldPath): Step[] {
    const root = this.doc.contents ?? undefined;
    const steps: Step[] = [{ node: root ?? undefined, key: undefined }];
    let node: unknown = root;
    for (const seg of path) {
      if (isAlias(node)) node = node.resolve(this.doc);
      let next: Step | undefined;
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && String(isScalar(p.key) ? p.key.value : p.key) === String(seg));
        if (pair) next = { node: (pair.value as Node | null) ?? undefined, key: pair.key as Node };
      } else if (isSeq(node) && typeof seg === 'number') {
        const item = node.items[seg];
        if (item !== undefined) next = { node: item as Node, key: undefined };
      }
      if (!next) break;
      steps.push(next);
      node = next.node;
    }
    return steps;
  }
}

/**
 * Where to point for a syntax error. The parser reports an unclosed quote where the text ends,
 * often many lines later; the quoted scalar it swallowed starts at the opening quote.
 */
function errorOffset(doc: Document, e: YAMLError): number {
  const at = e.pos[0];
  if (e.code !== 'MISSING_CHAR' || !/closing .?quote/i.test(e.message)) return at;
  let open: number | undefined;
  visit(doc, {
    Scalar(_key, node) {
      const [start, end] = node.range ?? [];
      if ((node.type === Scalar.QUOTE_DOUBLE || node.type === Scalar.QUOTE_SINGLE) && start !== undefined && end !== undefined && start < at && end >= at) {
        open = start;
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return open ?? at;
}

/** The parser speaks YAML ("Flow map in block collection must …"); say it in JSON's words where we can. */
function jsonWords(message: string): string {
  const close = /end with an? ([\]}])/.exec(message)?.[1];
  if (close) return `${close === ']' ? 'a list [' : 'an object {'} is not closed with ${close}`;
  return firstLine(message);
}

function firstLine(s: string): string {
  return (s.split('\n')[0] ?? s).replace(/ at line \d+, column \d+:?$/, '');
}

function lineText(text: string, line: number): string {
  return text.split(/\r?\n/)[line - 1] ?? '';
}

function syntaxFix(code: string, message: string, line: string, format: 'json' | 'yaml'): string | undefined {
  if (/end with a [\]}]/.test(message)) return format === 'json' ? 'close the [ or { opened above' : 'close the [ or { opened above, or write the list as lines starting with "- "';
  if (code === 'MISSING_CHAR' && /closing .?quote/i.test(message)) return 'close the quote that opens here; everything after it was read as part of the text';
  if (format === 'yaml' && /^\s*-?\s*[A-Za-z]+\s*:\s*[*@]/.test(line)) {
    return 'a value that starts with * or @ must be quoted, e.g. schedule: "*/30 * * * *" or schedule: "@daily"';
  }
  switch (code) {
    case 'DUPLICATE_KEY': return 'each key may appear once; remove or merge the repeated one';
    case 'MULTIPLE_DOCS': return 'a file holds exactly one object; move the second one into its own file';
    case 'TAB_AS_INDENT': return 'indent with spaces, not tabs';
    case 'BAD_INDENT': return 'align keys of the same mapping at the same column';
    case 'MISSING_CHAR': return 'close the quote or bracket that is opened before this point';
    default: return undefined;
  }
}
