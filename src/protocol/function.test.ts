import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  MAX_RUNTIME_FRAME,
  RuntimeFrameDecoder,
  RuntimeFrameError,
  decodeOutputLine,
  encodeOutputLine,
  encodeRuntimeFrame,
  heapLimitMiB,
} from './function.js';

type Frame = { header: Record<string, unknown>; body: Buffer };

const frames: Frame[] = [
  { header: { t: 'health', id: 1 }, body: Buffer.alloc(0) },
  {
    header: { t: 'invoke', id: 2, requestId: 'r-ü✓', deadline: 1_700_000_000_000 },
    body: Buffer.from(JSON.stringify({ hello: 'wörld', n: [1, 2, 3] })),
  },
  {
    header: { t: 'reply', id: 2, ok: true, durationMs: 1.5 },
    body: Buffer.from([0, 1, 2, 255, 254]),
  },
];

function collect(d: RuntimeFrameDecoder, chunks: Buffer[]): Frame[] {
  const out: Frame[] = [];
  for (const c of chunks) out.push(...d.push(c));
  return out;
}

describe('runtime frames', () => {
  test('encode/decode round trip', () => {
    for (const f of frames) {
      const enc = encodeRuntimeFrame(f.header, f.body);
      const hl = enc.readUInt32BE(0);
      assert.equal(enc.readUInt32BE(4), f.body.length);
      assert.equal(enc.length, 8 + hl + f.body.length);
      assert.deepEqual(new RuntimeFrameDecoder().push(enc), [f]);
    }
  });

  test('an invoke and an ok reply have binary headers; other frames JSON ones', () => {
    const [health, invoke, reply] = frames.map((f) => encodeRuntimeFrame(f.header, f.body));
    assert.equal(health!.toString('utf8', 8, 8 + health!.readUInt32BE(0)), '{"t":"health","id":1}');
    // 0x01 | id | deadline | n | requestId
    assert.equal(invoke![8], 0x01);
    assert.equal(invoke!.readUInt32BE(0), 14 + Buffer.byteLength('r-ü✓'));
    assert.equal(invoke!.readUInt32BE(9), 2);
    assert.equal(invoke!.readDoubleBE(13), 1_700_000_000_000);
    assert.equal(invoke![21], Buffer.byteLength('r-ü✓'));
    // 0x02 | id | durationMs
    assert.equal(reply![8], 0x02);
    assert.equal(reply!.readUInt32BE(0), 13);
    assert.equal(reply!.readDoubleBE(13), 1.5);
  });

  test('headers whose fields do not fit the binary form stay JSON and round trip', () => {
    const inv = { t: 'invoke', id: 2, requestId: 'r', deadline: 5 };
    const odd = [
      { ...inv, extra: 1 },
      { id: 2, t: 'invoke', requestId: 'r', deadline: 5 }, // another key order
      { ...inv, id: -1 },
      { ...inv, id: 2 ** 32 },
      { ...inv, id: 1.5 },
      { ...inv, id: '2' },
      { ...inv, requestId: 'x'.repeat(256) },
      { ...inv, requestId: 'é'.repeat(128) }, // 256 bytes of UTF-8
      { ...inv, requestId: 7 },
      { ...inv, deadline: Number.POSITIVE_INFINITY },
      { t: 'reply', id: 2, ok: false, durationMs: 1, error: { type: 'E', message: 'm' } },
      { t: 'reply', id: 2, ok: true, durationMs: 1, more: true },
      { t: 'reply', id: 2, ok: true },
    ];
    for (const header of odd) {
      const enc = encodeRuntimeFrame(header, Buffer.from('{}'));
      assert.equal(enc[8], 0x7b, JSON.stringify(header));
      const [f] = new RuntimeFrameDecoder().push(enc);
      assert.deepEqual(f!.header, JSON.parse(JSON.stringify(header)));
    }
    // The longest request id that fits: 255 bytes.
    const long = { ...inv, requestId: 'x'.repeat(255) };
    const enc = encodeRuntimeFrame(long);
    assert.equal(enc[8], 0x01);
    assert.deepEqual(new RuntimeFrameDecoder().push(enc)[0]!.header, long);
  });

  test('the JSON form of an invoke and of an ok reply still decodes', () => {
    for (const f of frames) {
      const h = Buffer.from(JSON.stringify(f.header));
      const prefix = Buffer.alloc(8);
      prefix.writeUInt32BE(h.length, 0);
      prefix.writeUInt32BE(f.body.length, 4);
      assert.deepEqual(new RuntimeFrameDecoder().push(Buffer.concat([prefix, h, f.body])), [f]);
    }
  });

  test('a malformed binary header throws RuntimeFrameError E_AGENT_PROTOCOL', () => {
    const bad = (header: Buffer) => {
      const prefix = Buffer.alloc(8);
      prefix.writeUInt32BE(header.length, 0);
      return Buffer.concat([prefix, header]);
    };
    const ok = encodeRuntimeFrame({ t: 'reply', id: 1, ok: true, durationMs: 1 }).subarray(8);
    const inv = encodeRuntimeFrame({ t: 'invoke', id: 1, requestId: 'abc', deadline: 1 }).subarray(
      8,
    );
    const nanDeadline = Buffer.from(inv);
    nanDeadline.writeDoubleBE(Number.NaN, 5);
    const wrongN = Buffer.from(inv);
    wrongN[13] = 4;
    for (const h of [
      Buffer.from([0x02]),
      ok.subarray(0, 12),
      Buffer.concat([ok, Buffer.from([0])]),
      Buffer.from([0x01]),
      inv.subarray(0, 13),
      inv.subarray(0, inv.length - 1),
      wrongN,
      nanDeadline,
    ]) {
      assert.throws(
        () => new RuntimeFrameDecoder().push(bad(h)),
        (e: unknown) => e instanceof RuntimeFrameError && e.code === 'E_AGENT_PROTOCOL',
        h.toString('hex'),
      );
    }
  });

  test('the body defaults to empty', () => {
    const out = new RuntimeFrameDecoder().push(encodeRuntimeFrame({ t: 'health', id: 9 }));
    assert.equal(out.length, 1);
    assert.equal(out[0]!.body.length, 0);
  });

  test('a frame split at every byte boundary', () => {
    for (const f of frames) {
      const enc = encodeRuntimeFrame(f.header, f.body);
      for (let i = 0; i <= enc.length; i++) {
        const d = new RuntimeFrameDecoder();
        const first = d.push(enc.subarray(0, i));
        assert.deepEqual(first, i === enc.length ? [f] : [], `split at ${i}`);
        const second = d.push(enc.subarray(i));
        assert.deepEqual([...first, ...second], [f], `split at ${i}`);
      }
    }
  });

  test('byte by byte', () => {
    const all = Buffer.concat(frames.map((f) => encodeRuntimeFrame(f.header, f.body)));
    const d = new RuntimeFrameDecoder();
    const chunks = [...all].map((b) => Buffer.from([b]));
    assert.deepEqual(collect(d, chunks), frames);
  });

  test('several frames in one chunk, and a chunk ending mid-frame', () => {
    const all = Buffer.concat(frames.map((f) => encodeRuntimeFrame(f.header, f.body)));
    assert.deepEqual(new RuntimeFrameDecoder().push(all), frames);
    const d = new RuntimeFrameDecoder();
    const cut = all.length - 3;
    assert.deepEqual(d.push(all.subarray(0, cut)), frames.slice(0, 2));
    assert.deepEqual(d.push(all.subarray(cut)), frames.slice(2));
  });

  test('bodies are copies: reusing the input chunk does not change a decoded body', () => {
    const enc = encodeRuntimeFrame({ id: 1 }, Buffer.from('abc'));
    const [f] = new RuntimeFrameDecoder().push(enc);
    enc.fill(0);
    assert.equal(f!.body.toString(), 'abc');
  });

  test('a partial frame kept between pushes is a copy: reusing the chunk does not change it', () => {
    const enc = encodeRuntimeFrame({ t: 'health', id: 3 }, Buffer.from('xyz'));
    const d = new RuntimeFrameDecoder();
    const head = Buffer.from(enc.subarray(0, 12));
    assert.deepEqual(d.push(head), []);
    head.fill(0);
    const [f] = d.push(enc.subarray(12));
    assert.deepEqual(f!.header, { t: 'health', id: 3 });
    assert.equal(f!.body.toString(), 'xyz');
  });

  test('an oversized frame throws as soon as its prefix is seen', () => {
    const prefix = Buffer.alloc(8);
    prefix.writeUInt32BE(100, 0);
    prefix.writeUInt32BE(MAX_RUNTIME_FRAME - 99, 4);
    assert.throws(() => new RuntimeFrameDecoder().push(prefix), /too large/);
    const huge = Buffer.alloc(8);
    huge.writeUInt32BE(0xffffffff, 0);
    huge.writeUInt32BE(0xffffffff, 4);
    assert.throws(() => new RuntimeFrameDecoder().push(huge), /too large/);
    // Exactly at the limit is accepted (it just waits for the rest).
    const edge = Buffer.alloc(8);
    edge.writeUInt32BE(2, 0);
    edge.writeUInt32BE(MAX_RUNTIME_FRAME - 2, 4);
    assert.deepEqual(new RuntimeFrameDecoder().push(edge), []);
  });

  const withHeader = (text: string) => {
    const h = Buffer.from(text);
    const prefix = Buffer.alloc(8);
    prefix.writeUInt32BE(h.length, 0);
    return Buffer.concat([prefix, h]);
  };
  const protocolError = (e: unknown) =>
    e instanceof RuntimeFrameError && e.code === 'E_AGENT_PROTOCOL';

  test('a header that is not JSON throws RuntimeFrameError E_AGENT_PROTOCOL', () => {
    assert.throws(() => new RuntimeFrameDecoder().push(withHeader('{nope')), protocolError);
  });

  test('a header that is JSON but not an object throws too (peers read fields of it)', () => {
    for (const text of ['null', '0', '"t"', '[]', '[{"t":"health","id":1}]', 'true']) {
      assert.throws(() => new RuntimeFrameDecoder().push(withHeader(text)), protocolError, text);
    }
  });

  test('an oversized frame is E_FRAME_TOO_LARGE', () => {
    const huge = Buffer.alloc(8, 0xff);
    assert.throws(
      () => new RuntimeFrameDecoder().push(huge),
      (e: unknown) => e instanceof RuntimeFrameError && e.code === 'E_FRAME_TOO_LARGE',
    );
  });
});

