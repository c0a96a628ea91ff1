// Fuzz target: the agent channel's FrameDecoder (protocol/frame.ts) and the validators that read
// what it decodes (parseRequest in the guest, parseGuestMessage on the host). A case is a byte
// stream of well-formed frames, damaged frames (bit flips, truncation, splices, lying length
// fields, mutated or non-object JSON headers, deep nesting, oversized claims) and garbage, cut
// into pushes at random places. Properties, on every case:
//   - push() never throws, and reports only E_AGENT_PROTOCOL / E_FRAME_TOO_LARGE, registered
//     codes, with short messages;
//   - it never holds more than MAX_FRAME_BYTES + prefix, and only ever waits on a frame prefix
//     whose length is within the limit;
//   - cutting the stream differently (and scribbling over pushed chunks afterwards) changes
//     nothing: same events, same bytes left over;
//   - the leading well-formed frames decode to exactly what was encoded (re-encoding gives the
//     same bytes), and decoded frames re-encode and decode to themselves (every other case);
//   - it decodes exactly the frames the format says the stream holds (frameUnits: after garbage
//     or a bad length, reading resumes at the next magic), no more, no fewer;
//   - once the decoder has resynchronised, a well-formed frame decodes exactly;
//   - parseRequest and parseGuestMessage never throw, agree with the written-out rules in
//     protocol-spec.ts, and bound their error messages.

import { isErrorCode } from '../errors.js';
import {
  type DecodeEvent,
  FRAME_MAGIC,
  FRAME_PREFIX_BYTES,
  FrameDecoder,
  MAX_FRAME_BYTES,
  MAX_HEADER_BYTES,
  encodeFrame,
} from '../protocol/frame.js';
import { parseGuestMessage, parseRequest } from '../protocol/messages.js';
import { type FuzzTarget, fail } from './engine.js';
import { agentHeader, deepNesting, mutateJson } from './headers.js';
import { jsonDepth, jsonEqual, preview } from './json.js';
import { guestProblem, requestProblem } from './protocol-spec.js';
import { Rng } from './rng.js';
import {
  type StreamCase,
  chunksOf,
  generateStream,
  loadStream,
  saveStream,
  shrinkStream,
} from './streams.js';

const LIMIT = MAX_FRAME_BYTES + FRAME_PREFIX_BYTES;
/** Longest error message a decoder or validator may produce (they must not echo input). */
const MAX_MESSAGE = 200;
/** Deeper headers are not re-encoded: JSON.stringify recurses and would overflow the stack. */
const REENCODE_DEPTH = 1000;

/** A frame with its length fields written as given, true or not. */
function rawFrame(total: number, headerLen: number, header: Buffer, body: Buffer): Buffer {
  const b = Buffer.allocUnsafe(10 + header.length + body.length);
  b.writeUInt16BE(FRAME_MAGIC, 0);
  b.writeUInt32BE(total >>> 0, 2);
  b.writeUInt32BE(headerLen >>> 0, 6);
  header.copy(b, 10);
  body.copy(b, 10 + header.length);
  return b;
}

const honest = (header: Buffer, body: Buffer) =>
  rawFrame(4 + header.length + body.length, header.length, header, body);

function body(r: Rng): Buffer {
  const k = r.int(8);
  if (k < 3) return Buffer.alloc(0);
  if (k < 4) return Buffer.from(r.pick(['IS', 'ISIS', 'I', 'S', '\u0000IS\u0000\u0000\u0010']));
  return r.bytes(r.size(96));
}

function freshFrame(r: Rng): Buffer {
  try {
    return encodeFrame(agentHeader(r), body(r));
  } catch {
    return encodeFrame({ id: 1, op: 'info' }); // a header over MAX_HEADER_BYTES: rare
  }
}

/**
 * Building a header costs more than decoding it, so most well-formed frames come from a pool
 * made once per run (from the run's seed) and a tenth are made fresh; the damage done to them
 * is always fresh. Pooled buffers are never written to.
 */
const POOL_SIZE = 4096;
let pool: Buffer[] = [];

