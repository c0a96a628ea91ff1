import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type DecodeEvent,
  FRAME_MAGIC,
  FRAME_PREFIX_BYTES,
  FrameDecoder,
  MAX_FRAME_BYTES,
  MAX_HEADER_BYTES,
  type RawFrame,
  encodeFrame,
} from './frame.js';

/** Small deterministic PRNG (mulberry32) so random tests are reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(rnd: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
  return b;
}

/** Bytes that contain no 'I' (0x49), so they can never look like the start of a magic. */
function garbage(n: number, rnd: () => number = prng(7)): Buffer {
  const b = randomBytes(rnd, n);
  for (let i = 0; i < n; i++) if (b[i] === 0x49) b[i] = 0x00;
  return b;
}

/** A frame prefix with an arbitrary payload length and raw payload bytes. */
function rawFrame(payloadLen: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const p = Buffer.alloc(FRAME_PREFIX_BYTES);
  p.writeUInt16BE(FRAME_MAGIC, 0);
  p.writeUInt32BE(payloadLen, 2);
  return Buffer.concat([p, payload]);
}

/** A frame whose header bytes are given verbatim (possibly not JSON) with a given header length. */
function frameWithHeaderBytes(
  headerBytes: Buffer,
  headerLen = headerBytes.length,
  body = Buffer.alloc(0),
): Buffer {
  const hl = Buffer.alloc(4);
  hl.writeUInt32BE(headerLen, 0);
  const payload = Buffer.concat([hl, headerBytes, body]);
  return rawFrame(payload.length, payload);
}

const frames = (evs: DecodeEvent[]): RawFrame[] =>
  evs.flatMap((e) => (e.kind === 'frame' ? [e.frame] : []));
const errors = (evs: DecodeEvent[]) => evs.flatMap((e) => (e.kind === 'error' ? [e] : []));

describe('encodeFrame', () => {
  test('lays out magic, total length, header length, JSON header and body', () => {
    const header = { id: 7, op: 'info' };
    const body = Buffer.from([1, 2, 3, 0, 255]);
    const buf = encodeFrame(header, body);
    const json = Buffer.from(JSON.stringify(header));
    assert.equal(buf.readUInt16BE(0), FRAME_MAGIC);
    assert.equal(buf.subarray(0, 2).toString('latin1'), 'IS');
    assert.equal(buf.readUInt32BE(2), 4 + json.length + body.length);
    assert.equal(buf.readUInt32BE(6), json.length);
    assert.deepEqual(buf.subarray(10, 10 + json.length), json);
    assert.deepEqual(buf.subarray(10 + json.length), body);
    assert.equal(buf.length, FRAME_PREFIX_BYTES + 4 + json.length + body.length);
  });

  test('honours byteOffset of a body that is a view into a larger buffer', () => {
    const big = Buffer.from('xxxxHELLOyyyy');
    const view = big.subarray(4, 9);
    const [ev] = new FrameDecoder().push(encodeFrame({ a: 1 }, view));
    assert.equal(ev?.kind, 'frame');
    assert.equal(ev?.kind === 'frame' && ev.frame.body.toString(), 'HELLO');
  });

  test('accepts a frame of exactly MAX_FRAME_BYTES and throws RangeError one byte beyond', () => {
    const header = { id: 1 };
    const json = Buffer.from(JSON.stringify(header));
    const fits = Buffer.alloc(MAX_FRAME_BYTES - 4 - json.length);
    const buf = encodeFrame(header, fits);
    assert.equal(buf.readUInt32BE(2), MAX_FRAME_BYTES);
    const evs = new FrameDecoder().push(buf);
    assert.equal(frames(evs).length, 1);
    assert.equal(frames(evs)[0]?.body.length, fits.length);

    assert.throws(() => encodeFrame(header, Buffer.alloc(fits.length + 1)), RangeError);
    assert.throws(() => encodeFrame(header, Buffer.alloc(2 * MAX_FRAME_BYTES)), RangeError);
  });

  test('throws RangeError for a header above MAX_HEADER_BYTES even with no body', () => {
    assert.throws(() => encodeFrame({ s: 'x'.repeat(MAX_HEADER_BYTES) }), RangeError);
    // Just under the header limit is fine.
    const s = 'x'.repeat(MAX_HEADER_BYTES - 10);
    assert.equal(encodeFrame({ s }).readUInt32BE(6), MAX_HEADER_BYTES - 2);
  });
});