describe('output lines', () => {
  test('tagged lines round trip', () => {
    for (const line of [
      { r: 'req-1', s: 'o' as const, t: 'hello' },
      { r: null, s: 'e' as const, t: 'at load: {"r":1}\twith "quotes"' },
      { r: 'req-2', s: 'o' as const, t: '' },
    ]) {
      const text = encodeOutputLine(line);
      assert.ok(text.endsWith('\n'));
      assert.ok(text.startsWith('{"r":'));
      assert.deepEqual(decodeOutputLine(text.slice(0, -1)), line);
    }
  });

  test('other lines come back raw', () => {
    for (const text of [
      '',
      'plain text',
      'FATAL ERROR: Reached heap limit Allocation failed',
      '{"s":"o","r":"x","t":"y"}', // JSON, but not in our key order
      '{"r":"x", "t": broken', // starts like ours but is not JSON
      '{"r":', // just the prefix
      '{"r":1,"s":"o","t":"x"}', // r is neither string nor null
      '{"r":"x","s":"o"}', // no text
      '{"r":"x","s":"o","t":5}', // text not a string
      '{"r":null}',
    ]) {
      assert.deepEqual(decodeOutputLine(text), { raw: text }, text);
    }
  });
});

describe('heapLimitMiB', () => {
  test('guest memory less 112 MiB, never below 32', () => {
    assert.equal(heapLimitMiB(256), 144);
    assert.equal(heapLimitMiB(1024), 912);
    assert.equal(heapLimitMiB(145), 33);
    assert.equal(heapLimitMiB(144), 32);
    assert.equal(heapLimitMiB(128), 32);
    assert.equal(heapLimitMiB(0), 32);
  });
});
