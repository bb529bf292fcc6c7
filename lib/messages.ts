/**
 * Message helpers for typed errors: a safe printed form of any value, and the
 * sharp-style "Possible solutions" block, written once per message.
 * Internal: not exported from the package.
 * @module
 */
import { inspect } from 'node:util';

const SOLUTIONS = 'Possible solutions:';

/**
 * A short printed form of any value for an error message. Never throws
 * (`JSON.stringify` does on a bigint or a cycle, `String` on a null-prototype object).
 */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  if (ArrayBuffer.isView(value)) return `${value.constructor?.name ?? 'ArrayBufferView'}(${value.byteLength} bytes)`;
  try {
    return inspect(value, { depth: 1, breakLength: Infinity, maxArrayLength: 8, maxStringLength: 60 });
  } catch {
    return typeof value;
  }
}

/** Splits a message into its problem text and the items of its "Possible solutions" block (if any). */
function splitSolutions(message: string): { problem: string; items: string[] } {
  const at = message.indexOf(SOLUTIONS);
  if (at < 0) return { problem: message.trimEnd(), items: [] };
  const items = message.slice(at + SOLUTIONS.length).split('\n')
    .map((l) => l.trim()).filter((l) => l.startsWith('- ')).map((l) => l.slice(2));
  return { problem: message.slice(0, at).trimEnd(), items };
}

/**
 * `problem` followed by one "Possible solutions:" block. When `problem`
 * already ends in such a block (a native message carried inside a JS one),
 * its items are kept and `solutions` are merged in, so the block appears
 * once and no remedy twice.
 */
export function withSolutions(problem: string, solutions: readonly string[]): string {
  const { problem: text, items } = splitSolutions(problem);
  const all = [...solutions, ...items].filter((s, i, a) => a.indexOf(s) === i);
  return all.length ? `${text}\n${SOLUTIONS}\n${all.map((s) => `  - ${s}`).join('\n')}` : text;
}