function preparePool(seed: number): void {
  const r = new Rng(seed ^ 0x5eed);
  pool = Array.from({ length: POOL_SIZE }, () => freshFrame(r));
}

function validFrame(r: Rng): Buffer {
  if (pool.length === 0 || r.chance(0.1)) return freshFrame(r);
  return r.pick(pool);
}

/** The JSON text of a well-formed frame's header. */
const headerText = (f: Buffer): Buffer => f.subarray(10, 10 + f.readUInt32BE(6));

/**
 * Length values a liar would pick: off by one, tiny, at and past the limit, huge. A claim of
 * exactly the limit is rare: the decoder rightly waits for a megabyte, and resynchronising
 * after it costs a megabyte of filler.
 */
function lieAbout(r: Rng, truth: number, limit: number): number {
  if (r.chance(0.003)) return limit;
  return r.pick([
    0,
    1,
    2,
    3,
    4,
    5,
    truth - 1,
    truth + 1,
    truth + r.int(64),
    Math.max(0, truth - r.int(64)),
    limit + 1,
    0x7fffffff,
    0x80000000,
    0xffffffff,
    r.int(2 ** 32),
  ]);
}

function garbage(r: Rng): Buffer {
  const b = r.bytes(r.size(64));
  // Sprinkle magic bytes so garbage sometimes looks like the start of a frame.
  if (b.length > 0 && r.chance(0.5))
    for (let k = r.int(4); k >= 0; k--) b[r.int(b.length)] = r.chance(0.5) ? 0x49 : 0x53;
  return b;
}

/** One piece of a hostile stream. */
function segment(r: Rng): Buffer {
  return r.weighted<() => Buffer>([
    [3, () => validFrame(r)],
    [
      3,
      () => {
        const f = Buffer.from(validFrame(r));
        for (let k = 1 + r.int(3); k > 0; k--) {
          const at = r.chance(0.5) ? r.int(Math.min(f.length, 10)) : r.int(f.length);
          f[at] = r.chance(0.7) ? f[at]! ^ (1 << r.int(8)) : r.pick([0, 0x49, 0x53, 0xff]);
        }
        return f;
      },
    ],
    [2, () => validFrame(r).subarray(0, r.int(40))],
    [
      2,
      () => {
        const f = Buffer.from(validFrame(r));
        f.writeUInt32BE(lieAbout(r, f.readUInt32BE(2), MAX_FRAME_BYTES) >>> 0, 2);
        return f;
      },
    ],
    [
      2,
      () => {
        const f = Buffer.from(validFrame(r));
        f.writeUInt32BE(lieAbout(r, f.readUInt32BE(6), MAX_HEADER_BYTES) >>> 0, 6);
        return f;
      },
    ],
    [
      4,
      () => {
        const json = headerText(validFrame(r));
        return honest(mutateJson(r, json), body(r));
      },
    ],
    [
      1,
      () =>
        honest(
          Buffer.from(r.pick(['null', '0', '"IS"', '[]', 'true', '{}', '-0', '1e999'])),
          body(r),
        ),
    ],
    [
      0.03,
      () =>
        // Deep nesting up to what fits in a header, and headers just over MAX_HEADER_BYTES.
        r.chance(0.7)
          ? honest(
              Buffer.from(deepNesting(r, 1 + r.int(MAX_HEADER_BYTES / 2 - 1))),
              Buffer.alloc(0),
            )
          : honest(
              Buffer.from(JSON.stringify({ s: 'I'.repeat(MAX_HEADER_BYTES - 8 + r.int(16)) })),
              Buffer.alloc(0),
            ),
    ],
    [2, () => garbage(r)],
    [
      1,
      () =>
        Buffer.from(
          r.pick(['I', 'S', 'IS', 'ISIS', 'IIS', 'IS\u0000', 'IS\u0000\u0000\u0000', 'SI']),
          'latin1',
        ),
    ],
    [
      1,
      () => {
        // A prefix claiming more than the limit: an error at once, never a wait.
        const claim = r.pick([
          MAX_FRAME_BYTES + 1,
          0xffffffff,
          MAX_FRAME_BYTES + 1 + r.int(2 ** 31),
        ]);
        return rawFrame(claim, 0, Buffer.alloc(0), Buffer.alloc(0)).subarray(0, 6 + r.int(5));
      },
    ],
    // A claim just within the limit: the decoder must wait for (and buffer) up to 1 MiB. Rare,
    // because resynchronising after it costs a megabyte of filler.
    [
      0.004,
      () =>
        rawFrame(MAX_FRAME_BYTES - r.int(16), 0, Buffer.alloc(0), Buffer.alloc(0)).subarray(0, 6),
    ],
    [
      1,
      () => {
        const a = validFrame(r);
        const b = validFrame(r);
        return Buffer.concat([a.subarray(0, r.int(a.length + 1)), b.subarray(r.int(b.length + 1))]);
      },
    ],
    [
      1,
      () => {
        const f = validFrame(r);
        const at = r.int(f.length + 1);
        return r.chance(0.5)
          ? Buffer.concat([f.subarray(0, at), r.bytes(1 + r.int(8)), f.subarray(at)])
          : Buffer.concat([f.subarray(0, at), f.subarray(at + 1 + r.int(8))]);
      },
    ],
  ])();
}

