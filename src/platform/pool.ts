// The instance pool: keeps each function version's instances warm between invocations, reuses
// them, starts more (up to the function's max instances and the tenant's memory) when requests
// overlap, queues briefly when at the limit, replaces broken instances and scales to zero after
// the keep-alive idle timeout. Instances are never shared between tenants or functions: a group
// key names one function version (and secrets revision) of one tenant.
//
// acquire() hands out a slot on an instance (warm, or one it started: booted) and release()
// gives it back. Issue 6 adds restore-from-snapshot and an autoscaler behind the same calls.

import { IsolaError } from '../errors.js';
import {
  INITIAL_STATE,
  SCALE_DEFAULTS,
  type Sample,
  type ScaleConfig,
  type ScalerState,
  decide,
} from './autoscaler.js';
import type { Instance } from './instance.js';
import type { StartKind } from './store/types.js';

/** Sweep period of the idle reaper; an idle timeout of a few seconds must work. */
export const IDLE_SWEEP_MS = 250;
/** Requests waiting for a slot per function version beyond this are refused at once (429). */
export const MAX_QUEUE_PER_GROUP = 1000;
/** Instances of one function version starting at once (more requests wait for a slot). */
export const MAX_STARTING_PER_GROUP = 2;
/** A warm pool whose start failed (bad image, boot failure) does not retry sooner than this. */
export const PREWARM_BACKOFF_MS = 10_000;

export interface GroupSpec {
  key: string;
  tenantId: string;
  functionId: string;
  version: number;
  memoryMiB: number;
  concurrency: number;
  maxInstances: number;
  minInstances: number;
  idleTimeoutS: number;
}

export interface Lease {
  instance: Instance;
  startKind: StartKind;
  /** Time spent getting the slot: queueing plus any start (ms). */
  startMs: number;
  /** When the slot was handed over (performance.now()), for the group's run-time average. */
  heldSince?: number;
  queuedMs: number;
}

interface Slotted {
  instance: Instance;
  /** Slots handed out (a starting instance counts the requests promised to it). */
  slots: number;
  ready: Promise<void>;
  started: boolean;
}

interface Waiter {
  resolve: (l: Lease) => void;
  reject: (e: Error) => void;
  t0: number;
  timer: NodeJS.Timeout;
}

interface Group {
  spec: GroupSpec;
  members: Slotted[];
  waiters: Waiter[];
  /** When a start last failed: the warm pool waits PREWARM_BACKOFF_MS before trying again. */
  failedAt?: number;
  /** The autoscaler's view: concurrency samples (one per sweep) and its state. */
  samples: Sample[];
  scaler: ScalerState;
  /** Last decision (for /v1/instances and tests). */
  desired: number;
  /** Moving averages: how long a slot is held per request, and an instance start (ms). */
  avgRunMs: number | null;
  avgStartMs: number | null;
}

export interface PoolEvents {
  onStart?(spec: GroupSpec, instance: Instance): void;
  onStop?(spec: GroupSpec, instance: Instance, why: string): void;
  /** A group has no instance and no waiter left: it scaled to zero. */
  onZero?(spec: GroupSpec): void;
}

export interface PoolOptions {
  /** Make a new (not started) instance for a group. */
  create(spec: GroupSpec): Instance;
  /** Instances of a group that may be starting at once (default MAX_STARTING_PER_GROUP). */
  maxStartingPerGroup?: number;
  /** Autoscaler windows and rates (autoscaler.ts); the defaults are Knative's, scaled. */
  scale?: Partial<typeof SCALE_DEFAULTS>;
  /** The tenant's memory limit for all its instances (MiB). */
  tenantMemoryMiB(tenantId: string): number;
  events?: PoolEvents;
}

