// The autoscaler's decision, in the manner of Knative's KPA: how many instances a function
// version should have, from the concurrency it has seen. Pure: the pool samples in-flight
// requests once per tick and calls `decide`; tests drive it over recorded traces.
//
// - Stable mode: desired = ceil(average concurrency over the stable window / target per instance).
// - Panic mode: when the short panic window's demand reaches `panicThreshold` times the ready
//   capacity, scale on the panic window instead, and never scale down while panicking; panic
//   ends once a whole stable window has passed without the condition.
// - Rates: one decision moves at most to ceil(ready * maxScaleUpRate) and at least to
//   floor(ready / maxScaleDownRate).
// - Zero: once no request at all was seen for `scaleToZeroGraceMs` (the function's keep-alive
//   idle timeout), even if the stable window still averages above zero, and even in panic
//   mode (which it ends).
// - Bounds: minInstances..maxInstances, always.

export interface ScaleConfig {
  /** In-flight requests one instance should carry (its concurrency, or less for headroom). */
  targetConcurrency: number;
  stableWindowMs: number;
  panicWindowMs: number;
  /** Panic when panic-window demand >= this multiple of the ready capacity (2 = 200 %). */
  panicThreshold: number;
  maxScaleUpRate: number;
  maxScaleDownRate: number;
  minInstances: number;
  maxInstances: number;
  /** Idle time (no request at all) before the last instance may go. */
  scaleToZeroGraceMs: number;
}

/** Knative's defaults, scaled for micro-VMs that start in seconds under TCG. */
export const SCALE_DEFAULTS: Omit<
  ScaleConfig,
  'targetConcurrency' | 'minInstances' | 'maxInstances'
> = {
  stableWindowMs: 60_000,
  /** 10 % of the stable window, as Knative. */
  panicWindowMs: 6_000,
  panicThreshold: 2,
  maxScaleUpRate: 1000,
  maxScaleDownRate: 2,
  scaleToZeroGraceMs: 30_000,
};

export interface Sample {
  at: number;
  /** Requests in flight or queued for the version at that moment. */
  concurrency: number;
}

export interface ScalerState {
  /** When the current panic began (null: stable mode). */
  panicSince: number | null;
  /** Last time the panic condition held. */
  lastPanicAt: number | null;
  /** Last sample with any request. */
  lastBusyAt: number | null;
}

export const INITIAL_STATE: ScalerState = { panicSince: null, lastPanicAt: null, lastBusyAt: null };

export interface Decision {
  desired: number;
  panic: boolean;
  stableAverage: number;
  panicAverage: number;
  state: ScalerState;
}

function average(samples: readonly Sample[], from: number, to: number): number {
  let sum = 0;
  let n = 0;
  for (const s of samples) {
    if (s.at > from && s.at <= to) {
      sum += s.concurrency;
      n++;
    }
  }
  return n === 0 ? 0 : sum / n;
}

export function decide(input: {
  now: number;
  samples: readonly Sample[];
  /** Instances ready now (started instances; starting ones count as ready capacity too). */
  ready: number;
  state: ScalerState;
  config: ScaleConfig;
}): Decision {
  const { now, samples, ready, config: c } = input;
  const state = { ...input.state };
  const stableAverage = average(samples, now - c.stableWindowMs, now);
  const panicAverage = average(samples, now - c.panicWindowMs, now);
  for (const s of samples) {
    if (
      s.concurrency > 0 &&
      s.at <= now &&
      (state.lastBusyAt === null || s.at > state.lastBusyAt)
    ) {
      state.lastBusyAt = s.at;
    }
  }
  const stableWant = Math.ceil(stableAverage / c.targetConcurrency);
  const panicWant = Math.ceil(panicAverage / c.targetConcurrency);

  // Panic when the short window asks for much more than what is ready.
  const capacity = Math.max(ready, 1);
  const panicking = panicWant >= c.panicThreshold * capacity && panicWant > ready;
  if (panicking) {
    state.lastPanicAt = now;
    state.panicSince ??= now;
  } else if (
    state.panicSince !== null &&
    state.lastPanicAt !== null &&
    now - state.lastPanicAt >= c.stableWindowMs
  ) {
    state.panicSince = null;
  }
  const inPanic = state.panicSince !== null;

  let desired = inPanic ? Math.max(panicWant, stableWant, ready) : stableWant;
  // Rate limits relative to what is ready.
  desired = Math.min(desired, Math.ceil(Math.max(ready, 1) * c.maxScaleUpRate));
  if (!inPanic) desired = Math.max(desired, Math.floor(ready / c.maxScaleDownRate));
  // Zero: after the grace period with no request at all, whatever the stable window still
  // averages and even in panic mode (no demand is left to panic about; a keep-alive of a few
  // seconds must work after a burst too); before it, keep one instance.
  const idleFor = state.lastBusyAt === null ? Number.POSITIVE_INFINITY : now - state.lastBusyAt;
  if (idleFor >= c.scaleToZeroGraceMs) {
    desired = 0;
    state.panicSince = null;
  } else if (desired === 0 && ready > 0) desired = 1;
  desired = Math.min(c.maxInstances, Math.max(c.minInstances, desired));
  return { desired, panic: state.panicSince !== null, stableAverage, panicAverage, state };
}

/** Run `decide` over a trace, one decision per sample (what the pool does once per tick). */
export function replay(
  trace: readonly Sample[],
  config: ScaleConfig,
  start: { ready: number; state?: ScalerState },
  /** How many instances become ready after a decision (default: all of them, at once). */
  settle: (desired: number, ready: number) => number = (d) => d,
): Array<Decision & { at: number; ready: number }> {
  const out: Array<Decision & { at: number; ready: number }> = [];
  let ready = start.ready;
  let state = start.state ?? INITIAL_STATE;
  for (let i = 0; i < trace.length; i++) {
    const now = trace[i]!.at;
    const d = decide({ now, samples: trace.slice(0, i + 1), ready, state, config });
    out.push({ ...d, at: now, ready });
    state = d.state;
    ready = settle(d.desired, ready);
  }
  return out;
}
