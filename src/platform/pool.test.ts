import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { IsolaError } from '../errors.js';
import type { Instance, InstanceState } from './instance.js';
import { type GroupSpec, IDLE_SWEEP_MS, Pool } from './pool.js';

/** What a fake instance does when started. */
interface Plan {
  delayMs?: number;
  fail?: Error;
}

/** The part of Instance the pool uses: id, state, lastUsed, brokenReason, start, destroy, markBroken. */
class FakeInstance {
  state: InstanceState = 'starting';
  inflight = 0;
  lastUsed = Date.now();
  startMs = 0;
  startKind: 'booted' | 'restored' = 'booted';
  destroyCalls = 0;
  private why: string | null = null;

  constructor(
    readonly id: string,
    readonly spec: GroupSpec,
    private readonly plan: Plan,
  ) {}

  async start(): Promise<void> {
    await sleep(this.plan.delayMs ?? 1);
    this.startMs = this.plan.delayMs ?? 1;
    if (this.plan.fail) {
      // As the real Instance: a failed start cleans up after itself.
      await this.destroy();
      throw this.plan.fail;
    }
    if (this.state === 'destroyed') throw new IsolaError('E_SHUTTING_DOWN', 'destroyed');
    if (this.state === 'starting') this.state = 'ready';
  }

  async destroy(): Promise<void> {
    this.destroyCalls++;
    this.state = 'destroyed';
  }

  markBroken(why: string): void {
    if (this.state === 'broken' || this.state === 'destroyed') return;
    this.state = 'broken';
    this.why = why;
  }

  get brokenReason(): string | null {
    return this.why;
  }
}

function harness(
  opts: {
    memory?: Record<string, number>;
    scale?: ConstructorParameters<typeof Pool>[0]['scale'];
  } = {},
) {
  const created: FakeInstance[] = [];
  const plans: Plan[] = [];
  const stops: Array<{ key: string; id: string; why: string }> = [];
  const starts: string[] = [];
  const pool = new Pool({
    create(spec) {
      const f = new FakeInstance(`i${created.length}`, spec, plans.shift() ?? {});
      created.push(f);
      return f as unknown as Instance;
    },
    tenantMemoryMiB: (t) => opts.memory?.[t] ?? 1_000_000,
    ...(opts.scale ? { scale: opts.scale } : {}),
    events: {
      onStart: (_s, i) => starts.push(i.id),
      onStop: (s, i, why) => stops.push({ key: s.key, id: i.id, why }),
      onZero: (s) => stops.push({ key: s.key, id: '-', why: 'zero' }),
    },
  });
  const fake = (i: Instance) => i as unknown as FakeInstance;
  const ids = () => pool.instances().map((x) => x.instance.id);
  return { pool, created, plans, stops, starts, fake, ids };
}

function spec(over: Partial<GroupSpec> = {}): GroupSpec {
  return {
    key: 'g1',
    tenantId: 't1',
    functionId: 'f1',
    version: 1,
    memoryMiB: 256,
    concurrency: 1,
    maxInstances: 10,
    minInstances: 0,
    idleTimeoutS: 300,
    ...over,
  };
}

const isCode =
  (code: string, check: (e: IsolaError) => void = () => undefined) =>
  (err: unknown) => {
    assert.ok(err instanceof IsolaError, `not an IsolaError: ${String(err)}`);
    assert.equal(err.code, code);
    check(err);
    return true;
  };