function generate(r: Rng): StreamCase {
  return generateStream(r, validFrame, segment, 0.3);
}

// ---------------------------------------------------------------------------------------------
// Properties.

function push(d: FrameDecoder, chunk: Buffer, what: string): DecodeEvent[] {
  let evs: DecodeEvent[];
  try {
    evs = d.push(chunk);
  } catch (err) {
    fail(`FrameDecoder.push threw (${what}): ${(err as Error)?.stack ?? String(err)}`);
  }
  if (d.buffered > LIMIT) fail(`decoder buffers ${d.buffered} bytes, over ${LIMIT} (${what})`);
  return evs;
}

function decodeWhole(stream: Buffer): { d: FrameDecoder; evs: DecodeEvent[] } {
  const d = new FrameDecoder();
  return { d, evs: push(d, stream, 'one push') };
}

/** Decode chunk by chunk from copies, overwriting each copy once pushed. */
function decodeChunked(chunks: Buffer[]): { d: FrameDecoder; evs: DecodeEvent[] } {
  const d = new FrameDecoder();
  const evs: DecodeEvent[] = [];
  for (const c of chunks) {
    const copy = Buffer.from(c);
    for (const e of push(d, copy, 'chunked')) evs.push(e);
    copy.fill(0x49); // the decoder must not keep references to the caller's memory
  }
  return { d, evs };
}

function sameEvent(a: DecodeEvent, b: DecodeEvent): boolean {
  if (a.kind === 'error' && b.kind === 'error') return a.code === b.code && a.message === b.message;
  if (a.kind === 'frame' && b.kind === 'frame')
    return jsonEqual(a.frame.header, b.frame.header) && a.frame.body.equals(b.frame.body);
  return false;
}

function describe(e: DecodeEvent | undefined): string {
  if (!e) return 'nothing';
  if (e.kind === 'error') return `${e.code} "${e.message}"`;
  return `frame (${e.frame.body.length}-byte body)`;
}

function checkValidator(
  name: string,
  run: () => { ok: boolean; error?: string; id?: number | null },
  problem: string | null,
  header: unknown,
): void {
  let res: { ok: boolean; error?: string; id?: number | null };
  try {
    res = run();
  } catch (err) {
    fail(`${name} threw: ${(err as Error)?.stack ?? String(err)}`);
  }
  const shown = () => (jsonDepth(header) < 50 ? JSON.stringify(header)?.slice(0, 300) : '(deep)');
  if (res.ok && problem !== null) fail(`${name} accepted ${shown()} (spec: ${problem})`);
  if (!res.ok && problem === null) fail(`${name} refused ${shown()}: ${res.error}`);
  if (!res.ok && (typeof res.error !== 'string' || res.error.length > MAX_MESSAGE))
    fail(`${name} error message is not a short string: ${String(res.error).slice(0, 300)}`);
  if (res.id !== undefined && res.id !== null && !Number.isSafeInteger(res.id))
    fail(`${name} reported id ${res.id}`);
}

