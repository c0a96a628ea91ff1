// 30 boots in a row must reach the agent. The watchdog may retry a hung boot; retries are
// counted and reported. Also: a watchdog that can never be satisfied fails cleanly after its
// retries, with a typed error and nothing left behind.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IsolaError } from '../src/errors.js';
import { MicroVmDriver } from '../src/sandbox/drivers/microvm.js';
import { leftovers } from './helpers.js';

const BOOTS = 30;

test(`${BOOTS} boots in a row reach the agent`, async (t) => {
  const driver = new MicroVmDriver();
  const totals: number[] = [];
  let retries = 0;
  const hangs: string[] = [];
  for (let i = 0; i < BOOTS; i++) {
    const sb = await driver.create({ start: 'boot' });
    try {
      await sb.start();
      const r = await sb.run(['echo', `boot-${i}`]);
      assert.equal(r.stdout, `boot-${i}\n`);
      retries += sb.boot!.retries;
      for (const h of sb.boot!.hangs)
        hangs.push(
          `boot ${i} attempt ${h.attempt}: ${h.stage} stage, console: ${h.consoleTail.slice(-2).join(' / ') || '(empty)'}`,
        );
      totals.push(sb.boot!.totalMs);
    } finally {
      await sb.destroy();
    }
  }
  totals.sort((a, b) => a - b);
  const p = (q: number) =>
    Math.round(totals[Math.min(totals.length - 1, Math.floor(q * totals.length))]!);
  t.diagnostic(
    `boots ${BOOTS}, watchdog retries ${retries}, boot-to-agent p50 ${p(0.5)} ms, p95 ${p(0.95)} ms, max ${p(1)} ms`,
  );
  for (const h of hangs) t.diagnostic(`watchdog: ${h}`);
  assert.equal(hangs.length, retries);
  assert.equal(totals.length, BOOTS);
  assert.deepEqual(leftovers(), { qemu: [], folders: [], cgroups: [], uplinks: [] });
});

test('a boot that never reaches the agent in time is killed, retried, then fails cleanly', async (t) => {
  const driver = new MicroVmDriver();
  // 300 ms is far below any real boot here: every attempt must hit the watchdog.
  const sb = await driver.create({ timeouts: { bootMs: 300 }, bootRetries: 2, start: 'boot' });
  const t0 = Date.now();
  await assert.rejects(sb.start(), (e: unknown) => {
    assert.ok(e instanceof IsolaError);
    assert.equal(e.code, 'E_SANDBOX_BOOT_TIMEOUT');
    assert.equal(e.details?.attempts, 3);
    return true;
  });
  t.diagnostic(`3 watchdog-killed attempts took ${Date.now() - t0} ms`);
  assert.equal(sb.state, 'failed');
  await sb.destroy();
  assert.deepEqual(leftovers(), { qemu: [], folders: [], cgroups: [], uplinks: [] });
});
