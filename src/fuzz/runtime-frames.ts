// Fuzz target: the function runtime's RuntimeFrameDecoder (protocol/function.ts), which the host
// runs on bytes from inside the guest (a function's code can write to its runtime's port) and
// the runtime on bytes from the host. That stream has no magic to resynchronise on, so a bad
// frame ends the connection: the decoder throws. Properties, on every case:
//   - it throws only RuntimeFrameError with E_FRAME_TOO_LARGE or E_AGENT_PROTOCOL, never
//     anything else (a TypeError in a socket listener takes the host down);
//   - every header it returns is a JSON object (both peers read fields of it at once);
//   - cutting the stream differently changes nothing: the same frames, the same error;
//   - the leading well-formed frames decode to exactly what was encoded.

import { isErrorCode } from '../errors.js';
import {
  MAX_RUNTIME_FRAME,
  RuntimeFrameDecoder,
  RuntimeFrameError,
  encodeRuntimeFrame,
} from '../protocol/function.js';
import { type FuzzTarget, fail } from './engine.js';
import { deepNesting, jsonValue, mutateJson, nearlyValid, validRuntimeMessage } from './headers.js';
import { isPlainObject, jsonEqual } from './json.js';
import type { Rng } from './rng.js';
import {
  type StreamCase,
  chunksOf,
  generateStream,
  loadStream,
  saveStream,
  shrinkStream,
} from './streams.js';

type Frame = { header: Record<string, unknown>; body: Buffer };

function raw(headerLen: number, bodyLen: number, header: Buffer, body: Buffer): Buffer {
  const p = Buffer.allocUnsafe(8);
  p.writeUInt32BE(headerLen >>> 0, 0);
  p.writeUInt32BE(bodyLen >>> 0, 4);
  return Buffer.concat([p, header, body]);
}

const body = (r: Rng): Buffer =>
  r.chance(0.4)
    ? Buffer.alloc(0)
    : r.chance(0.5)
      ? Buffer.from(JSON.stringify(jsonValue(r)))
      : r.bytes(r.size(64));

function validFrame(r: Rng): Buffer {
  return encodeRuntimeFrame(validRuntimeMessage(r), body(r));
}

function lie(r: Rng, truth: number): number {
  return r.pick([
    0,
    1,
    truth - 1,
    truth + 1,
    truth + r.int(32),
    MAX_RUNTIME_FRAME,
    MAX_RUNTIME_FRAME + 1,
    0xffffffff,
    r.int(2 ** 32),
  ]);
}

function segment(r: Rng): Buffer {
  return r.weighted<() => Buffer>([
    [3, () => validFrame(r)],
    [
      3,
      () => {
        const h = Buffer.from(
          JSON.stringify(
            r.chance(0.5) ? validRuntimeMessage(r) : nearlyValid(r, validRuntimeMessage(r)),
          ),
        );
        return r.chance(0.5)
          ? raw(h.length, 0, h, Buffer.alloc(0))
          : (() => {
              const m = mutateJson(r, h);
              return raw(m.length, 0, m, Buffer.alloc(0));
            })();
      },
    ],
    [
      2,
      () => {
        const h = Buffer.from(
          r.pick(['null', '0', '"t"', '[]', 'true', '-0', '[{"t":"health","id":1}]']),
        );
        return raw(h.length, 0, h, Buffer.alloc(0));
      },
    ],
    [
      2,
      () => {
        const f = Buffer.from(validFrame(r));
        const at = r.chance(0.5) ? 0 : 4;
        f.writeUInt32BE(lie(r, f.readUInt32BE(at)) >>> 0, at);
        return f;
      },
    ],
    [
      2,
      () => {
        const f = Buffer.from(validFrame(r));
        for (let k = 1 + r.int(3); k > 0; k--) {
          const i = r.int(f.length);
          f[i] = f[i]! ^ (1 << r.int(8));
        }
        return f;
      },
    ],
    [
      1,
      // A binary header (tag 0x01 invoke, 0x02 ok reply) of any length and content.
      () => {
        const h = Buffer.concat([Buffer.from([r.pick([1, 2])]), r.bytes(r.size(40))]);
        return raw(h.length, 0, h, Buffer.alloc(0));
      },
    ],
    [1, () => validFrame(r).subarray(0, r.int(30))],
    [1, () => r.bytes(r.size(24))],
    [
      0.05,
      () => {
        const h = Buffer.from(deepNesting(r, 1 + r.size(20_000)));
        return raw(h.length, 0, h, Buffer.alloc(0));
      },
    ],
  ])();
}