function checkFrame(header: unknown, body: Buffer): void {
  if (4 + body.length > MAX_FRAME_BYTES) fail(`decoded a ${body.length}-byte body, over the limit`);
  checkValidator(
    'parseRequest',
    () => {
      const r = parseRequest(header);
      return r.ok ? { ok: true } : { ok: false, error: r.error, id: r.id };
    },
    requestProblem(header),
    header,
  );
  checkValidator(
    'parseGuestMessage',
    () => {
      const r = parseGuestMessage(header);
      return r.ok ? { ok: true } : { ok: false, error: r.error };
    },
    guestProblem(header),
    header,
  );
}

/**
 * Every decoded frame re-encodes and decodes to itself, up to what encoding normalises
 * (1e999 was read as Infinity and is written as null). All frames of a case go through one
 * decoder together.
 */
function checkReencode(frames: Array<{ header: unknown; body: Buffer }>): void {
  const parts: Buffer[] = [];
  const sent: Array<{ header: unknown; body: Buffer }> = [];
  for (const f of frames) {
    if (jsonDepth(f.header) > REENCODE_DEPTH) continue;
    try {
      parts.push(encodeFrame(f.header, f.body));
      sent.push(f);
    } catch (err) {
      // Legal only when the canonical JSON is longer than what came in and now over the limit
      // (invalid UTF-8 decodes to U+FFFD, three bytes for one).
      const json = Buffer.byteLength(JSON.stringify(f.header));
      if (
        !(err instanceof RangeError) ||
        (json <= MAX_HEADER_BYTES && 4 + json + f.body.length <= MAX_FRAME_BYTES)
      )
        fail(`re-encoding a decoded frame threw: ${(err as Error)?.message}`);
    }
  }
  if (parts.length === 0) return;
  const back = decodeWhole(Buffer.concat(parts));
  const same = (e: DecodeEvent | undefined, f: { header: unknown; body: Buffer }) =>
    e?.kind === 'frame' &&
    e.frame.body.equals(f.body) &&
    jsonEqual(f.header, e.frame.header, { nonFiniteIsNull: true });
  if (
    back.evs.length !== sent.length ||
    back.d.buffered !== 0 ||
    !sent.every((f, i) => same(back.evs[i], f))
  )
    fail(`decoded frames do not survive re-encoding: got ${back.evs.map(describe).join(', ')}`);
}

function checkError(e: DecodeEvent & { kind: 'error' }): void {
  if (e.code !== 'E_AGENT_PROTOCOL' && e.code !== 'E_FRAME_TOO_LARGE')
    fail(`unexpected error code ${String(e.code)}`);
  if (!isErrorCode(e.code)) fail(`${e.code} is not a registered error code`);
  if (typeof e.message !== 'string' || e.message.length === 0 || e.message.length > MAX_MESSAGE)
    fail(`error message is not a short string: ${String(e.message).slice(0, 300)}`);
}

function checkEvents(evs: DecodeEvent[], stream: Buffer): void {
  if (evs.length > stream.length) fail(`${evs.length} events from ${stream.length} bytes`);
  for (const e of evs) {
    if (e.kind === 'error') checkError(e);
    else checkFrame(e.frame.header, e.frame.body);
  }
  // The extra decode costs a tenth of the run: every other case (by length) pays it.
  if (stream.length % 2 === 1)
    checkReencode(evs.flatMap((e) => (e.kind === 'frame' ? [e.frame] : [])));
}

/** The leading well-formed frames come out exactly as they went in, byte for byte. */
function checkRoundTrip(c: StreamCase, evs: DecodeEvent[]): void {
  const parts: Buffer[] = [];
  let n = 0;
  for (let i = 0; n < c.valid; i++) {
    const e = evs[i];
    if (e?.kind !== 'frame')
      fail(
        `well-formed frame ${i} decoded as ${describe(e)} (the first ${c.valid} bytes are frames)`,
      );
    const b = encodeFrame(e.frame.header, e.frame.body);
    parts.push(b);
    n += b.length;
  }
  if (!Buffer.concat(parts).equals(c.stream.subarray(0, c.valid)))
    fail('decoded frames re-encode to other bytes than were sent');
}

