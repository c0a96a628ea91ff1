import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { RuntimeFrameDecoder, encodeRuntimeFrame } from '../protocol/function.js';
import { RuntimeChannel } from './instance.js';

// The host's side of a function runtime's port, against a peer that plays the runtime over a
// real socket pair: invocations leave with binary headers and their replies are matched by id.

async function pair(): Promise<{ host: net.Socket; runtime: net.Socket; close: () => void }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const host = net.connect(port, '127.0.0.1');
  const runtime = await accepted;
  return {
    host,
    runtime,
    close: () => {
      host.destroy();
      runtime.destroy();
      server.close();
    },
  };
}

test('RuntimeChannel: invokes go out with binary headers, replies resolve the matching call', async () => {
  const { host, runtime, close } = await pair();
  try {
    const ch = new RuntimeChannel(host, 7);
    const d = new RuntimeFrameDecoder();
    const seen: number[] = [];
    const got: unknown[] = [];
    runtime.on('data', (chunk: Buffer) => {
      seen.push(chunk[8]!);
      for (const f of d.push(chunk)) {
        const h = f.header as { t: string; id: number; requestId: string };
        got.push(h);
        // one reply per frame, echoing the event
        runtime.write(
          encodeRuntimeFrame({ t: 'reply', id: h.id, ok: true, durationMs: 0.25 }, f.body),
        );
      }
    });
    const a = ch.call(
      { t: 'invoke', requestId: 'req_a', deadline: 123 },
      Buffer.from('{"a":1}'),
      5000,
    );
    const b = ch.call(
      { t: 'invoke', requestId: 'req_b', deadline: 456 },
      Buffer.from('{"b":2}'),
      5000,
    );
    const [ra, rb] = await Promise.all([a, b]);
    assert.deepEqual(ra.header, { t: 'reply', id: 7, ok: true, durationMs: 0.25 });
    assert.equal(ra.body.toString(), '{"a":1}');
    assert.deepEqual(rb.header, { t: 'reply', id: 8, ok: true, durationMs: 0.25 });
    assert.equal(rb.body.toString(), '{"b":2}');
    // Both invokes left in one write (one turn of the loop), the first with the binary tag.
    assert.equal(seen[0], 0x01);
    assert.deepEqual(got, [
      { t: 'invoke', id: 7, requestId: 'req_a', deadline: 123 },
      { t: 'invoke', id: 8, requestId: 'req_b', deadline: 456 },
    ]);
  } finally {
    close();
  }
});

/** A runtime that answers only when told to: `reply(id)`; `seen` lists the invoke ids it got. */
function heldRuntime(runtime: net.Socket) {
  const d = new RuntimeFrameDecoder();
  const seen: number[] = [];
  const waiters: (() => void)[] = [];
  runtime.on('data', (chunk: Buffer) => {
    for (const f of d.push(chunk)) seen.push((f.header as { id: number }).id);
    for (const w of waiters.splice(0)) w();
  });
  return {
    seen,
    reply: (id: number) =>
      runtime.write(encodeRuntimeFrame({ t: 'reply', id, ok: true, durationMs: 0.1 }, 'null')),
    /**
     * Resolves once the runtime has seen `n` invokes; rejects if that takes longer than
     * `withinMs` (an invoke held that should have gone at once must fail, not wait it out).
     */
    until: async (n: number, withinMs = 2000) => {
      const deadline = performance.now() + withinMs;
      while (seen.length < n) {
        const left = deadline - performance.now();
        if (left <= 0) throw new Error(`the runtime saw ${seen.length} invokes, not ${n}`);
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((r) => {
          waiters.push(r);
          timer = setTimeout(r, left);
        });
        clearTimeout(timer);
      }
    },
  };
}

const invoke = (ch: RuntimeChannel, id: string) =>
  ch.call({ t: 'invoke', requestId: id, deadline: 0 }, Buffer.from('{}'), 5000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Puts the channel mid-batch: req_a and req_b sent, the runtime's reply to req_a just in.
 * Returns req_b's pending call (wrapped: an async function would wait for it).
 */
async function midBatch(ch: RuntimeChannel, rt: ReturnType<typeof heldRuntime>) {
  const a = invoke(ch, 'req_a');
  const b = invoke(ch, 'req_b');
  b.catch(() => {});
  await rt.until(2);
  rt.reply(1);
  await a;
  return { b };
}

test('RuntimeChannel: an invoke that comes mid-batch waits for the next reply', async () => {
  const { host, runtime, close } = await pair();
  try {
    // Wide settings, so that only the replies decide here, not the clock.
    const ch = new RuntimeChannel(host, 1, { windowMs: 60_000, maxHoldMs: 60_000 });
    const rt = heldRuntime(runtime);
    const { b } = await midBatch(ch, rt);
    // A reply just came and req_b is in flight: req_c is held...
    const c = invoke(ch, 'req_c');
    await sleep(100);
    assert.deepEqual(rt.seen, [1, 2]);
    // ...until the runtime's next reply.
    rt.reply(2);
    await b;
    await rt.until(3);
    assert.deepEqual(rt.seen, [1, 2, 3]);
    rt.reply(3);
    await c;
  } finally {
    close();
  }
});

test('RuntimeChannel: a held invoke leaves after maxHoldMs without a reply', async () => {
  const { host, runtime, close } = await pair();
  try {
    const ch = new RuntimeChannel(host, 1, { windowMs: 60_000, maxHoldMs: 50 });
    const rt = heldRuntime(runtime);
    await midBatch(ch, rt);
    const t0 = performance.now();
    void invoke(ch, 'req_c').catch(() => {});
    await rt.until(3);
    const waited = performance.now() - t0;
    assert.ok(waited >= 45 && waited < 2000, `held ${waited} ms`);
  } finally {
    close();
  }
});

test('RuntimeChannel: nothing in flight, or no recent reply: an invoke goes at once', async () => {
  const { host, runtime, close } = await pair();
  try {
    const ch = new RuntimeChannel(host, 1, { windowMs: 200, maxHoldMs: 60_000 });
    const rt = heldRuntime(runtime);
    const a = invoke(ch, 'req_a');
    await rt.until(1);
    rt.reply(1);
    await a;
    // A reply just came but nothing else is in flight.
    void invoke(ch, 'req_b').catch(() => {});
    await rt.until(2);
    // req_b is in flight now, but the last reply is older than the window.
    await sleep(300);
    void invoke(ch, 'req_c').catch(() => {});
    await rt.until(3);
    assert.deepEqual(rt.seen, [1, 2, 3]);
  } finally {
    close();
  }
});

test('RuntimeChannel: without coalescing every invoke goes at once', async () => {
  const { host, runtime, close } = await pair();
  try {
    const ch = new RuntimeChannel(host, 1, null);
    const rt = heldRuntime(runtime);
    await midBatch(ch, rt);
    void invoke(ch, 'req_c').catch(() => {});
    await rt.until(3);
    assert.deepEqual(rt.seen, [1, 2, 3]);
  } finally {
    close();
  }
});