describe('Pool', () => {
  test('first acquire boots an instance; after release the next acquire is warm on it', async (t) => {
    const h = harness();
    t.after(() => h.pool.close());
    const a = await h.pool.acquire(spec(), 1000);
    assert.equal(a.startKind, 'booted');
    assert.equal(a.queuedMs, 0);
    assert.ok(a.startMs > 0);
    assert.equal(h.fake(a.instance).state, 'ready');
    assert.deepEqual(h.starts, ['i0']);
    h.pool.release(a);
    const b = await h.pool.acquire(spec(), 1000);
    assert.equal(b.startKind, 'warm');
    assert.equal(b.instance, a.instance);
    assert.equal(b.startMs, 0);
    assert.equal(h.created.length, 1);
    h.pool.release(b);
    assert.deepEqual(h.pool.instances(), [{ spec: spec(), instance: a.instance, slots: 0 }]);
  });

  test('a busy instance is not shared at concurrency 1: a second one starts', async (t) => {
    const h = harness();
    t.after(() => h.pool.close());
    const [a, b] = await Promise.all([h.pool.acquire(spec(), 1000), h.pool.acquire(spec(), 1000)]);
    assert.notEqual(a.instance, b.instance);
    assert.equal(h.created.length, 2);
    assert.equal(h.pool.tenantMemory('t1'), 512);
  });

  test('concurrency 2: two leases share one instance', async (t) => {
    const h = harness();
    t.after(() => h.pool.close());
    const s = spec({ concurrency: 2 });
    // Both while it starts...
    const [a, b] = await Promise.all([h.pool.acquire(s, 1000), h.pool.acquire(s, 1000)]);
    assert.equal(a.instance, b.instance);
    assert.equal(a.startKind, 'booted');
    assert.equal(b.startKind, 'booted');
    assert.equal(h.created.length, 1);
    assert.equal(h.pool.instances()[0]!.slots, 2);
    // ...and once it is up.
    h.pool.release(b);
    const c = await h.pool.acquire(s, 1000);
    assert.equal(c.instance, a.instance);
    assert.equal(c.startKind, 'warm');
    // A third concurrent lease needs another instance.
    const d = await h.pool.acquire(s, 1000);
    assert.notEqual(d.instance, a.instance);
    assert.equal(h.created.length, 2);
  });

  test('at max instances a request waits and gets the slot when it is released', async (t) => {
    const h = harness();
    t.after(() => h.pool.close());
    const s = spec({ maxInstances: 1 });
    const a = await h.pool.acquire(s, 1000);
    let got = false;
    const pending = h.pool.acquire(s, 1000).then((l) => {
      got = true;
      return l;
    });
    await sleep(40);
    assert.equal(got, false);
    h.pool.release(a);
    const b = await pending;
    assert.equal(b.instance, a.instance);
    assert.equal(b.startKind, 'warm');
    assert.ok(b.queuedMs >= 30, `queuedMs ${b.queuedMs}`);
    assert.equal(b.startMs, b.queuedMs);
    assert.equal(h.created.length, 1);
  });

  test('at max instances a request that is not served within waitMs is throttled', async (t) => {
    const h = harness();
    t.after(() => h.pool.close());
    const s = spec({ maxInstances: 1 });
    const a = await h.pool.acquire(s, 1000);
    const t0 = performance.now();
    await assert.rejects(
      h.pool.acquire(s, 50),
      isCode('E_THROTTLED', (e) => assert.equal(e.details?.retryAfterS, 1)),
    );
    assert.ok(performance.now() - t0 >= 45);
    // The timed-out waiter is gone: a release leaves the slot free for the next caller.
    h.pool.release(a);
    const b = await h.pool.acquire(s, 50);
    assert.equal(b.startKind, 'warm');
  });

  test('a waiter for an instance that fails to start gets a new one', async (t) => {
    const h = harness();
    t.after(() => h.pool.close());
    const s = spec({ maxInstances: 1 });
    const boom = new IsolaError('E_FUNCTION_UNAVAILABLE', 'no boot');
    h.plans.push({ delayMs: 20, fail: boom });
    const first = h.pool.acquire(s, 1000);
    const second = h.pool.acquire(s, 1000);
    await assert.rejects(first, (e) => e === boom);
    const l = await second;
    assert.equal(l.startKind, 'booted');
    assert.equal(l.instance.id, 'i1');
    assert.deepEqual(h.ids(), ['i1']);
  });

  test('a start failure rejects the acquirer with its error and removes the instance', async (t) => {
    const h = harness();
    t.after(() => h.pool.close());
    const boom = new IsolaError('E_FUNCTION_INIT', 'handler missing');
    h.plans.push({ fail: boom });
    await assert.rejects(h.pool.acquire(spec(), 1000), (e) => e === boom);
    assert.deepEqual(h.pool.instances(), []);
    assert.equal(h.pool.tenantMemory('t1'), 0);
    assert.equal(h.created[0]!.state, 'destroyed');
    assert.deepEqual(h.stops, [{ key: 'g1', id: 'i0', why: 'start failed' }]);
    assert.deepEqual(h.starts, []);
    // The next request starts a fresh instance.
    const l = await h.pool.acquire(spec(), 1000);
    assert.equal(l.startKind, 'booted');
    assert.equal(l.instance.id, 'i1');
  });

  test('a broken instance is destroyed on release and replaced on the next acquire', async (t) => {
    const h = harness();
    t.after(() => h.pool.close());
    const a = await h.pool.acquire(spec(), 1000);
    h.fake(a.instance).markBroken('an invocation ran past its timeout');
    h.pool.release(a);
    assert.equal(h.fake(a.instance).state, 'destroyed');
    assert.deepEqual(h.pool.instances(), []);
    assert.deepEqual(h.stops, [{ key: 'g1', id: 'i0', why: 'an invocation ran past its timeout' }]);
    const b = await h.pool.acquire(spec(), 1000);
    assert.equal(b.startKind, 'booted');
    assert.notEqual(b.instance, a.instance);
  });

  test('the tenant memory limit stops a start; idle instances of the tenant are evicted', async (t) => {
    const h = harness({ memory: { t1: 512, t2: 256 } });
    t.after(() => h.pool.close());
    const a = spec({ key: 'a', functionId: 'fa' });
    const b = spec({ key: 'b', functionId: 'fb' });
    const c = spec({ key: 'c', functionId: 'fc' });
    const other = spec({ key: 'o', tenantId: 't2', functionId: 'fo' });

    // t2 has an idle instance; it must never be touched by t1's needs.
    h.pool.release(await h.pool.acquire(other, 1000));
    const la = await h.pool.acquire(a, 1000);
    const lb = await h.pool.acquire(b, 1000);
    assert.equal(h.pool.tenantMemory('t1'), 512);

    // t1 is at its limit and nothing of it is idle: a third function cannot start.
    await assert.rejects(h.pool.acquire(c, 30), isCode('E_THROTTLED'));
    assert.equal(h.created.length, 3);

    // Once a's instance is idle it is evicted for c.
    h.pool.release(la);
    const lc = await h.pool.acquire(c, 1000);
    assert.equal(lc.startKind, 'booted');
    assert.equal(h.fake(la.instance).state, 'destroyed');
    assert.ok(h.stops.some((x) => x.key === 'a' && x.why.startsWith('evicted')));
    assert.equal(h.pool.tenantMemory('t1'), 512);
    assert.equal(h.fake(lb.instance).state, 'ready');

    // The other tenant's idle instance survived all of it.
    assert.equal(h.created[0]!.state, 'ready');
    assert.equal(h.pool.tenantMemory('t2'), 256);
    assert.ok(!h.stops.some((x) => x.key === 'o'));
  });

  test('memory limits are per tenant: a full tenant never evicts another tenant', async (t) => {
    const h = harness({ memory: { t1: 256, t2: 256 } });
    t.after(() => h.pool.close());
    const mine = spec({ key: 'm' });
    const theirs = spec({ key: 'o', tenantId: 't2' });
    h.pool.release(await h.pool.acquire(theirs, 1000));
    await h.pool.acquire(mine, 1000);
    await assert.rejects(h.pool.acquire(spec({ key: 'm2' }), 30), isCode('E_THROTTLED'));
    assert.equal(h.created[0]!.state, 'ready');
    // And the other tenant's own budget is untouched by t1's usage.
    const again = await h.pool.acquire(theirs, 1000);
    assert.equal(again.startKind, 'warm');
  });

  test('idle instances are stopped after idleTimeoutS; minInstances keeps some', async (t) => {
    assert.equal(IDLE_SWEEP_MS, 250);
    const h = harness();
    t.after(() => h.pool.close());
    const zero = spec({ key: 'zero', idleTimeoutS: 0.3 });
    const keep = spec({ key: 'keep', idleTimeoutS: 0.3, minInstances: 1 });
    const z = await h.pool.acquire(zero, 1000);
    const k = await Promise.all([h.pool.acquire(keep, 1000), h.pool.acquire(keep, 1000)]);
    h.pool.release(z);
    for (const l of k) h.pool.release(l);
    assert.equal(h.pool.instances().length, 3, 'stopped before the idle timeout');
    await sleep(650);
    assert.equal(h.fake(z.instance).state, 'destroyed');
    assert.ok(h.stops.some((x) => x.key === 'zero' && x.why === 'idle'));
    const left = h.pool.instances();
    assert.equal(left.length, 1);
    assert.equal(left[0]!.spec.key, 'keep');
    assert.equal(h.created.filter((c) => c.state === 'destroyed').length, 2);
    // The instance kept warm serves the next request.
    const again = await h.pool.acquire(keep, 1000);
    assert.equal(again.startKind, 'warm');
    assert.equal(again.instance, left[0]!.instance);
  });

  test('prewarm starts minInstances idle instances; retire lets them scale to zero', async (t) => {
    const h = harness();
    t.after(() => h.pool.close());
    const warm = spec({ key: 'w1', minInstances: 2, idleTimeoutS: 0.3 });
    h.pool.prewarm(warm);
    assert.equal(h.pool.instances().length, 2);
    assert.ok(
      h.pool.instances().every((x) => x.slots === 0),
      'a warm-pool start holds no slot',
    );
    await sleep(100);
    const l = await h.pool.acquire(warm, 1000);
    assert.equal(l.startKind, 'warm');
    h.pool.release(l);
    await sleep(650);
    assert.equal(h.pool.instances().length, 2, 'the minimum outlives the idle timeout');
    // A destroyed member is replaced by the sweep.
    h.fake(h.pool.instances()[0]!.instance).markBroken('test');
    await sleep(400);
    assert.equal(h.pool.instances().filter((x) => x.instance.state !== 'broken').length, 2);
    h.pool.retire('f1', new Set(['other-key']));
    await sleep(700);
    assert.equal(h.pool.instances().length, 0, 'retired: scaled to zero after the idle timeout');
  });

  test('a warm pool whose starts fail backs off instead of retrying every sweep', async (t) => {
    const h = harness();
    t.after(() => h.pool.close());
    const boom = new IsolaError('E_FUNCTION_UNAVAILABLE', 'boot failed');
    h.plans.push({ fail: boom }, { fail: boom }, { fail: boom });
    h.pool.prewarm(spec({ key: 'bad', minInstances: 1 }));
    await sleep(800);
    assert.equal(h.created.length, 1, 'one failed start, then the backoff');
  });

  test('busy instances are not stopped for idleness', async (t) => {
    const h = harness();
    t.after(() => h.pool.close());
    const s = spec({ idleTimeoutS: 0.2 });
    const a = await h.pool.acquire(s, 1000);
    await sleep(550);
    assert.equal(h.fake(a.instance).state, 'ready');
    assert.equal(h.pool.instances().length, 1);
  });

  test('close() destroys every instance and rejects waiters with E_SHUTTING_DOWN', async () => {
    const h = harness();
    const s = spec({ maxInstances: 1 });
    await h.pool.acquire(s, 1000);
    h.pool.release(await h.pool.acquire(spec({ key: 'g2' }), 1000));
    const waiting = h.pool.acquire(s, 5000);
    await sleep(10);
    const t0 = performance.now();
    await h.pool.close();
    await assert.rejects(waiting, isCode('E_SHUTTING_DOWN'));
    assert.ok(performance.now() - t0 < 1000, 'the waiter was not released at once');
    assert.ok(h.created.every((c) => c.state === 'destroyed'));
    assert.deepEqual(h.pool.instances(), []);
    await assert.rejects(h.pool.acquire(s, 1000), isCode('E_SHUTTING_DOWN'));
  });

  test('autoscaler: after a burst the stable window decides; idle instances above it go, one stays until the idle timeout', async () => {
    const { pool, stops, ids } = harness({
      scale: { stableWindowMs: 1000, panicWindowMs: 250 },
    });
    const s = spec({ idleTimeoutS: 30 });
    const leases = await Promise.all([1, 2, 3, 4].map(() => pool.acquire(s, 1000)));
    assert.equal(ids().length, 4);
    await sleep(600);
    for (const l of leases) pool.release(l);
    // No request for over a stable window: the average falls to 0, so one instance (the
    // keep-alive has not run out) is what the scaler keeps; the other three are scaled down.
    await sleep(2000);
    assert.equal(ids().length, 1);
    // At most halving per decision (maxScaleDownRate 2), down to 1.
    const downs = stops.filter((x) => /scaled down to/.test(x.why)).map((x) => x.why);
    assert.equal(downs.length, 3, downs.join(', '));
    assert.equal(downs.at(-1), 'scaled down to 1');
    await pool.close();
  });

  test('autoscaler: at zero after the idle timeout, and the pool says so', async () => {
    const { pool, stops, ids } = harness();
    const s = spec({ idleTimeoutS: 1 });
    pool.release(await pool.acquire(s, 1000));
    await sleep(500);
    assert.equal(ids().length, 1, 'kept within the idle timeout');
    await sleep(1200);
    assert.equal(ids().length, 0);
    assert.ok(stops.some((x) => x.why === 'idle'));
    assert.ok(stops.some((x) => x.why === 'zero'));
    await pool.close();
  });

  test('a request waits for a busy instance when one frees sooner than a start takes', async () => {
    const { pool, plans, ids } = harness();
    const s = spec({ concurrency: 1 });
    plans.push({ delayMs: 150 });
    // History: a start takes ~150 ms, a request holds its slot ~10 ms.
    const first = await pool.acquire(s, 1000);
    await sleep(10);
    pool.release(first);
    const busy = await pool.acquire(s, 1000);
    assert.equal(busy.startKind, 'warm');
    const waiting = pool.acquire(s, 1000);
    await sleep(10);
    pool.release(busy);
    const got = await waiting;
    assert.equal(got.startKind, 'warm', 'it took the instance that freed');
    assert.equal(ids().length, 1, 'no second instance was started');
    pool.release(got);
    await pool.close();
  });

  test('without history, one start at a time: requests wait for the instance already coming', async () => {
    const { pool, plans, ids } = harness();
    const s = spec({ concurrency: 1 });
    plans.push({ delayMs: 100 });
    const all = [pool.acquire(s, 2000), pool.acquire(s, 2000), pool.acquire(s, 2000)];
    await sleep(50);
    assert.equal(ids().length, 1, 'the others wait while the first starts');
    const leases = await Promise.all(
      all.map((p) =>
        p.then((l) => {
          pool.release(l);
          return l;
        }),
      ),
    );
    assert.ok(ids().length <= 3);
    assert.equal(leases.length, 3);
    await pool.close();
  });
});
