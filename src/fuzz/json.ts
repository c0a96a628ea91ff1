// Comparing parsed JSON values without recursion: fuzzed headers and bodies nest tens of
// thousands of levels deep, where assert.deepStrictEqual and JSON.stringify overflow the stack.

type Obj = Record<string, unknown>;

export const isPlainObject = (v: unknown): v is Obj =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Structural equality of two values made of JSON types (and Buffers, compared by bytes). Own
 * enumerable keys only; key order does not matter; -0 equals 0 as in JSON. With
 * `nonFiniteIsNull`, an infinite number in `a` matches null in `b`.
 */
export function jsonEqual(
  a: unknown,
  b: unknown,
  opts: { nonFiniteIsNull?: boolean } = {},
): boolean {
  const stack: Array<[unknown, unknown]> = [[a, b]];
  while (stack.length > 0) {
    const [x, y] = stack.pop()!;
    if (x === y) continue;
    // What JSON.stringify does to Infinity (JSON.parse reads 1e999 as Infinity).
    if (opts.nonFiniteIsNull && y === null && typeof x === 'number' && !Number.isFinite(x))
      continue;
    if (typeof x !== 'object' || typeof y !== 'object' || x === null || y === null) {
      if (typeof x === 'number' && typeof y === 'number' && Number.isNaN(x) && Number.isNaN(y))
        continue;
      return false;
    }
    if (Buffer.isBuffer(x) || Buffer.isBuffer(y)) {
      if (!(Buffer.isBuffer(x) && Buffer.isBuffer(y) && x.equals(y))) return false;
      continue;
    }
    if (Array.isArray(x) !== Array.isArray(y)) return false;
    if (Array.isArray(x) && Array.isArray(y)) {
      if (x.length !== y.length) return false;
      for (let i = 0; i < x.length; i++) stack.push([x[i], y[i]]);
      continue;
    }
    const xo = x as Obj;
    const yo = y as Obj;
    const kx = Object.keys(xo);
    if (kx.length !== Object.keys(yo).length) return false;
    for (const k of kx) {
      if (!Object.hasOwn(yo, k)) return false;
      stack.push([xo[k], yo[k]]);
    }
  }
  return true;
}

/** Nesting depth of a JSON value (a scalar is 0), without recursion. */
export function jsonDepth(v: unknown): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[v, 0]];
  while (stack.length > 0) {
    const [x, d] = stack.pop()!;
    if (d > max) max = d;
    if (typeof x !== 'object' || x === null) continue;
    for (const c of Array.isArray(x) ? x : Object.values(x)) stack.push([c, d + 1]);
  }
  return max;
}

/** A short printable preview of bytes for failure messages. */
export function preview(b: Buffer, max = 120): string {
  const hex = b.subarray(0, max).toString('hex');
  return b.length > max ? `${hex}... (${b.length} bytes)` : hex;
}
