// Cold starts from snapshots through the whole platform: a restored function answers correctly,
// clones of one snapshot never share randomness, identity or memory; a new version never uses
// the old version's snapshot; a burst of first invocations over many functions at zero all
// complete within the tenant's quota, and everything is gone after the idle timeout.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runDir } from '../src/assets/paths.js';
import { findQemuProcesses } from '../src/sandbox/reaper.js';
import { ROOT, sleep } from './helpers.js';
import {
  type TestServer,
  api,
  cleanup,
  cli,
  snapshotReady,
  startServer,
  tempDir,
} from './platform-helpers.js';

const PROBE = path.join(ROOT, 'test/fixtures/functions/probe');
/** Functions and requests of the burst (the figures). */
const BURST_FUNCTIONS = 20;
const BURST_REQUESTS = 100;
/** The tenant's quota during the burst: a quarter of the burst. */
const BURST_QUOTA = 25;
const IDLE_S = 2;

interface Probe {
  uuid: string;
  bytes: string;
  random: number;
  int: number;
  hostname: string;
  now: number;
  calls: number;
  mark: string | null;
  secret: string | null;
}

describe('cold start: snapshots, clones, burst', () => {
  let dir: string;
  let srv: TestServer;
  let key: string;
  let env: Record<string, string>;
  const call = (method: string, route: string, opts: Parameters<typeof api>[3] = {}) =>
    api(srv.url, method, route, { key, ...opts });
  const invoke = (fn: string, event: unknown = {}) =>
    call('POST', `/v1/functions/${fn}/invoke`, { json: event });
  const snapshotDirs = () =>
    readdirSync(path.join(srv.dataDir, 'snapshots')).filter((n) => n.startsWith('fn-'));

  before(async () => {
    dir = tempDir('coldstart');
    srv = await startServer({ dataDir: path.join(dir, 'data') });
    const admin = { ISOLA_URL: srv.url, ISOLA_API_KEY: srv.adminKey };
    assert.equal(
      cli(['tenant', 'create', 'burst', '--max-concurrency', String(BURST_QUOTA)], admin).code,
      0,
    );
    const k = cli(['key', 'create', '--tenant', 'burst', '--json'], admin);
    key = (JSON.parse(k.stdout) as { key: string }).key;
    env = { ISOLA_URL: srv.url, ISOLA_API_KEY: key };
  });

  after(async () => {
    try {
      const code = await srv.stop('SIGTERM');
      assert.equal(code, 0, srv.output());
      assert.equal(
        findQemuProcesses(runDir()).length,
        0,
        'no QEMU process after the server stopped',
      );
    } finally {
      cleanup(dir);
    }
  });

  test('a restored function answers; two clones differ in randomness and hostname; secrets arrive', async () => {
    const d = cli(
      [
        'deploy',
        'probe',
        PROBE,
        '--env',
        'MARK=v1',
        '--concurrency',
        '1',
        '--idle-timeout',
        String(IDLE_S),
      ],
      env,
    );
    assert.equal(d.code, 0, d.stderr);
    const s = cli(['secret', 'set', 'probe', 'TOKEN', '--from-stdin'], env, 'tok-123456\n');
    assert.equal(s.code, 0, s.stderr);
    assert.equal(await snapshotReady(call, key, 'probe'), 'ready');
    // One request per instance; the second arrives while the first instance is busy: two
    // instances, each a clone of the snapshot.
    const first = invoke('probe', { sleepMs: 2500 });
    await sleep(1500);
    const [a, b] = await Promise.all([first, invoke('probe', {})]);
    for (const r of [a!, b!]) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-isola-start'), 'restored');
      assert.ok(Number(r.headers.get('x-isola-start-ms')) > 0);
    }
    const pa = (a!.body as { result: Probe }).result;
    const pb = (b!.body as { result: Probe }).result;
    assert.equal(pa.mark, 'v1');
    assert.equal(pa.secret, 'tok-123456', 'secrets reach a restored clone');
    assert.notEqual(pa.uuid, pb.uuid);
    assert.notEqual(pa.bytes, pb.bytes);
    assert.notEqual(pa.random, pb.random);
    assert.notEqual(pa.int, pb.int);
    assert.notEqual(pa.hostname, pb.hostname);
    assert.equal(pa.calls, 1, 'each clone starts from the snapshot state');
    assert.equal(pb.calls, 1);
    for (const p of [pa, pb]) assert.ok(Math.abs(p.now - Date.now()) < 10_000, 'clock set');
    // The start and its steps are in the function's log.
    const logs = cli(['logs', 'probe'], env).stdout;
    assert.match(logs, /restored in \d+ ms \((pre-spawned VMM|VMM spawned), .*load \d+ ms/);
    assert.doesNotMatch(logs, /tok-123456/);
  });

  test('a new version never uses the old snapshot, and the old one is removed', async () => {
    const before = snapshotDirs();
    assert.equal(before.length, 1);
    const d = cli(['deploy', 'probe', PROBE, '--env', 'MARK=v2'], env);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(await snapshotReady(call, key, 'probe'), 'ready');
    // Instances of v1 may still be warm; wait until they scaled to zero.
    for (let i = 0; i < 40; i++) {
      const inst = await call('GET', '/v1/instances');
      if ((inst.body as { instances: unknown[] }).instances.length === 0) break;
      await sleep(250);
    }
    const r = await invoke('probe');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-isola-start'), 'restored');
    assert.equal((r.body as { result: Probe }).result.mark, 'v2');
    const now = snapshotDirs();
    assert.equal(now.length, 1);
    assert.notEqual(now[0], before[0]);
    assert.ok(!existsSync(path.join(srv.dataDir, 'snapshots', before[0]!)));
  });

  test(`burst: ${BURST_REQUESTS} first invocations over ${BURST_FUNCTIONS} functions at zero, quota ${BURST_QUOTA}`, async (t) => {
    for (let i = 0; i < BURST_FUNCTIONS; i++) {
      const d = cli(
        ['deploy', `b${i}`, PROBE, '--env', `MARK=b${i}`, '--idle-timeout', String(IDLE_S)],
        env,
      );
      assert.equal(d.code, 0, d.stderr);
    }
    for (let i = 0; i < BURST_FUNCTIONS; i++) {
      assert.equal(await snapshotReady(call, key, `b${i}`, 240_000), 'ready', `b${i}`);
    }
    // At zero: nothing of these functions runs (not even a pre-spawned VMM).
    const inst0 = await call('GET', '/v1/instances');
    assert.equal(
      (inst0.body as { instances: Array<{ function: string }> }).instances.filter((x) =>
        x.function.startsWith('b'),
      ).length,
      0,
    );
    const t0 = performance.now();
    const replies = await Promise.all(
      Array.from({ length: BURST_REQUESTS }, (_, i) => invoke(`b${i % BURST_FUNCTIONS}`)),
    );
    const wallMs = performance.now() - t0;
    const kinds = new Map<string, number>();
    for (const [i, r] of replies.entries()) {
      assert.equal(r.status, 200, `request ${i}: ${r.text}`);
      assert.equal((r.body as { result: Probe }).result.mark, `b${i % BURST_FUNCTIONS}`);
      const k = r.headers.get('x-isola-start') ?? '?';
      kinds.set(k, (kinds.get(k) ?? 0) + 1);
    }
    t.diagnostic(`burst done in ${Math.round(wallMs)} ms; starts ${JSON.stringify([...kinds])}`);
    assert.equal(kinds.get('booted') ?? 0, 0, 'every cold start was a restore');
    // The quota held: the most the tenant ever had running at once.
    const metrics = await api(srv.url, 'GET', '/metrics', { key: srv.adminKey });
    const peak = Number(
      /isola_tenant_concurrency_peak\{tenant="burst"\} (\d+)/.exec(metrics.text)?.[1] ?? Number.NaN,
    );
    t.diagnostic(`tenant peak concurrency ${peak} (quota ${BURST_QUOTA})`);
    assert.ok(peak > 1 && peak <= BURST_QUOTA, `peak ${peak}`);
    // The start steps and the snapshot work are in the metrics.
    assert.match(metrics.text, /isola_start_step_seconds_count\{[^}]*kind="restored"[^}]*\} [1-9]/);
    assert.match(metrics.text, /isola_instance_starts_total\{kind="restored"\} [1-9]/);
    assert.match(metrics.text, /isola_snapshot_operations\{op="restores"\} [1-9]/);
    // After the idle timeout every instance is gone, and no QEMU process remains.
    let left = -1;
    for (let i = 0; i < 60 && left !== 0; i++) {
      await sleep(500);
      left = findQemuProcesses(runDir()).length;
    }
    assert.equal(left, 0, 'no QEMU process after the idle timeout');
    const inst = await call('GET', '/v1/instances');
    assert.deepEqual((inst.body as { instances: unknown[] }).instances, []);
  });
});