function generate(r: Rng): StreamCase {
  return generateStream(r, validFrame, segment, 0);
}

/** Frames until the first throw, and what was thrown (null when nothing was). */
function decode(chunks: Buffer[]): { frames: Frame[]; thrown: unknown } {
  const d = new RuntimeFrameDecoder();
  const frames: Frame[] = [];
  for (const c of chunks) {
    try {
      for (const f of d.push(c)) frames.push(f);
    } catch (err) {
      return { frames, thrown: err ?? new Error('threw a nullish value') };
    }
  }
  return { frames, thrown: null };
}

function checkThrown(err: unknown, what: string): RuntimeFrameError | null {
  if (err === null) return null;
  if (!(err instanceof RuntimeFrameError))
    fail(
      `RuntimeFrameDecoder threw something else than RuntimeFrameError (${what}): ${(err as Error)?.stack ?? String(err)}`,
    );
  if (
    (err.code !== 'E_FRAME_TOO_LARGE' && err.code !== 'E_AGENT_PROTOCOL') ||
    !isErrorCode(err.code)
  )
    fail(`RuntimeFrameError with code ${String(err.code)}`);
  if (err.message.length === 0 || err.message.length > 200)
    fail(`error message: ${err.message.slice(0, 300)}`);
  return err;
}

function check(c: StreamCase): void {
  const whole = decode([c.stream]);
  const cut = decode(chunksOf(c));
  const e1 = checkThrown(whole.thrown, 'one push');
  const e2 = checkThrown(cut.thrown, 'chunked');
  for (const f of [...whole.frames, ...cut.frames]) {
    if (!isPlainObject(f.header))
      fail(
        `RuntimeFrameDecoder returned a header that is not an object: ${JSON.stringify(f.header)?.slice(0, 100)}`,
      );
    if (f.body.length > MAX_RUNTIME_FRAME) fail(`a body of ${f.body.length} bytes`);
  }
  if (
    (e1 === null) !== (e2 === null) ||
    (e1 && e2 && (e1.code !== e2.code || e1.message !== e2.message))
  )
    fail(
      `chunking changed the outcome: ${e1?.message ?? 'no error'} in one push, ${e2?.message ?? 'no error'} cut at ${c.cuts.join(',')}`,
    );
  // One push loses the frames before a throw; pushed in pieces they came out first.
  if (e1 === null) {
    if (whole.frames.length !== cut.frames.length)
      fail(`${whole.frames.length} frames in one push, ${cut.frames.length} cut`);
    for (let i = 0; i < whole.frames.length; i++) {
      const a = whole.frames[i]!;
      const b = cut.frames[i]!;
      if (!jsonEqual(a.header, b.header) || !a.body.equals(b.body))
        fail(`frame ${i} differs with chunking`);
    }
  }
  if (c.valid > 0) {
    const region = c.stream.subarray(0, c.valid);
    const alone = decode([region]);
    if (alone.thrown !== null) fail(`well-formed frames threw: ${(alone.thrown as Error).message}`);
    const again = Buffer.concat(alone.frames.map((f) => encodeRuntimeFrame(f.header, f.body)));
    if (!again.equals(region))
      fail('decoded runtime frames re-encode to other bytes than were sent');
    // Pushed in pieces, frames before a bad one come out; a single push that throws loses them.
    const more = e1 === null ? whole.frames : e2 === null ? cut.frames : null;
    for (let i = 0; more && i < alone.frames.length; i++) {
      const b = more[i];
      if (
        !b ||
        !jsonEqual(alone.frames[i]!.header, b.header) ||
        !alone.frames[i]!.body.equals(b.body)
      )
        fail(`runtime frame ${i} decodes differently when more bytes follow it`);
    }
  }
}

export const runtimeFrames: FuzzTarget<StreamCase> = {
  name: 'runtime-frames',
  corpus: 'decoder',
  generate,
  check,
  shrink: shrinkStream,
  save: saveStream,
  load: loadStream,
};
