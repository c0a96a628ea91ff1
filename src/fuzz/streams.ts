// Byte-stream cases shared by both decoder targets: the stream, where it is cut into pushes, and
// how long its leading run of well-formed frames is (those must decode to exactly what was
// encoded). Shrinking removes byte ranges and cuts; saving writes hex.

import { isPlainObject } from './json.js';
import type { Rng } from './rng.js';

export interface StreamCase {
  stream: Buffer;
  /** Offsets (ascending, inside the stream) where one push ends and the next begins. */
  cuts: number[];
  /** Bytes at the start of the stream that are well-formed frames, encoded by the encoder. */
  valid: number;
}

export function chunksOf(c: StreamCase): Buffer[] {
  const out: Buffer[] = [];
  let prev = 0;
  for (const cut of c.cuts) {
    out.push(c.stream.subarray(prev, cut));
    prev = cut;
  }
  out.push(c.stream.subarray(prev));
  return out;
}

/**
 * Where to cut a stream: a few random places, every byte (short streams), or around the
 * boundaries of its segments, where a decoder is most likely to lose its place.
 */
/**
 * A stream of 0-2 valid frames (the prefix that must decode), then 1-3 hostile segments, then
 * with `tailChance` one more valid frame; cut into chunks at random (chooseCuts).
 */
export function generateStream(
  r: Rng,
  validFrame: (r: Rng) => Buffer,
  segment: (r: Rng) => Buffer,
  tailChance: number,
): StreamCase {
  const parts: Buffer[] = [];
  const boundaries: number[] = [];
  let len = 0;
  const add = (b: Buffer) => {
    parts.push(b);
    len += b.length;
    boundaries.push(len);
  };
  for (let k = r.chance(0.5) ? r.int(3) : 0; k > 0; k--) add(validFrame(r));
  const valid = len;
  for (let k = 1 + r.int(3); k > 0; k--) add(segment(r));
  if (tailChance > 0 && r.chance(tailChance)) add(validFrame(r));
  const stream = Buffer.concat(parts, len);
  return { stream, cuts: chooseCuts(r, stream.length, boundaries), valid };
}

export function chooseCuts(r: Rng, length: number, boundaries: readonly number[]): number[] {
  const set = new Set<number>();
  const style = r.int(20);
  if (style < 2 || length < 2) return [];
  if (style < 3 && length <= 128) {
    for (let i = 1; i < length; i++) set.add(i);
  } else if (style < 10) {
    for (const b of boundaries)
      for (const d of [-10, -6, -2, -1, 0, 1, 2, 6, 10]) if (r.chance(0.12)) set.add(b + d);
  } else {
    for (let k = 1 + r.int(4); k > 0; k--) set.add(1 + r.int(length - 1));
  }
  return [...set].filter((c) => c > 0 && c < length).sort((a, b) => a - b);
}

/** Smaller variants: drop halves, quarters, ... single bytes; drop cuts; then zero bytes. */
export function* shrinkStream(c: StreamCase): Generator<StreamCase> {
  const n = c.stream.length;
  for (let size = n >> 1; size >= 1; size >>= 1) {
    for (let at = 0; at + size <= n; at += size) {
      const stream = Buffer.concat([c.stream.subarray(0, at), c.stream.subarray(at + size)]);
      const cuts = c.cuts.flatMap((x) => (x <= at ? [x] : x >= at + size ? [x - size] : []));
      yield {
        stream,
        cuts: cuts.filter((x, i) => x > 0 && x < stream.length && cuts[i - 1] !== x),
        valid: at >= c.valid ? c.valid : 0,
      };
    }
  }
  if (c.cuts.length > 0) {
    yield { ...c, cuts: [] };
    for (let i = 0; i < c.cuts.length; i++) yield { ...c, cuts: c.cuts.filter((_, j) => j !== i) };
  }
  if (c.valid > 0) yield { ...c, valid: 0 };
}

export function saveStream(c: StreamCase): unknown {
  return { hex: c.stream.toString('hex'), cuts: c.cuts, valid: c.valid };
}

export function loadStream(v: unknown): StreamCase {
  if (!isPlainObject(v) || typeof v.hex !== 'string' || !Array.isArray(v.cuts))
    throw new Error('corpus entry is not {hex, cuts, valid}');
  const stream = Buffer.from(v.hex, 'hex');
  return {
    stream,
    cuts: v.cuts.filter((x): x is number => Number.isInteger(x) && x > 0 && x < stream.length),
    valid: typeof v.valid === 'number' ? v.valid : 0,
  };
}