export class Pool {
  private readonly groups = new Map<string, Group>();
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly opts: PoolOptions) {
    this.sweeper = setInterval(() => this.sweep(), IDLE_SWEEP_MS);
    this.sweeper.unref();
  }

  /** Memory of a tenant's instances, starting ones included (MiB). */
  tenantMemory(tenantId: string): number {
    let sum = 0;
    for (const g of this.groups.values()) {
      if (g.spec.tenantId === tenantId) sum += g.members.length * g.spec.memoryMiB;
    }
    return sum;
  }

  instances(): Array<{ spec: GroupSpec; instance: Instance; slots: number }> {
    const out = [];
    for (const g of this.groups.values())
      for (const m of g.members) out.push({ spec: g.spec, instance: m.instance, slots: m.slots });
    return out;
  }

  /**
   * A slot on an instance of the group. Waits (up to `waitMs`) when every instance is busy and no
   * more may start; then E_THROTTLED. Start failures reject with the instance's error.
   */
  async acquire(spec: GroupSpec, waitMs: number): Promise<Lease> {
    if (this.closed) throw new IsolaError('E_SHUTTING_DOWN', 'the server is shutting down');
    const t0 = performance.now();
    const g = this.group(spec);
    const warm = this.freeMember(g);
    if (warm) {
      warm.slots++;
      if (warm.started)
        return {
          instance: warm.instance,
          startKind: 'warm',
          startMs: 0,
          queuedMs: 0,
          heldSince: performance.now(),
        };
      return this.awaitStart(warm, t0, 0);
    }
    const started = this.worthStarting(g, 1) ? this.tryStart(g) : null;
    if (started) return this.awaitStart(started, t0, 0);
    if (g.waiters.length >= MAX_QUEUE_PER_GROUP) throw throttled(g.spec, 'queue is full');
    return new Promise<Lease>((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        t0,
        timer: setTimeout(() => {
          g.waiters.splice(g.waiters.indexOf(w), 1);
          reject(throttled(g.spec, `no instance free within ${waitMs} ms`));
        }, waitMs),
      };
      g.waiters.push(w);
    });
  }

  release(lease: Lease): void {
    for (const g of this.groups.values()) {
      const m = g.members.find((x) => x.instance === lease.instance);
      if (!m) continue;
      m.slots--;
      if (lease.heldSince !== undefined) {
        g.avgRunMs = ewma(g.avgRunMs, performance.now() - lease.heldSince);
      }
      if (m.instance.state === 'broken') this.remove(g, m, m.instance.brokenReason ?? 'broken');
      this.pump(g);
      return;
    }
  }

  /** Stop every instance (server shutdown); waiting requests fail with E_SHUTTING_DOWN. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    const all: Promise<void>[] = [];
    for (const g of this.groups.values()) {
      for (const w of g.waiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new IsolaError('E_SHUTTING_DOWN', 'the server is shutting down'));
      }
      for (const m of g.members.splice(0)) all.push(m.instance.destroy());
    }
    await Promise.all(all);
  }

  /**
   * Keep at least `spec.minInstances` instances of the group started and idle (warm pool);
   * the sweep keeps topping it up. Start failures are logged by the instance and retried by
   * the next sweep.
   */
  prewarm(spec: GroupSpec): void {
    if (this.closed) return;
    const g = this.group(spec);
    g.spec = spec;
    this.topUp(g);
  }

  /**
   * Groups of a function that are no longer what it serves (another live version, new secrets)
   * lose their minimum, so they scale to zero after their idle timeout.
   */
  retire(functionId: string, keep: ReadonlySet<string>): void {
    for (const g of this.groups.values()) {
      if (g.spec.functionId === functionId && !keep.has(g.spec.key) && g.spec.minInstances > 0) {
        g.spec = { ...g.spec, minInstances: 0 };
      }
    }
  }

  private topUp(g: Group): void {
    if (g.failedAt !== undefined && Date.now() - g.failedAt < PREWARM_BACKOFF_MS) return;
    let live = g.members.filter((m) => m.instance.state !== 'broken').length;
    while (live < g.spec.minInstances) {
      const m = this.tryStart(g);
      if (!m) return;
      m.slots--; // tryStart reserves a slot for a requester; a warm-pool start has none
      live++;
    }
  }

  /** Stop the instances of groups matching a predicate (function deleted, version retired). */
  async drain(match: (spec: GroupSpec) => boolean): Promise<void> {
    const all: Promise<void>[] = [];
    for (const g of this.groups.values()) {
      if (!match(g.spec)) continue;
      for (const m of [...g.members]) {
        if (m.slots === 0) {
          this.remove(g, m, 'drained');
          all.push(m.instance.destroy());
        } else m.instance.markBroken('drained');
      }
    }
    await Promise.all(all);
  }

  private group(spec: GroupSpec): Group {
    let g = this.groups.get(spec.key);
    if (!g) {
      g = {
        spec,
        members: [],
        waiters: [],
        samples: [],
        scaler: INITIAL_STATE,
        desired: 0,
        avgRunMs: null,
        avgStartMs: null,
      };
      this.groups.set(spec.key, g);
    }
    return g;
  }

  private freeMember(g: Group): Slotted | null {
    let best: Slotted | null = null;
    for (const m of g.members) {
      const st = m.instance.state;
      if (st === 'broken' || st === 'destroyed') continue;
      if (m.slots >= g.spec.concurrency) continue;
      // Prefer started instances, then the least loaded.
      if (
        !best ||
        (m.started && !best.started) ||
        (m.started === best.started && m.slots < best.slots)
      )
        best = m;
    }
    return best;
  }

  /** Start a new instance if the function and tenant limits allow (evicting idle ones of the tenant). */
  /**
   * Whether a request that found no free slot should start an instance or wait for one. Wait
   * when the group's history says a slot frees sooner than an instance starts: `queued`
   * requests spread over the slots of the live instances, each held for the average run time,
   * against the average start time.
   */
  private worthStarting(g: Group, queued: number): boolean {
    const live = g.members.filter((m) => m.instance.state !== 'broken');
    if (live.length === 0) return true;
    if (g.avgRunMs === null || g.avgStartMs === null) {
      // No history yet (a burst at zero): one start at a time until a request has run, so
      // that requests wait for the instance already coming rather than each starting one.
      return !live.some((m) => !m.started);
    }
    const expectedWaitMs = (queued / (live.length * g.spec.concurrency)) * g.avgRunMs;
    return expectedWaitMs > g.avgStartMs;
  }

  private tryStart(g: Group): Slotted | null {
    const live = g.members.filter((m) => m.instance.state !== 'broken').length;
    if (live >= g.spec.maxInstances) return null;
    // Scale up a few at a time: requests beyond wait for the first free slot (a burst of short
    // requests is served by the first instances instead of starting one per request, and
    // starts do not fight each other for the host's CPUs).
    const starting = g.members.filter((m) => !m.started && m.instance.state !== 'broken').length;
    if (starting >= (this.opts.maxStartingPerGroup ?? MAX_STARTING_PER_GROUP)) return null;
    const limit = this.opts.tenantMemoryMiB(g.spec.tenantId);
    if (this.tenantMemory(g.spec.tenantId) + g.spec.memoryMiB > limit) {
      if (!this.evictIdle(g.spec.tenantId, g.spec.memoryMiB, limit)) return null;
    }
    const instance = this.opts.create(g.spec);
    const m: Slotted = { instance, slots: 1, ready: Promise.resolve(), started: false };
    m.ready = instance.start().then(
      () => {
        m.started = true;
        g.avgStartMs = ewma(g.avgStartMs, instance.startMs);
        this.opts.events?.onStart?.(g.spec, instance);
        // Its other slots (concurrency > 1), or another start, for requests still waiting.
        queueMicrotask(() => this.pump(g));
      },
      (err: unknown) => {
        g.failedAt = Date.now();
        this.remove(g, m, 'start failed');
        // Waiters that hoped for this instance try again (another start, or they keep waiting).
        queueMicrotask(() => this.pump(g));
        throw err;
      },
    );
    m.ready.catch(() => undefined);
    g.members.push(m);
    return m;
  }

  /** Free memory for the tenant by stopping its idle instances, oldest first. */
  private evictIdle(tenantId: string, need: number, limit: number): boolean {
    const idle: Array<{ g: Group; m: Slotted }> = [];
    for (const g of this.groups.values()) {
      if (g.spec.tenantId !== tenantId) continue;
      for (const m of g.members) if (m.slots === 0 && m.started) idle.push({ g, m });
    }
    idle.sort((a, b) => a.m.instance.lastUsed - b.m.instance.lastUsed);
    while (this.tenantMemory(tenantId) + need > limit) {
      const next = idle.shift();
      if (!next) return false;
      this.remove(next.g, next.m, 'evicted for another function of the tenant');
      void next.m.instance.destroy();
    }
    return true;
  }

  private async awaitStart(m: Slotted, t0: number, queuedMs: number): Promise<Lease> {
    try {
      await m.ready;
    } catch (err) {
      m.slots--;
      throw err;
    }
    return {
      instance: m.instance,
      startKind: queuedMs > 0 && m.started ? 'warm' : m.instance.startKind,
      startMs: performance.now() - t0,
      heldSince: performance.now(),
      queuedMs,
    };
  }

  /**
   * Hand free slots (or new instances) to waiting requests, oldest first. A waiter that has
   * waited longer than a start takes (the guess that a slot would free first was wrong: a long
   * request) gets a start whatever worthStarting says; the sweep calls this every tick.
   */
  private pump(g: Group): void {
    while (g.waiters.length > 0) {
      let m = this.freeMember(g);
      const overdue = performance.now() - g.waiters[0]!.t0 > (g.avgStartMs ?? 0);
      if (m) m.slots++;
      else if (overdue || this.worthStarting(g, g.waiters.length)) m = this.tryStart(g); // reserves a slot
      if (!m) return;
      const w = g.waiters.shift()!;
      clearTimeout(w.timer);
      const queuedMs = performance.now() - w.t0;
      if (m.started) {
        w.resolve({
          instance: m.instance,
          startKind: 'warm',
          startMs: queuedMs,
          queuedMs,
          heldSince: performance.now(),
        });
      } else {
        this.awaitStart(m, w.t0, queuedMs).then(
          (l) => w.resolve({ ...l, startKind: m.instance.startKind }),
          w.reject,
        );
      }
    }
  }

  private remove(g: Group, m: Slotted, why: string): void {
    const i = g.members.indexOf(m);
    if (i < 0) return;
    g.members.splice(i, 1);
    this.opts.events?.onStop?.(g.spec, m.instance, why);
    if (m.slots === 0 || m.instance.state === 'broken') void m.instance.destroy();
  }

  /** The autoscaler's configuration for a group. */
  private scaleConfig(spec: GroupSpec): ScaleConfig {
    return {
      ...SCALE_DEFAULTS,
      ...this.opts.scale,
      targetConcurrency: spec.concurrency,
      minInstances: spec.minInstances,
      maxInstances: spec.maxInstances,
      // Scale to zero after the keep-alive idle timeout with no request at all.
      scaleToZeroGraceMs: spec.idleTimeoutS * 1000,
    };
  }

  /**
   * One autoscaler tick for a group (KPA: autoscaler.ts): sample the concurrency (slots in use
   * plus waiters), decide, start instances ahead of demand when the decision is above what
   * runs, and stop idle ones above it.
   */
  private scale(g: Group, now: number): void {
    const c = this.scaleConfig(g.spec);
    const busy = g.members.reduce((n, m) => n + m.slots, 0) + g.waiters.length;
    g.samples.push({ at: now, concurrency: busy });
    const keepFrom = now - c.stableWindowMs;
    while (g.samples.length > 0 && g.samples[0]!.at <= keepFrom) g.samples.shift();
    const live = g.members.filter((m) => m.instance.state !== 'broken');
    // A request shorter than a tick leaves no busy sample; the instances know when they last
    // served one (the keep-alive counts from there).
    let lastBusyAt = g.scaler.lastBusyAt ?? 0;
    for (const m of g.members) lastBusyAt = Math.max(lastBusyAt, m.instance.lastUsed);
    if (busy > 0) lastBusyAt = now;
    const state = { ...g.scaler, lastBusyAt: lastBusyAt > 0 ? lastBusyAt : null };
    const d = decide({ now, samples: g.samples, ready: live.length, state, config: c });
    g.scaler = d.state;
    g.desired = d.desired;
    // Up: start what the decision asks beyond what runs (panic mode does this under a burst).
    // (Not when the queue drains sooner than an instance starts: worthStarting.)
    const worth = this.worthStarting(g, g.waiters.length);
    if (worth && (g.failedAt === undefined || now - g.failedAt >= PREWARM_BACKOFF_MS)) {
      for (let n = live.length; n < d.desired; n++) {
        const m = this.tryStart(g);
        if (!m) break;
        m.slots--; // a start for the scaler, not for a requester
      }
    }
    // Down: idle instances above the decision go, least recently used first.
    const idle = live
      .filter((m) => m.started && m.slots === 0)
      .sort((a, b) => a.instance.lastUsed - b.instance.lastUsed);
    let count = live.length;
    for (const m of idle) {
      if (count <= Math.max(d.desired, g.spec.minInstances)) break;
      this.remove(g, m, d.desired === 0 ? 'idle' : `scaled down to ${d.desired}`);
      void m.instance.destroy();
      count--;
    }
  }

  /** Autoscaler tick per group; drop broken instances; scale to zero after the idle timeout. */
  private sweep(): void {
    const now = Date.now();
    for (const [key, g] of this.groups) {
      for (const m of [...g.members]) {
        if (m.instance.state === 'broken' && m.slots === 0) {
          this.remove(g, m, m.instance.brokenReason ?? 'broken');
        }
      }
      this.scale(g, now);
      if (g.waiters.length > 0) this.pump(g);
      if (g.spec.minInstances > 0) this.topUp(g);
      if (g.members.length === 0 && g.waiters.length === 0) {
        this.groups.delete(key);
        this.opts.events?.onZero?.(g.spec);
      }
    }
  }
}

/** Exponentially weighted moving average (new samples weigh a fifth). */
function ewma(avg: number | null, sample: number): number {
  return avg === null ? sample : avg * 0.8 + sample * 0.2;
}

function throttled(spec: GroupSpec, why: string): IsolaError {
  return new IsolaError(
    'E_THROTTLED',
    `function is at its limit (${spec.maxInstances} instance(s) x ${spec.concurrency} concurrent request(s)): ${why}`,
    { details: { retryAfterS: 1 } },
  );
}
