/**
 * zod issues turned into problems an operator can act on: each names the field, says what is
 * wrong in words (not "expected int, received number") and what to write instead.
 */
import type { z } from 'zod';
import type { ConfigDocument, FieldPath } from './document.js';
import { closest, suggestion } from './suggest.js';

/** What a field holds, for messages: "expected <expect>, got …", "write it like <example>". */
export interface FieldDoc {
  expect: string;
  example: string;
}

/** A schema's field docs and allowed keys, by pattern: 'retention.daily', 'sources.*.vm' ('' is the root). */
export interface SchemaDocs {
  fields: Record<string, FieldDoc>;
  keys: Record<string, readonly string[]>;
}

export function pattern(path: FieldPath): string {
  return path.map((s) => (typeof s === 'number' ? '*' : s)).join('.');
}

export function valueAt(root: unknown, path: FieldPath): unknown {
  let v = root;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}

/** "the text "seven"", "a list", "the number 1.5" — what the file actually holds. */
export function describe(v: unknown): string {
  if (v === null || v === undefined) return 'nothing (an empty value)';
  if (typeof v === 'string') return `the text "${v.length > 40 ? v.slice(0, 37) + '...' : v}"`;
  if (typeof v === 'number' || typeof v === 'boolean') return `${typeof v === 'number' ? 'the number ' : ''}${String(v)}`;
  if (Array.isArray(v)) return 'a list';
  return 'a mapping (key: value lines)';
}

/**
 * Fields that name where a secret is kept: someone who pastes the secret itself there (a CHAP
 * password in `chap.secretFile`, a private key in `ssh.keyFile`) must not find it echoed by
 * `policy validate`, `status --json` or the daemon's log. Also any field whose name says secret.
 */
const SECRET_FIELDS = new Set(['chap.secretFile', 'ssh.keyFile']);
const SECRET_NAME = /secret|password|passphrase|passwd|token|private/i;

export function isSecretField(path: FieldPath): boolean {
  const last = path.at(-1);
  return SECRET_FIELDS.has(pattern(path)) || (typeof last === 'string' && SECRET_NAME.test(last));
}

/** describe(), except that the value of a field that may hold a secret is never shown. */
export function describeField(path: FieldPath, v: unknown): string {
  if (!isSecretField(path)) return describe(v);
  if (typeof v === 'string') return `a text of ${[...v].length} characters (not shown: it may be a secret)`;
  if (typeof v === 'number' || typeof v === 'bigint') return 'a number (not shown: it may be a secret)';
  return describe(v);
}

export function reportIssues(doc: ConfigDocument, root: unknown, issues: readonly z.core.$ZodIssue[], docs: SchemaDocs): void {
  for (const issue of issues) {
    const path = issue.path.filter((s): s is string | number => typeof s !== 'symbol');
    const fd = docs.fields[pattern(path)];
    const value = valueAt(root, path);
    const secret = isSecretField(path);
    const shown = describeField(path, value);
    const writeLike = fd ? `write it like ${fd.example}` : undefined;
    if (value === undefined && path.length > 0 && (issue.code === 'invalid_type' || issue.code === 'invalid_value')) {
      doc.add(path, 'parent', 'missing', missingFix(root, path, docs, fd));
      continue;
    }
    switch (issue.code) {
      case 'unrecognized_keys': {
        const allowed = docs.keys[pattern(path)] ?? [];
        for (const key of issue.keys) doc.add([...path, key], 'key', 'unknown field', suggestion(key, allowed));
        break;
      }
      case 'invalid_type': {
        if (issue.expected === 'int') {
          doc.add(path, 'value', `must be a whole number, got ${shown}`, writeLike);
        } else {
          doc.add(path, 'value', `expected ${fd?.expect ?? EXPECTED[issue.expected] ?? issue.expected}, got ${shown}`, writeLike);
        }
        break;
      }
      case 'too_small':
        if (issue.origin === 'array') doc.add(path, 'value', `is empty; expected ${fd?.expect ?? 'at least one entry'}`, writeLike);
        else if (issue.origin === 'string') doc.add(path, 'value', 'is empty', writeLike);
        else doc.add(path, 'value', `must be ${issue.inclusive ? '≥' : '>'} ${String(issue.minimum)}, got ${shown}`, writeLike);
        break;
      case 'too_big':
        doc.add(path, 'value', `must be ${issue.inclusive ? '≤' : '<'} ${String(issue.maximum)}, got ${shown}`, writeLike);
        break;
      case 'invalid_value': {
        const options = issue.values.map(String);
        const guess = typeof value === 'string' && !secret ? closest(value, options) : undefined;
        doc.add(path, 'value', `must be one of ${options.join(', ')}, got ${shown}`,
          guess ? `did you mean ${guess}?` : `pick one of them${fd ? `, e.g. ${fd.example}` : ''}`);
        break;
      }
      case 'invalid_format':
        doc.add(path, 'value', `expected ${fd?.expect ?? issue.format}, got ${shown}`, writeLike);
        break;
      case 'custom': {
        const fix = (issue.params as { fix?: string } | undefined)?.fix;
        doc.add(path, 'value', issue.message, fix);
        break;
      }
      default:
        doc.add(path, 'value', issue.message, writeLike);
    }
  }
}

const EXPECTED: Record<string, string> = {
  string: 'text', number: 'a number', boolean: 'true or false', array: 'a list', object: 'a mapping (key: value lines)',
};

/** For a missing key: a misspelt sibling ("you wrote shedule") beats the generic example. */
function missingFix(root: unknown, path: FieldPath, docs: SchemaDocs, fd: FieldDoc | undefined): string | undefined {
  const key = String(path[path.length - 1]);
  const parent = path.slice(0, -1);
  const siblings = valueAt(root, parent);
  const allowed = docs.keys[pattern(parent)] ?? [];
  if (siblings && typeof siblings === 'object' && !Array.isArray(siblings)) {
    const unknown = Object.keys(siblings).filter((k) => !allowed.includes(k));
    const typo = unknown.find((k) => closest(k, [key]) === key);
    if (typo) return `rename ${typo} to ${key}`;
  }
  return fd ? `add it, e.g. ${fd.example}` : undefined;
}
