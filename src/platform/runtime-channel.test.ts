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
