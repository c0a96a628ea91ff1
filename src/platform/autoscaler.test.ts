import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  INITIAL_STATE,
  SCALE_DEFAULTS,
  type Sample,
  type ScaleConfig,
  decide,
  replay,
} from './autoscaler.js';

const cfg = (over: Partial<ScaleConfig> = {}): ScaleConfig => ({
  ...SCALE_DEFAULTS,
  targetConcurrency: 1,
  minInstances: 0,
  maxInstances: 100,
  ...over,
});

/** A trace of one sample per second: [seconds, concurrency] segments. */
function trace(...segments: Array<[seconds: number, concurrency: number]>): Sample[] {
  const out: Sample[] = [];
  let t = 0;
  for (const [secs, c] of segments) {
    for (let i = 0; i < secs; i++) {
      t += 1000;
      out.push({ at: t, concurrency: c });
    }
  }
  return out;
}

describe('autoscaler (KPA-like decision over traces)', () => {
  test('steady load: desired = ceil(average concurrency / target)', () => {
    const r = replay(trace([120, 10]), cfg({ targetConcurrency: 3 }), { ready: 4 });
    assert.equal(r.at(-1)!.desired, 4); // ceil(10 / 3)
    assert.ok(r.every((d) => !d.panic || d.at < 3000));
  });

  test('a burst from zero panics and scales up at once; no scale-down while panicking', () => {
    const r = replay(trace([30, 0], [10, 40], [20, 5]), cfg(), { ready: 0 });
    const first = r.find((d) => d.at === 31_000)!;
    assert.equal(first.panic, true, 'the first busy second already panics');
    assert.ok(first.desired >= 7, `scales on the 6 s window at once (got ${first.desired})`);
    // Within one panic window the whole demand is met (the stable window would take 60 s).
    const full = r.find((d) => d.at === 36_000)!;
    assert.equal(full.desired, 40);
    // After the burst the panic window average falls, but panic keeps the capacity.
    const after = r.find((d) => d.at === 50_000)!;
    assert.equal(after.panic, true);
    assert.ok(after.desired >= 40, `no scale-down in panic (got ${after.desired})`);
  });

  test('panic ends a stable window after the last panic condition; then scale-down is rate limited', () => {
    const r = replay(trace([10, 40], [120, 2]), cfg(), { ready: 0 });
    const lastPanic = r.filter((d) => d.panic).at(-1)!;
    assert.ok(lastPanic.at <= 10_000 + SCALE_DEFAULTS.stableWindowMs + 1000);
    // Out of panic: each decision at most halves what is ready (maxScaleDownRate 2).
    const stable = r.filter((d) => !d.panic && d.at > lastPanic.at);
    for (const d of stable) assert.ok(d.desired >= Math.floor(d.ready / 2), JSON.stringify(d));
    assert.equal(r.at(-1)!.desired, 2, 'settles on the new steady demand');
  });

  test('idle: scale to zero only after the grace period with no request at all', () => {
    const r = replay(trace([20, 3], [100, 0]), cfg(), { ready: 3 });
    const firstZero = r.find((d) => d.desired === 0)!;
    assert.ok(firstZero, 'reaches zero');
    assert.ok(
      firstZero.at - 20_000 >= SCALE_DEFAULTS.scaleToZeroGraceMs,
      `zero at ${firstZero.at}`,
    );
    // Between the last request and the grace period it keeps one instance.
    assert.ok(
      r
        .filter((d) => d.at > 20_000 && d.at < 20_000 + SCALE_DEFAULTS.scaleToZeroGraceMs)
        .every((d) => d.desired >= 1),
    );
  });

  test('after a burst, a short keep-alive scales to zero although panic mode would last', () => {
    const r = replay(trace([5, 0], [3, 40], [10, 0]), cfg({ scaleToZeroGraceMs: 2000 }), {
      ready: 0,
    });
    assert.ok(
      r.some((d) => d.panic),
      'the burst panics',
    );
    const zero = r.find((d) => d.desired === 0 && d.at > 8_000)!;
    assert.ok(zero, 'reaches zero');
    assert.equal(zero.at, 10_000, 'two seconds after the last busy sample');
    assert.equal(zero.panic, false, 'and leaves panic mode');
  });

  test('a short keep-alive scales to zero although the stable window still averages load', () => {
    const r = replay(trace([20, 4], [10, 0]), cfg({ scaleToZeroGraceMs: 3000 }), { ready: 4 });
    const zero = r.find((d) => d.desired === 0)!;
    assert.equal(zero.at, 23_000);
    assert.ok(zero.stableAverage > 0);
  });

  test('min and max instances bound every decision', () => {
    const lo = replay(trace([100, 0]), cfg({ minInstances: 2 }), { ready: 2 });
    assert.ok(lo.every((d) => d.desired === 2));
    const hi = replay(trace([30, 500]), cfg({ maxInstances: 20 }), { ready: 1 });
    assert.ok(hi.every((d) => d.desired <= 20));
    assert.equal(hi.at(-1)!.desired, 20);
  });

  test('scale-up rate: one decision grows at most maxScaleUpRate times what is ready', () => {
    const d = decide({
      now: 10_000,
      samples: trace([10, 100]),
      ready: 2,
      state: INITIAL_STATE,
      config: cfg({ maxScaleUpRate: 3 }),
    });
    assert.equal(d.desired, 6);
  });

  test('slow starts: while instances are still starting the decision does not run away', () => {
    // Instances become ready one per decision; demand stays 10.
    const r = replay(trace([30, 10]), cfg(), { ready: 0 }, (desired, ready) =>
      Math.min(desired, ready + 1),
    );
    assert.ok(
      r.every((d) => d.desired <= 10),
      'never more than the demand',
    );
    assert.equal(r.at(-1)!.ready, 10);
  });

  test('a recorded diurnal-like trace: instances follow the load without oscillating', () => {
    // ramp up 0 -> 20 over 2 minutes, hold, ramp down, idle
    const rec: Array<[number, number]> = [];
    for (let c = 0; c <= 20; c += 2) rec.push([12, c]);
    rec.push([120, 20]);
    for (let c = 20; c >= 0; c -= 4) rec.push([12, c]);
    rec.push([120, 0]);
    const r = replay(trace(...rec), cfg({ targetConcurrency: 2 }), { ready: 0 });
    let flips = 0;
    for (let i = 2; i < r.length; i++) {
      const a = r[i - 2]!.desired;
      const b = r[i - 1]!.desired;
      const c = r[i]!.desired;
      if ((b > a && c < b) || (b < a && c > b)) flips++;
    }
    assert.ok(flips <= 2, `desired changed direction ${flips} times`);
    assert.equal(Math.max(...r.map((d) => d.desired)), 10);
    assert.equal(r.at(-1)!.desired, 0);
  });
});