/** Frames the decoder must decode exactly once it has resynchronised. */
const SENTINELS = [
  encodeFrame({ id: 7, op: 'info' }),
  encodeFrame({ ev: 'stdout', execId: 3 }, Buffer.from('IS\u0000\u0000\u0000\u0004IS')),
  encodeFrame({ id: 0, ok: true, result: { s: 'ISIS\ud800é' } }, Buffer.from('I')),
  encodeFrame({}, Buffer.alloc(300, 0x49)),
];

/**
 * Feed filler (zero bytes: no magic) until the decoder holds nothing, then a sentinel frame.
 * What the decoder holds is always a suffix of what it was given: a pending frame whose
 * prefix must claim a length within the limit, or a partial prefix.
 */
/** Filler for resynchronising: zeros hold no magic. Shared and never written to. */
const ZEROS = Buffer.alloc(LIMIT);

function checkResync(d: FrameDecoder, stream: Buffer): void {
  let tail = stream.subarray(stream.length - d.buffered);
  for (let round = 0; d.buffered > 0; round++) {
    if (round > 3) fail(`decoder still holds ${d.buffered} bytes after filler`);
    let need: number;
    if (tail.length >= FRAME_PREFIX_BYTES) {
      if (tail.readUInt16BE(0) !== FRAME_MAGIC)
        fail(
          `decoder waits on ${tail.length} bytes that do not start a frame: ${preview(tail, 16)}`,
        );
      const claim = tail.readUInt32BE(2);
      if (claim < 4 || claim > MAX_FRAME_BYTES)
        fail(`decoder waits on a frame claiming ${claim} bytes`);
      need = FRAME_PREFIX_BYTES + claim - tail.length;
      if (need <= 0) fail(`decoder holds a complete frame of ${claim} bytes`);
    } else {
      if (tail.length >= 2 && tail.readUInt16BE(0) !== FRAME_MAGIC)
        fail(`decoder waits on ${preview(tail)} which is not a frame prefix`);
      need = FRAME_PREFIX_BYTES - tail.length;
    }
    const filler = ZEROS.subarray(0, need);
    // The frame the filler completes is zeros: only its error, if any, is worth checking.
    for (const e of push(d, filler, 'filler')) if (e.kind === 'error') checkError(e);
    const held = d.buffered;
    tail =
      held <= need
        ? ZEROS.subarray(0, held)
        : Buffer.concat([tail.subarray(tail.length - (held - need)), filler]);
  }
  const sentinel = SENTINELS[stream.length % SENTINELS.length]!;
  const evs = push(d, sentinel, 'sentinel');
  const e = evs[0];
  if (
    evs.length !== 1 ||
    e?.kind !== 'frame' ||
    !encodeFrame(e.frame.header, e.frame.body).equals(sentinel)
  )
    fail(`after resynchronising, a well-formed frame decoded as: ${evs.map(describe).join(', ')}`);
  if (d.buffered !== 0) fail(`${d.buffered} bytes left after a whole frame`);
}

/** Index of the next magic ("IS") at or after `from`, or -1. */
function nextMagic(s: Buffer, from: number): number {
  for (let i = s.indexOf(0x49, from); i !== -1 && i + 1 < s.length; i = s.indexOf(0x49, i + 1))
    if (s[i + 1] === 0x53) return i;
  return -1;
}

/**
 * Where the stream holds frames, by the format alone (frame.ts): from each magic with a length
 * in [4, MAX_FRAME_BYTES] whose payload is all there, a frame runs to the end of its payload.
 * After bytes that are no magic, or a magic with an impossible length, reading resumes at the
 * next magic: after a bad magic at p that may be p + 1, after a bad length at p it may be p + 2,
 * straight after the "IS" whose length was wrong. The decoder turns each unit into a frame, or
 * an error when its header length or JSON is bad.
 */
