// One streaming request to the example server with Node's built-in fetch
// (undici), timing every server-sent event as it arrives.

/** Splits a text/event-stream body into events ({ event, data }) as chunks arrive. */
export class SseParser {
  #buf = '';
  /** Feeds a decoded chunk; returns the events it completed. */
  push(text) {
    this.#buf += text;
    const events = [];
    let end;
    while ((end = this.#buf.indexOf('\n\n')) >= 0) {
      const block = this.#buf.slice(0, end);
      this.#buf = this.#buf.slice(end + 2);
      let event = 'message', data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data += (data ? '\n' : '') + line.slice(5).trimStart();
      }
      events.push({ event, data });
    }
    return events;
  }
}

/**
 * POSTs /generate and reads the stream. `abortAfter`: disconnect after that
 * many tokens (a client going away). Resolves to
 * { status, retryAfterS, tokens: [{ i, token, t }], done, error, startedAt, endedAt, aborted }
 * with times from performance.now(). Never rejects on HTTP or stream errors:
 * they are reported in the result.
 */
export async function streamOnce(url, { promptTokens, maxTokens, abortAfter, timeoutMs = 600_000 }) {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`no end after ${timeoutMs} ms`)), timeoutMs);
  const r = { status: 0, retryAfterS: 0, tokens: [], done: undefined, error: undefined, startedAt: performance.now(), endedAt: 0, aborted: false };
  try {
    const res = await fetch(`${url}/generate`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ promptTokens, maxTokens }), signal: ac.signal,
    });
    r.status = res.status;
    if (res.status !== 200) {
      r.retryAfterS = Number(res.headers.get('retry-after') ?? 0);
      r.error = await res.text();
      return r;
    }
    const parser = new SseParser();
    const decoder = new TextDecoder();
    for await (const chunk of res.body) {
      const t = performance.now();
      for (const ev of parser.push(decoder.decode(chunk, { stream: true }))) {
        if (ev.event === 'token') {
          const { i, token } = JSON.parse(ev.data);
          r.tokens.push({ i, token, t });
        } else if (ev.event === 'done') {
          r.done = JSON.parse(ev.data);
        } else if (ev.event === 'error') {
          r.error = ev.data;
        }
      }
      if (abortAfter !== undefined && r.tokens.length >= abortAfter) {
        r.aborted = true;
        ac.abort();
        break;
      }
    }
  } catch (e) {
    if (!r.aborted) r.error = String(e?.message ?? e);
  } finally {
    clearTimeout(timer);
    r.endedAt = performance.now();
  }
  return r;
}