describe('FrameDecoder', () => {
  test('round-trips a JSON header and a binary body', () => {
    const header = { id: 42, op: 'writeFile', path: '/tmp/é', nested: { a: [1, null, true] } };
    const body = randomBytes(prng(1), 4096);
    const d = new FrameDecoder();
    const evs = d.push(encodeFrame(header, body));
    assert.equal(evs.length, 1);
    assert.deepEqual(frames(evs)[0], { header, body });
    assert.equal(d.buffered, 0);
  });

  test('a frame without body decodes to an empty body', () => {
    const evs = new FrameDecoder().push(encodeFrame({ ev: 'ready' }));
    assert.deepEqual(frames(evs), [{ header: { ev: 'ready' }, body: Buffer.alloc(0) }]);
  });

  test('decodes many frames delivered in one chunk, in order', () => {
    const rnd = prng(2);
    const sent: RawFrame[] = [];
    for (let i = 0; i < 500; i++) {
      sent.push({ header: { id: i, s: 'a'.repeat(i % 17) }, body: randomBytes(rnd, i % 50) });
    }
    const d = new FrameDecoder();
    const evs = d.push(Buffer.concat(sent.map((f) => encodeFrame(f.header, f.body))));
    assert.equal(errors(evs).length, 0);
    assert.deepEqual(frames(evs), sent);
    assert.equal(d.buffered, 0);
  });

  test('decodes frames split byte by byte across pushes', () => {
    const sent: RawFrame[] = [
      { header: { id: 1, op: 'info' }, body: Buffer.alloc(0) },
      { header: { ev: 'stdout', execId: 3 }, body: Buffer.from('IS magic inside body IS') },
      { header: { id: 2, text: 'ISIS' }, body: Buffer.from([0x49, 0x53, 0, 0, 0, 0]) },
    ];
    const stream = Buffer.concat(sent.map((f) => encodeFrame(f.header, f.body)));
    const d = new FrameDecoder();
    const evs: DecodeEvent[] = [];
    for (let i = 0; i < stream.length; i++) {
      const got = d.push(stream.subarray(i, i + 1));
      // Nothing is emitted until the last byte of a frame arrives.
      if (got.length > 0) assert.ok(got.every((e) => e.kind === 'frame'));
      evs.push(...got);
    }
    assert.deepEqual(frames(evs), sent);
    assert.equal(errors(evs).length, 0);
    assert.equal(d.buffered, 0);
  });

  test('garbage before a valid frame gives exactly one E_AGENT_PROTOCOL error, then the frame', () => {
    const frame = encodeFrame({ id: 9 }, Buffer.from('body'));
    const evs = new FrameDecoder().push(Buffer.concat([garbage(1000), frame]));
    assert.equal(evs.length, 2);
    assert.equal(evs[0]?.kind, 'error');
    assert.equal(evs[0]?.kind === 'error' && evs[0].code, 'E_AGENT_PROTOCOL');
    assert.deepEqual(frames(evs), [{ header: { id: 9 }, body: Buffer.from('body') }]);
  });

  test('garbage trickling in byte by byte still yields one error per garbage run', () => {
    const frame = encodeFrame({ id: 1 });
    const stream = Buffer.concat([garbage(300), frame, garbage(50, prng(99)), frame]);
    const d = new FrameDecoder();
    const evs: DecodeEvent[] = [];
    for (let i = 0; i < stream.length; i++) evs.push(...d.push(stream.subarray(i, i + 1)));
    assert.deepEqual(
      evs.map((e) => e.kind),
      ['error', 'frame', 'error', 'frame'],
    );
  });

  test('a magic split across pushes after garbage is not lost', () => {
    const frame = encodeFrame({ id: 5 });
    const d = new FrameDecoder();
    // Garbage ending in the first magic byte 'I'; the 'S' and the rest come in the next push.
    const first = d.push(Buffer.concat([garbage(20), frame.subarray(0, 1)]));
    assert.deepEqual(
      first.map((e) => e.kind),
      ['error'],
    );
    assert.equal(d.buffered, 1);
    const second = d.push(frame.subarray(1));
    assert.deepEqual(frames(second), [{ header: { id: 5 }, body: Buffer.alloc(0) }]);
    assert.equal(errors(second).length, 0);
  });

  test('an oversized length prefix is E_FRAME_TOO_LARGE and the decoder resyncs to the next frame', () => {
    const next = encodeFrame({ id: 2, op: 'info' });
    const d = new FrameDecoder();
    const evs = d.push(Buffer.concat([rawFrame(MAX_FRAME_BYTES + 1), garbage(100), next]));
    assert.equal(evs[0]?.kind, 'error');
    assert.equal(evs[0]?.kind === 'error' && evs[0].code, 'E_FRAME_TOO_LARGE');
    assert.match(
      evs[0]?.kind === 'error' ? evs[0].message : '',
      new RegExp(String(MAX_FRAME_BYTES + 1)),
    );
    assert.deepEqual(frames(evs), [{ header: { id: 2, op: 'info' }, body: Buffer.alloc(0) }]);
    assert.equal(evs.at(-1)?.kind, 'frame');
    // The decoder did not wait for the 1 MiB it was promised.
    assert.equal(d.buffered, 0);
  });

  test('a stray magic straight before a frame costs an error, not the frame', () => {
    // "IS" + "IS\0\0..." reads as a frame claiming 0x49530000 bytes: too large; the real frame
    // starts right after the stray magic and must still be found.
    const frame = encodeFrame({ id: 8, op: 'info' });
    const evs = new FrameDecoder().push(Buffer.concat([Buffer.from('IS'), frame]));
    assert.deepEqual(
      evs.map((e) => (e.kind === 'error' ? e.code : 'frame')),
      ['E_FRAME_TOO_LARGE', 'frame'],
    );
    assert.deepEqual(frames(evs), [{ header: { id: 8, op: 'info' }, body: Buffer.alloc(0) }]);
  });

  test('0xffffffff length is E_FRAME_TOO_LARGE, not a wait for 4 GiB', () => {
    const d = new FrameDecoder();
    const evs = d.push(Buffer.concat([rawFrame(0xffffffff), encodeFrame({ ok: 1 })]));
    assert.deepEqual(
      evs.map((e) => (e.kind === 'error' ? e.code : 'frame')),
      ['E_FRAME_TOO_LARGE', 'frame'],
    );
  });

  test('invalid JSON header is an error and the following frame is still decoded', () => {
    const bad = frameWithHeaderBytes(Buffer.from('{"id": 1, '));
    const good = encodeFrame({ id: 2 }, Buffer.from('x'));
    const evs = new FrameDecoder().push(Buffer.concat([bad, good]));
    assert.equal(evs.length, 2);
    assert.equal(evs[0]?.kind === 'error' && evs[0].code, 'E_AGENT_PROTOCOL');
    assert.match(evs[0]?.kind === 'error' ? evs[0].message : '', /JSON/);
    assert.deepEqual(evs[1], {
      kind: 'frame',
      frame: { header: { id: 2 }, body: Buffer.from('x') },
    });
  });

  test('header length larger than the payload is an error, next frame decoded', () => {
    const bad = frameWithHeaderBytes(Buffer.from('{}'), 3);
    const good = encodeFrame({ id: 3 });
    const evs = new FrameDecoder().push(Buffer.concat([bad, good]));
    assert.equal(evs.length, 2);
    assert.equal(evs[0]?.kind === 'error' && evs[0].code, 'E_AGENT_PROTOCOL');
    assert.match(evs[0]?.kind === 'error' ? evs[0].message : '', /header length 3/);
    assert.equal(evs[1]?.kind, 'frame');
  });

  test('header length above MAX_HEADER_BYTES is an error even when the payload holds it', () => {
    const json = Buffer.from(JSON.stringify({ s: 'y'.repeat(MAX_HEADER_BYTES) }));
    const bad = frameWithHeaderBytes(json);
    const evs = new FrameDecoder().push(Buffer.concat([bad, encodeFrame({ id: 4 })]));
    assert.deepEqual(
      evs.map((e) => (e.kind === 'error' ? e.code : 'frame')),
      ['E_AGENT_PROTOCOL', 'frame'],
    );
  });

  test('payload shorter than its header length field is an error, next frame decoded', () => {
    const evs = new FrameDecoder().push(
      Buffer.concat([rawFrame(2, Buffer.from([0, 0])), encodeFrame({ id: 6 })]),
    );
    assert.deepEqual(
      evs.map((e) => (e.kind === 'error' ? e.code : 'frame')),
      ['E_AGENT_PROTOCOL', 'frame'],
    );
    assert.deepEqual(frames(evs)[0]?.header, { id: 6 });
  });

  test('waits for an incomplete frame without emitting anything', () => {
    const buf = encodeFrame({ id: 1 }, Buffer.alloc(1000, 1));
    const d = new FrameDecoder();
    assert.deepEqual(d.push(buf.subarray(0, 500)), []);
    assert.equal(d.buffered, 500);
    assert.equal(frames(d.push(buf.subarray(500))).length, 1);
    assert.equal(d.buffered, 0);
  });

  test('a decoded body is a copy: reusing the input buffer does not change it', () => {
    const buf = encodeFrame({ id: 1 }, Buffer.from('hello'));
    const d = new FrameDecoder();
    // Deliver in two pieces so the decoder works on its own buffer and on the caller's chunk.
    const evs = [...d.push(buf.subarray(0, 3)), ...d.push(buf.subarray(3))];
    const body = frames(evs)[0]?.body;
    buf.fill(0);
    assert.equal(body?.toString(), 'hello');
  });

  test('decoding is independent of how the stream is chunked', () => {
    const rnd = prng(3);
    const parts: Buffer[] = [];
    for (let i = 0; i < 400; i++) {
      const r = rnd();
      if (r < 0.5)
        parts.push(
          encodeFrame({ id: i, v: 'I'.repeat(i % 5) }, randomBytes(rnd, Math.floor(rnd() * 64))),
        );
      else if (r < 0.7) parts.push(randomBytes(rnd, Math.floor(rnd() * 40)));
      else if (r < 0.8) parts.push(rawFrame(MAX_FRAME_BYTES + 1 + Math.floor(rnd() * 1000)));
      else if (r < 0.9) parts.push(frameWithHeaderBytes(randomBytes(rnd, 8)));
      else {
        // A valid frame with one random byte flipped.
        const f = encodeFrame({ id: i }, randomBytes(rnd, 8));
        const at = Math.floor(rnd() * f.length);
        f[at] = (f[at] ?? 0) ^ (1 << Math.floor(rnd() * 8));
        parts.push(f);
      }
    }
    const stream = Buffer.concat(parts);
    const whole = new FrameDecoder().push(stream);
    assert.ok(frames(whole).length > 50, `only ${frames(whole).length} decodable frames`);
    for (const seed of [10, 11, 12]) {
      const r2 = prng(seed);
      const d = new FrameDecoder();
      const evs: DecodeEvent[] = [];
      for (let off = 0; off < stream.length; ) {
        const n = 1 + Math.floor(r2() * 300);
        evs.push(...d.push(stream.subarray(off, off + n)));
        off += n;
      }
      assert.deepEqual(frames(evs), frames(whole), `frames differ with chunking seed ${seed}`);
      assert.deepEqual(errors(evs), errors(whole), `errors differ with chunking seed ${seed}`);
    }
  });

  test('never buffers more than MAX_FRAME_BYTES + FRAME_PREFIX_BYTES on random input', () => {
    const rnd = prng(4);
    const d = new FrameDecoder();
    const limit = MAX_FRAME_BYTES + FRAME_PREFIX_BYTES;
    let maxSeen = 0;
    let total = 0;
    while (total < 24 * 1024 * 1024) {
      let chunk = randomBytes(rnd, 1 + Math.floor(rnd() * 256 * 1024));
      // Sprinkle magics that claim plausible and near-limit lengths so the decoder has to wait.
      if (rnd() < 0.5) {
        const len =
          rnd() < 0.5
            ? MAX_FRAME_BYTES - Math.floor(rnd() * 16)
            : Math.floor(rnd() * MAX_FRAME_BYTES);
        chunk = Buffer.concat([chunk, rawFrame(len)]);
      }
      total += chunk.length;
      d.push(chunk);
      maxSeen = Math.max(maxSeen, d.buffered);
      assert.ok(d.buffered <= limit, `buffered ${d.buffered} > ${limit}`);
    }
    // The test is only meaningful if the decoder really had to hold a large partial frame.
    assert.ok(maxSeen > MAX_FRAME_BYTES / 2, `largest buffer seen was only ${maxSeen}`);
  });
});