function frameUnits(s: Buffer): Array<{ at: number; end: number }> {
  const units: Array<{ at: number; end: number }> = [];
  let p = 0;
  while (p !== -1 && p + 2 <= s.length) {
    if (s[p] !== 0x49 || s[p + 1] !== 0x53) {
      p = nextMagic(s, p + 1);
      continue;
    }
    if (p + FRAME_PREFIX_BYTES > s.length) break;
    const claim = s.readUInt32BE(p + 2);
    if (claim < 4 || claim > MAX_FRAME_BYTES) {
      p = nextMagic(s, p + 2);
      continue;
    }
    const end = p + FRAME_PREFIX_BYTES + claim;
    if (end > s.length) break;
    units.push({ at: p, end });
    p = end;
  }
  return units;
}

/**
 * The decoder's frames are exactly the units whose header length and JSON are good. The quick
 * pass pairs frames with units by body and parses only the headers of units left without a
 * frame (they must be bad JSON); when it does not add up, the full pass parses every header.
 */
function checkUnits(s: Buffer, evs: DecodeEvent[]): void {
  const frames = evs.flatMap((e) => (e.kind === 'frame' ? [e.frame] : []));
  const units = frameUnits(s).flatMap((u) => {
    const headerLen = s.readUInt32BE(u.at + FRAME_PREFIX_BYTES);
    const headerAt = u.at + FRAME_PREFIX_BYTES + 4;
    if (headerLen > u.end - headerAt || headerLen > MAX_HEADER_BYTES) return [];
    const header = s.subarray(headerAt, headerAt + headerLen);
    return [{ ...u, header, body: s.subarray(headerAt + headerLen, u.end) }];
  });
  const parse = (b: Buffer): { v: unknown } | null => {
    try {
      return { v: JSON.parse(b.toString('utf8')) };
    } catch {
      return null;
    }
  };
  let next = 0;
  let quick = true;
  for (const u of units) {
    if (frames[next]?.body.equals(u.body)) next++;
    else if (parse(u.header) !== null) quick = false;
  }
  if (quick && next === frames.length) return;
  next = 0;
  for (const u of units) {
    const header = parse(u.header);
    if (header === null) continue;
    const f = frames[next++];
    if (!f || !f.body.equals(u.body) || !jsonEqual(f.header, header.v))
      fail(
        `the well-formed frame at byte ${u.at} (to ${u.end}) decoded as ${f ? 'another frame' : 'nothing'}`,
      );
  }
  if (next !== frames.length)
    fail(`decoded ${frames.length - next} frame(s) where the format has none`);
}

function check(c: StreamCase): void {
  const whole = decodeWhole(c.stream);
  const cut = decodeChunked(chunksOf(c));
  checkEvents(whole.evs, c.stream);
  const n = Math.max(whole.evs.length, cut.evs.length);
  for (let i = 0; i < n; i++) {
    const a = whole.evs[i];
    const b = cut.evs[i];
    if (!a || !b || !sameEvent(a, b))
      fail(
        `event ${i} differs with chunking: ${describe(a)} in one push, ${describe(b)} cut at ${c.cuts.join(',')}`,
      );
  }
  // The one difference chunking may make: a last byte that arrived alone is held until the next
  // push shows whether it starts a magic, where in one push it was skipped with the garbage
  // before it. The resync check below shows both decoders end up in step.
  const held = Math.abs(whole.d.buffered - cut.d.buffered);
  const lone =
    held === 1 && Math.min(whole.d.buffered, cut.d.buffered) === 0 && c.stream.at(-1) !== 0x49;
  if (held !== 0 && !lone)
    fail(`${whole.d.buffered} bytes left in one push, ${cut.d.buffered} when cut`);
  checkUnits(c.stream, whole.evs);
  checkRoundTrip(c, whole.evs);
  // Both decoders are in step (checked above); resynchronise one of them, in turn.
  checkResync(c.stream.length % 2 === 0 ? whole.d : cut.d, c.stream);
}

export const agentFrames: FuzzTarget<StreamCase> = {
  name: 'agent-frames',
  corpus: 'decoder',
  prepare: preparePool,
  generate,
  check,
  shrink: shrinkStream,
  save: saveStream,
  load: loadStream,
};
