/**
 * Type declarations only: `Symbol.dispose` and `Symbol.asyncDispose` for
 * TypeScript users whose `lib` predates them (e.g. `"lib": ["ES2022"]`
 * without `esnext.disposable`, and no `@types/node`), so that the
 * `[Symbol.dispose]()` / `[Symbol.asyncDispose]()` members in flexattn's
 * `.d.ts` compile with `skipLibCheck: false`. The declarations are the same
 * as TypeScript's own (and `@types/node`'s), so they merge with them.
 * Node.js defines both symbols at run time.
 *
 * `AbortSignal` (the type of every op's `signal` option) is declared as an
 * empty interface for the same users: it merges with the full declaration of
 * `@types/node` or the DOM lib where one is present, and keeps the `.d.ts`
 * compiling where neither is.
 * @module
 */
declare global {
  interface SymbolConstructor {
    readonly dispose: unique symbol;
    readonly asyncDispose: unique symbol;
  }
  // eslint-disable-next-line @typescript-eslint/no-empty-interface
  interface AbortSignal {}
}
export {};
