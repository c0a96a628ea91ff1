// The Node.js function runtime, run inside the guest by the host's instance manager:
//   node --max-old-space-size=N fn-runtime.js      (env: ISOLA_FN_HANDLER, ISOLA_FN_NAME, ...)
// It loads the handler module from the code bundle (TASK_DIR) and serves invocations over HTTP
// on the guest's loopback (protocol/function.ts has the contract). Output of the handler is
// tagged with the request it belongs to (AsyncLocalStorage), one JSON line per write, so the
// host can file every log line under its request id even with concurrent invocations.

import { AsyncLocalStorage } from 'node:async_hooks';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  HEADER_DEADLINE,
  HEADER_REQUEST_ID,
  type HandlerError,
  type InvokeReply,
  RUNTIME_PORT,
  TASK_DIR,
  encodeOutputLine,
} from '../protocol/function.js';

type Handler = (event: unknown, context: Record<string, unknown>) => unknown;

const als = new AsyncLocalStorage<string>();
/** Largest event body the runtime reads (the gateway already refuses above 6 MiB). */
const MAX_EVENT_BYTES = 8 * 1024 * 1024;

// Tag output: every write becomes one JSON line on the real stdout.
const realStdout = process.stdout.write.bind(process.stdout);
function tagStream(stream: NodeJS.WriteStream, s: 'o' | 'e'): void {
  stream.write = ((chunk: string | Uint8Array, encOrCb?: unknown, cb?: unknown) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    const done = typeof encOrCb === 'function' ? encOrCb : cb;
    return realStdout(
      encodeOutputLine({ r: als.getStore() ?? null, s, t: text }),
      done as () => void,
    );
  }) as typeof stream.write;
}
tagStream(process.stdout, 'o');
tagStream(process.stderr, 'e');

// This process is the one the guest kernel should kill when memory runs out (the agent has -1000).
try {
  writeFileSync('/proc/self/oom_score_adj', '1000');
} catch {
  // outside a guest (tests) this may be refused; not needed there
}

function toHandlerError(err: unknown): HandlerError {
  if (err instanceof Error) {
    const out: HandlerError = { type: err.name || 'Error', message: err.message };
    if (err.stack) out.stack = err.stack;
    return out;
  }
  return { type: typeof err, message: String(err) };
}

async function loadHandler(): Promise<Handler> {
  const rel = process.env.ISOLA_FN_HANDLER ?? 'index.js';
  const file = path.resolve(process.env.ISOLA_FN_DIR ?? TASK_DIR, rel);
  const mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  const def = mod.default as Record<string, unknown> | ((...a: unknown[]) => unknown) | undefined;
  const candidates = [
    def,
    mod.handler,
    typeof def === 'object' && def !== null ? def.handler : undefined,
  ];
  const fn = candidates.find((c) => typeof c === 'function');
  if (!fn) {
    throw new Error(
      `${rel} exports no handler: use \`export default async (event, context) => ...\` or \`exports.handler = async (event, context) => ...\``,
    );
  }
  return fn as Handler;
}

let handler: Handler | null = null;
let initError: HandlerError | null = null;

function send(res: http.ServerResponse, status: number, body: unknown): void {
  let text: string;
  try {
    text = JSON.stringify(body);
  } catch (err) {
    const e = toHandlerError(err);
    text = JSON.stringify({
      ok: false,
      error: {
        type: 'SerializationError',
        message: `the handler's result is not JSON: ${e.message}`,
      },
      durationMs: (body as { durationMs?: number }).durationMs ?? 0,
    } satisfies InvokeReply);
  }
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(text);
}

async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > MAX_EVENT_BYTES) throw new Error('event too large');
    parts.push(c as Buffer);
  }
  return Buffer.concat(parts);
}

async function invoke(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const requestId = String(req.headers[HEADER_REQUEST_ID] ?? '');
  const deadline = Number(req.headers[HEADER_DEADLINE] ?? 0) || Date.now() + 60_000;
  const raw = await readBody(req);
  const t0 = performance.now();
  const durationMs = () => Math.round((performance.now() - t0) * 1000) / 1000;
  if (!handler) {
    send(res, 200, {
      ok: false,
      error: initError ?? { type: 'InitError', message: 'not loaded' },
      durationMs: 0,
    });
    return;
  }
  let event: unknown = null;
  if (raw.length > 0) {
    try {
      event = JSON.parse(raw.toString('utf8'));
    } catch (err) {
      send(res, 200, {
        ok: false,
        error: { type: 'EventError', message: `event is not JSON: ${(err as Error).message}` },
        durationMs: 0,
      });
      return;
    }
  }
  const context = {
    requestId,
    awsRequestId: requestId,
    functionName: process.env.ISOLA_FN_NAME ?? '',
    functionVersion: process.env.ISOLA_FN_VERSION ?? '',
    memoryLimitInMB: Number(process.env.ISOLA_FN_MEMORY_MIB ?? 0),
    deadlineMs: deadline,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
  const h = handler;
  await als.run(requestId, async () => {
    try {
      const result = await h(event, context);
      send(res, 200, {
        ok: true,
        result: result === undefined ? null : result,
        durationMs: durationMs(),
      });
    } catch (err) {
      send(res, 200, { ok: false, error: toHandlerError(err), durationMs: durationMs() });
    }
  });
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/_isola/health') {
    if (handler) send(res, 200, { ready: true });
    else send(res, 500, { ready: false, error: initError });
    return;
  }
  if (req.method === 'POST' && req.url === '/_isola/invoke') {
    invoke(req, res).catch((err: unknown) => {
      if (!res.headersSent)
        send(res, 400, { ok: false, error: toHandlerError(err), durationMs: 0 });
      else res.destroy();
    });
    return;
  }
  send(res, 404, { error: 'no such route' });
});
// Invocations may run as long as the function timeout; the host enforces it.
server.requestTimeout = 0;
server.keepAliveTimeout = 10 * 60_000;

// A rejection the handler forgot to await must not take the runtime down (Lambda logs it too).
process.on('unhandledRejection', (err) => {
  process.stderr.write(`unhandled rejection: ${toHandlerError(err).stack ?? String(err)}\n`);
});

async function main(): Promise<void> {
  try {
    handler = await loadHandler();
  } catch (err) {
    initError = toHandlerError(err);
    process.stderr.write(`init failed: ${initError.type}: ${initError.message}\n`);
  }
  server.listen(Number(process.env.ISOLA_FN_PORT ?? RUNTIME_PORT), '127.0.0.1');
}

void main();
