// The Node.js function runtime, run inside the guest by the host's instance manager:
//   node --max-old-space-size=N fn-runtime.js      (env: ISOLA_FN_HANDLER, ISOLA_FN_NAME, ...)
// It loads the handler module from the code bundle (TASK_DIR) and serves invocations as frames
// on a virtio-serial port of its own (protocol/function.ts has the contract). Output of the handler is
// tagged with the request it belongs to (AsyncLocalStorage), one JSON line per write, so the
// host can file every log line under its request id even with concurrent invocations.

import { AsyncLocalStorage } from 'node:async_hooks';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { format } from 'node:util';
import {
  FUNCTION_PORT_NAME,
  type HandlerError,
  RuntimeFrameDecoder,
  type RuntimeReply,
  type RuntimeRequest,
  TASK_DIR,
  WARMUP_REQUEST_ID,
  encodeOutputLine,
  encodeRuntimeFrame,
} from '../protocol/function.js';
import { bypassEntropyCaches, reseedMathRandom } from './clone-random.js';
import { servePort } from './port.js';

type Handler = (event: unknown, context: Record<string, unknown>) => unknown;

const als = new AsyncLocalStorage<string>();

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

/**
 * Stands in for the handler when a snapshot template warms the runtime: the invocation path
 * (frames, JSON, request context, tagged output, formatting) runs once and is compiled before
 * the snapshot, so clones do not compile it on their first request. The user's handler is never
 * called in a template (it could have effects); only its module's top level ran.
 */
const warmHandler: Handler = async (event, context) => {
  process.stdout.write(format('%s %o', 'warm', event));
  console.log('warm %s', JSON.stringify(event));
  console.error('warm');
  (context as { getRemainingTimeInMillis: () => number }).getRemainingTimeInMillis();
  return { event, at: new Date().toISOString() };
};
let initError: HandlerError | null = null;

let info: { functionName: string; functionVersion: string; memoryLimitInMB: number } | null = null;
/** The function's fixed facts for its context, read from the environment once (not per call). */
function fnInfo() {
  info ??= {
    functionName: process.env.ISOLA_FN_NAME ?? '',
    functionVersion: process.env.ISOLA_FN_VERSION ?? '',
    memoryLimitInMB: Number(process.env.ISOLA_FN_MEMORY_MIB ?? 0),
  };
  return info;
}

/** One invocation: the event in, one reply frame out (result JSON as the body). */
function invoke(
  req: { id: number; requestId: string; deadline: number },
  raw: Buffer,
  send: (header: RuntimeReply, body?: Buffer | string) => void,
  use: Handler | null = handler,
): void {
  const t0 = performance.now();
  const durationMs = () => Math.round((performance.now() - t0) * 1000) / 1000;
  const fail = (error: HandlerError) =>
    send({ t: 'reply', id: req.id, ok: false, durationMs: durationMs(), error });
  if (!use) {
    fail(initError ?? { type: 'InitError', message: 'not loaded' });
    return;
  }
  let event: unknown = null;
  if (raw.length > 0) {
    try {
      event = JSON.parse(raw.toString('utf8'));
    } catch (err) {
      fail({ type: 'EventError', message: `event is not JSON: ${(err as Error).message}` });
      return;
    }
  }
  const deadline = req.deadline || Date.now() + 60_000;
  const context = {
    requestId: req.requestId,
    awsRequestId: req.requestId,
    ...fnInfo(),
    deadlineMs: deadline,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
  const done = (result: unknown) => {
    let text: string | undefined;
    try {
      text = JSON.stringify(result === undefined ? null : result);
    } catch (err) {
      fail({
        type: 'SerializationError',
        message: `the handler's result is not JSON: ${(err as Error).message}`,
      });
      return;
    }
    send({ t: 'reply', id: req.id, ok: true, durationMs: durationMs() }, text ?? 'null');
  };
  const failed = (err: unknown) => fail(toHandlerError(err));
  // No async wrappers: every promise costs the async hooks AsyncLocalStorage runs on, and the
  // reactions registered here run in the request's context all the same.
  als.run(req.requestId, () => {
    let out: unknown;
    try {
      out = use(event, context);
    } catch (err) {
      failed(err);
      return;
    }
    // Promise.resolve adopts any thenable safely (a then() that throws or calls back twice);
    // for a native promise it is the same promise.
    if (typeof (out as PromiseLike<unknown> | null)?.then === 'function')
      Promise.resolve(out).then(done, failed);
    else done(out);
  });
}

/** Serve frames from the host on the function's own virtio-serial port (no agent in between). */
function serve(): void {
  const decoder = new RuntimeFrameDecoder();
  const send = (header: RuntimeReply, body?: Buffer | string) =>
    write(encodeRuntimeFrame(header, body));
  const write = servePort(FUNCTION_PORT_NAME, (chunk) => {
    let frames: ReturnType<RuntimeFrameDecoder['push']>;
    try {
      frames = decoder.push(chunk);
    } catch (err) {
      // The stream cannot be resynchronised; the host sees no reply and replaces the instance.
      process.stderr.write(`runtime: bad frame from the host: ${(err as Error).message}\n`);
      process.exit(70);
    }
    for (const { header, body } of frames) {
      const req = header as RuntimeRequest;
      if (req.t === 'health') {
        send(
          handler
            ? { t: 'health', id: req.id, ready: true }
            : {
                t: 'health',
                id: req.id,
                ready: false,
                error: initError ?? { type: 'InitError', message: 'not loaded' },
              },
        );
      } else if (req.t === 'invoke') {
        invoke(req, body, send);
      } else if (req.t === 'warm') {
        invoke(
          { ...req, requestId: WARMUP_REQUEST_ID, deadline: Date.now() + 60_000 },
          body,
          send,
          warmHandler,
        );
      } else if (req.t === 'restore') {
        reseedMathRandom(Buffer.from(req.seed, 'hex'));
        Object.assign(process.env, req.env);
      }
    }
  });
}

// A rejection the handler forgot to await must not take the runtime down (Lambda logs it too).
process.on('unhandledRejection', (err) => {
  process.stderr.write(`unhandled rejection: ${toHandlerError(err).stack ?? String(err)}\n`);
});

async function main(): Promise<void> {
  // Before the handler loads: nothing it draws at init may be cached into a snapshot.
  bypassEntropyCaches();
  try {
    handler = await loadHandler();
  } catch (err) {
    initError = toHandlerError(err);
    process.stderr.write(`init failed: ${initError.type}: ${initError.message}\n`);
  }
  serve();
}

void main();
