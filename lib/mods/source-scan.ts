/**
 * Finds JavaScript's `||` in a mod function's source text.
 *
 * `a || b` with an expression on the left returns `a` and never evaluates `b`
 * (every object is truthy), so the right operand is lost without a trace: no
 * expression is built for it, and tracing cannot see it. The only place it
 * shows is the source, so a mod function's own text (`fn.toString()`) is
 * scanned: strings, template-literal text, comments and regular expression
 * literals are skipped; code inside `${...}` is scanned. Helpers the mod calls
 * are not scanned (their text is not the mod's).
 * Internal: not exported from the package.
 * @module
 */

/** Position and surrounding line of the first `||` (or `||=`) in code, or null. */
export interface LogicalOrHit {
  readonly index: number;
  /** The source line holding it, trimmed (at most 120 characters). */
  readonly line: string;
}

// After one of these characters a `/` starts a regular expression, not a division.
const REGEX_AFTER = new Set('(,=:[!&|?{};+-*%<>~^'.split(''));
const REGEX_AFTER_WORD = new Set(['return', 'typeof', 'case', 'do', 'else', 'in', 'of', 'new', 'delete', 'void', 'throw', 'yield', 'await', 'instanceof']);

/** Scans JavaScript source for a `||` token outside strings, comments and regex literals. */
export function findLogicalOr(src: string): LogicalOrHit | null {
  const n = src.length;
  // Stack of open template literals: the brace depth at which each `${` was opened.
  const templates: number[] = [];
  let depth = 0;
  let prev = ''; // last significant character of code (for regex detection)
  let prevWord = '';
  let i = 0;
  const skipString = (q: string): void => {
    i++;
    while (i < n && src[i] !== q) { if (src[i] === '\\') i++; if (src[i] === '\n' && q !== '`') break; i++; }
    i++;
  };
  // Template text from i (just after ` or }) to the closing ` or the next `${`.
  const skipTemplateText = (): void => {
    while (i < n) {
      const c = src[i]!;
      if (c === '\\') { i += 2; continue; }
      if (c === '`') { i++; return; }
      if (c === '$' && src[i + 1] === '{') { i += 2; templates.push(depth); depth++; return; }
      i++;
    }
  };
  while (i < n) {
    const c = src[i]!;
    const d = src[i + 1];
    if (c === '/' && d === '/') { while (i < n && src[i] !== '\n') i++; continue; }
    if (c === '/' && d === '*') { const e = src.indexOf('*/', i + 2); i = e < 0 ? n : e + 2; continue; }
    if (c === '"' || c === "'") { skipString(c); prev = 'a'; prevWord = ''; continue; }
    if (c === '`') { i++; skipTemplateText(); prev = 'a'; prevWord = ''; continue; }
    if (c === '/' && (prev === '' || REGEX_AFTER.has(prev) || REGEX_AFTER_WORD.has(prevWord))) {
      i++;
      let inClass = false;
      while (i < n && src[i] !== '\n') {
        const r = src[i]!;
        if (r === '\\') { i += 2; continue; }
        if (r === '[') inClass = true; else if (r === ']') inClass = false;
        else if (r === '/' && !inClass) break;
        i++;
      }
      i++;
      while (i < n && /[a-z]/i.test(src[i]!)) i++; // flags
      prev = 'a'; prevWord = '';
      continue;
    }
    if (c === '|' && d === '|') {
      const start = src.lastIndexOf('\n', i) + 1;
      const endNl = src.indexOf('\n', i);
      const line = src.slice(start, endNl < 0 ? n : endNl).trim();
      return { index: i, line: line.length > 120 ? `${line.slice(0, 117)}...` : line };
    }
    if (c === '{') depth++;
    if (c === '}') {
      depth--;
      if (templates.length && templates[templates.length - 1] === depth) {
        templates.pop();
        i++;
        skipTemplateText();
        prev = 'a'; prevWord = '';
        continue;
      }
    }
    if (/\s/.test(c)) { i++; continue; }
    if (/[A-Za-z0-9_$]/.test(c)) {
      let j = i;
      while (j < n && /[A-Za-z0-9_$]/.test(src[j]!)) j++;
      prevWord = src.slice(i, j);
      prev = 'a';
      i = j;
      continue;
    }
    prev = c === ')' || c === ']' ? 'a' : c;
    prevWord = '';
    i++;
  }
  return null;
}
