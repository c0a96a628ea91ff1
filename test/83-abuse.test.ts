// The escape and abuse suite: untrusted code of tenant "mallory" (test/fixtures/functions/
// attacker) tries to get out of its micro-VM and to starve the node, while tenant "alice"'s
// function is being invoked. For each attack: the offending invocation fails with a clear error
// or is throttled, alice's latency stays within 2x of its quiet baseline (median, measured here),
// the server stays healthy, and at the end nothing is left behind. All traffic goes to this
// machine's loopback or to network namespaces the test makes (net-helpers.ts).
//
// The results are printed as a table (and kept in $ISOLA_RUN_DIR/abuse-report.json); SECURITY.md
// quotes a run.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runDir } from '../src/assets/paths.js';
import { nodeAddresses } from '../src/net/host.js';
import { findQemuProcesses } from '../src/sandbox/reaper.js';
import { ROOT, leftovers, sleep } from './helpers.js';
import { type FakeHost, fakeHost } from './net-helpers.js';
import {
  type ApiReply,
  type TestServer,
  api,
  cleanup,
  cli,
  snapshotReady,
  startServer,
  tempDir,
} from './platform-helpers.js';

const root = process.getuid?.() === 0;
const skip = root ? false : 'the suite needs root: sandbox networks, the VMM jail, namespaces';

const ATTACKER = path.join(ROOT, 'test/fixtures/functions/attacker');
const VICTIM = path.join(ROOT, 'test/fixtures/functions/misbehave');
/** The attacker's invocation timeout: runaway attacks end here. */
const ATTACK_TIMEOUT_S = 10;
/** Victim calls for the quiet baseline and (at least) during each attack. */
const BASELINE_CALLS = 40;
const UNDER_ATTACK_CALLS = 20;
/** The bound: the victim's median latency under attack within 2x of its baseline. */
const MAX_SLOWDOWN = 2;
/** The server's log rate for this suite (lines/s per function, and the burst). */
const LOG_RATE = 200;
const LOG_BURST = 1000;

interface Row {
  attack: string;
  expected: string;
  outcome: string;
  victimP50Ms: number;
  slowdown: number;
  contained: boolean;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
};

const errorCode = (r: ApiReply) => (r.body as { error?: { code?: string } }).error?.code ?? null;
/** What the handler returned (invoke replies wrap it). */
const result = <T>(r: ApiReply) => (r.body as { result: T }).result;

describe('escape and abuse suite', { skip }, () => {
  let dir: string;
  let srv: TestServer;
  let port = 0;
  let malloryKey = '';
  let aliceKey = '';
  let inet: FakeHost;
  let meta: FakeHost;
  let baselineMs = 0;
  let hostProcess: ChildProcess | null = null;
  const rows: Row[] = [];
  const marker = `isola-canary-${randomBytes(6).toString('hex')}`;
  const canaryDir = path.join('/tmp', marker);
  const canaryPath = path.join(canaryDir, 'secret.txt');
  const nodeAddr = nodeAddresses().find((a) => !a.startsWith('127.')) ?? '127.0.0.1';

  const attack = (event: Record<string, unknown>) =>
    api(srv.url, 'POST', '/v1/functions/atk/invoke', { key: malloryKey, json: event });
  const victimCall = async () => {
    const t0 = performance.now();
    const r = await api(srv.url, 'POST', '/v1/functions/echo/invoke', {
      key: aliceKey,
      json: { n: 1 },
    });
    assert.equal(r.status, 200, `alice's call failed: ${r.text}`);
    return performance.now() - t0;
  };
  const healthy = async () => {
    const h = await api(srv.url, 'GET', '/v1/health');
    assert.equal(h.status, 200, 'the server stays healthy');
  };

  /**
   * Runs one attack and alice's calls side by side: alice keeps calling until the attack ended
   * and she made at least UNDER_ATTACK_CALLS calls; her median is compared with the baseline.
   */
  async function underAttack(
    name: string,
    event: Record<string, unknown>,
    expected: string,
    accept: (r: ApiReply) => boolean,
  ): Promise<ApiReply> {
    let done = false;
    const attacking = attack(event).finally(() => {
      done = true;
    });
    await sleep(500); // the attack is under way
    const lat: number[] = [];
    while (!done || lat.length < UNDER_ATTACK_CALLS) lat.push(await victimCall());
    const r = await attacking;
    const p50 = median(lat);
    const outcome = errorCode(r) ?? `${r.status} ${JSON.stringify(result(r)).slice(0, 100)}`;
    const row: Row = {
      attack: name,
      expected,
      outcome,
      victimP50Ms: Math.round(p50 * 10) / 10,
      slowdown: Math.round((p50 / baselineMs) * 100) / 100,
      contained: accept(r),
    };
    rows.push(row);
    await healthy();
    assert.ok(row.contained, `${name}: unexpected outcome ${outcome}`);
    assert.ok(
      row.slowdown <= MAX_SLOWDOWN,
      `${name}: alice's median ${row.victimP50Ms} ms is ${row.slowdown}x her baseline ${baselineMs.toFixed(1)} ms`,
    );
    return r;
  }

  before(async () => {
    dir = tempDir('abuse');
    mkdirSync(canaryDir, { recursive: true });
    writeFileSync(canaryPath, `${marker}\n`);
    inet = await fakeHost('inet', {
      addr: '198.51.100.10',
      gw: '198.51.100.1',
      prefix: 24,
      port: 8080,
      holdPort: 8081,
    });
    meta = await fakeHost('meta', {
      addr: '169.254.169.254',
      gw: '169.254.169.1',
      prefix: 24,
      port: 80,
    });
    // A host process with the marker in its command line: what "list the host's processes"
    // looks for from inside the guest.
    hostProcess = spawn('/bin/sh', ['-c', 'sleep 900', marker], { stdio: 'ignore' });
    // On every address, so the control plane is reachable on the host's own addresses; the
    // test itself calls it on loopback.
    // A low log rate, so the flood below is cut within the few thousand lines a TCG guest
    // prints in seconds.
    srv = await startServer({
      dataDir: path.join(dir, 'data'),
      host: '0.0.0.0',
      env: { ISOLA_LOG_RATE: String(LOG_RATE), ISOLA_LOG_BURST: String(LOG_BURST) },
    });
    port = Number(new URL(srv.url).port);
    const admin = { ISOLA_URL: srv.url, ISOLA_API_KEY: srv.adminKey };
    for (const t of ['mallory', 'alice']) {
      assert.equal(cli(['tenant', 'create', t], admin).code, 0);
    }
    const keyOf = (t: string) =>
      (JSON.parse(cli(['key', 'create', '--tenant', t, '--json'], admin).stdout) as { key: string })
        .key;
    malloryKey = keyOf('mallory');
    aliceKey = keyOf('alice');
    const m = { ISOLA_URL: srv.url, ISOLA_API_KEY: malloryKey };
    const a = { ISOLA_URL: srv.url, ISOLA_API_KEY: aliceKey };
    const d1 = cli(['deploy', 'atk', ATTACKER, '--timeout', String(ATTACK_TIMEOUT_S)], m);
    assert.equal(d1.code, 0, d1.stderr);
    const d2 = cli(['deploy', 'echo', VICTIM, '--min', '1'], a);
    assert.equal(d2.code, 0, d2.stderr);
    // The default egress policy, as `isola ls` shows it.
    assert.match(cli(['ls'], m).stdout, /^atk\b.*\bpublic\b/m);
    const call =
      (key: string) =>
      (method: string, route: string, o = {}) =>
        api(srv.url, method, route, { key, ...o });
    assert.equal(await snapshotReady(call(malloryKey), malloryKey, 'atk'), 'ready');
    assert.equal(await snapshotReady(call(aliceKey), aliceKey, 'echo'), 'ready');
    // Warm both, then alice's quiet baseline.
    assert.equal((await attack({})).status, 200);
    for (let i = 0; i < 5; i++) await victimCall();
    const lat: number[] = [];
    for (let i = 0; i < BASELINE_CALLS; i++) lat.push(await victimCall());
    baselineMs = median(lat);
  });

  after(async () => {
    try {
      if (rows.length) {
        const lines = [
          `alice's quiet baseline: median ${baselineMs.toFixed(1)} ms`,
          '| attack | expected | outcome | alice p50 (ms) | slowdown | contained |',
          '| --- | --- | --- | --- | --- | --- |',
          ...rows.map(
            (r) =>
              `| ${r.attack} | ${r.expected} | ${r.outcome} | ${r.victimP50Ms} | ${r.slowdown}x | ${r.contained ? 'yes' : 'NO'} |`,
          ),
        ];
        console.log(lines.join('\n'));
        writeFileSync(
          path.join(runDir(), 'abuse-report.json'),
          `${JSON.stringify({ baselineMs, rows }, null, 2)}\n`,
        );
      }
      if (srv) {
        const code = await srv.stop('SIGTERM');
        assert.equal(code, 0, srv.output());
        assert.equal(findQemuProcesses(runDir()).length, 0, 'no QEMU process after the stop');
        assert.deepEqual(leftovers().uplinks, [], 'no uplink left');
      }
    } finally {
      hostProcess?.kill('SIGKILL');
      for (const h of [inet, meta]) await h?.close();
      rmSync(canaryDir, { recursive: true, force: true });
      cleanup(dir);
    }
  });

  test("the host's files and processes are out of reach", async () => {
    const r = await attack({ mode: 'files', canaryPath, marker, hostDir: canaryDir });
    assert.equal(r.status, 200, r.text);
    const body = result<{
      canary: string;
      markerSeen: boolean;
      processes: number;
      hostDir: unknown;
    }>(r);
    assert.equal(body.canary, 'ENOENT', `the canary file on the host is not visible: ${r.text}`);
    assert.equal(body.hostDir, 'ENOENT', "the host's folders are not visible");
    assert.equal(body.markerSeen, false, "the host's processes are not visible");
    assert.ok(body.processes < 100, `the guest sees only its own processes (${body.processes})`);
    rows.push({
      attack: 'read host files, list host processes',
      expected: 'nothing of the host visible',
      outcome: `canary ${body.canary}, ${body.processes} guest processes, host marker not seen`,
      victimP50Ms: Number.NaN,
      slowdown: Number.NaN,
      contained: true,
    });
  });

  test('the host, the control plane, the metadata address and other sandboxes are unreachable', async () => {
    // Alice's instance is one of the first pool slots; every uplink of the pool is tried.
    const pool = Array.from({ length: 8 }, (_, i) => [
      `10.213.0.${4 * i + 1}`,
      `10.213.0.${4 * i + 2}`,
    ]).flat();
    const targets = [
      { host: '198.51.100.10', port: 8080 }, // the internet (allowed: the control)
      { host: nodeAddr, port }, // the control plane on the node's address
      { host: '127.0.0.1', port }, // loopback (the guest's own)
      { host: '169.254.169.254', port: 80 },
      ...pool.map((h) => ({ host: h, port: 22 })),
    ];
    const r = await attack({ mode: 'net', targets });
    assert.equal(r.status, 200, r.text);
    const res = result<Array<{ target: string; ok: boolean; code?: string }>>(r);
    assert.equal(res[0]!.ok, true, 'the internet is reachable (the control)');
    const leaked = res.slice(1).filter((x) => x.ok);
    assert.deepEqual(leaked, [], 'nothing but the internet answers');
    // The host really serves the control plane on that address.
    const direct = await fetch(`http://${nodeAddr}:${port}/v1/health`);
    assert.equal(direct.status, 200);
    rows.push({
      attack: 'reach host services, control plane, metadata, other sandboxes',
      expected: 'refused',
      outcome: `${res.length - 1} targets refused (${[...new Set(res.slice(1).map((x) => x.code))].join(', ')}); internet reachable`,
      victimP50Ms: Number.NaN,
      slowdown: Number.NaN,
      contained: true,
    });
  });

  test('fork bomb', async () => {
    await underAttack(
      'fork bomb',
      { mode: 'forkbomb' },
      'E_FUNCTION_TIMEOUT or E_FUNCTION_CRASHED',
      (r) => ['E_FUNCTION_TIMEOUT', 'E_FUNCTION_CRASHED'].includes(errorCode(r) ?? ''),
    );
  });

  test('memory bomb', async () => {
    await underAttack(
      'memory bomb',
      { mode: 'membomb' },
      'E_FUNCTION_OOM or E_FUNCTION_CRASHED',
      (r) => ['E_FUNCTION_OOM', 'E_FUNCTION_CRASHED'].includes(errorCode(r) ?? ''),
    );
  });

  test('disk fill', async () => {
    await underAttack(
      'disk fill',
      { mode: 'diskfill' },
      'ENOSPC in the guest, or E_FUNCTION_OOM',
      (r) =>
        (r.status === 200 && result<{ error?: string }>(r).error === 'ENOSPC') ||
        ['E_FUNCTION_OOM', 'E_FUNCTION_CRASHED'].includes(errorCode(r) ?? ''),
    );
  });

  test('CPU spin', async () => {
    await underAttack(
      'CPU spin',
      { mode: 'spin' },
      'E_FUNCTION_TIMEOUT',
      (r) => errorCode(r) === 'E_FUNCTION_TIMEOUT',
    );
  });

  test('stdout flood', async () => {
    const r = await underAttack(
      'stdout flood',
      { mode: 'flood', ms: 5000 },
      `completes; lines over ${LOG_RATE}/s (burst ${LOG_BURST}) dropped and counted`,
      (r) => r.status === 200,
    );
    const printed = result<{ lines: number }>(r).lines;
    const stored: Array<{ stream: string; line: string; requestId: string | null }> = [];
    for (let after = 0; ; ) {
      const page = await api(srv.url, 'GET', `/v1/functions/atk/logs?after=${after}&limit=10000`, {
        key: malloryKey,
      });
      assert.equal(page.status, 200, page.text);
      const b = page.body as { lines: typeof stored; next: number };
      stored.push(...b.lines);
      if (b.lines.length < 10000) break;
      after = b.next;
    }
    const requestId = (r.body as { requestId: string }).requestId;
    const kept = stored.filter((l) => l.requestId === requestId && l.stream === 'stdout').length;
    const notices = stored.filter((l) => l.stream === 'system' && /over the log rate/.test(l.line));
    const dropped = notices.reduce((n, l) => n + Number(/^(\d+)/.exec(l.line)?.[1] ?? 0), 0);
    // What the bucket allows over the invocation (burst + rate x duration, with slack).
    const allowance =
      LOG_BURST + LOG_RATE * ((r.body as { durationMs: number }).durationMs / 1000 + 2);
    assert.ok(printed > allowance, `the flood outran the rate (${printed} lines printed)`);
    assert.ok(kept <= allowance, `${kept} lines stored, at most ${allowance} allowed`);
    assert.ok(dropped > 0 && kept + dropped >= printed * 0.99, `drops counted: ${dropped}`);
    rows.at(-1)!.outcome =
      `200; ${printed} lines printed, ${kept} stored, ${dropped} dropped and counted`;
  });

  test('thousands of open connections', async () => {
    const r = await underAttack(
      'thousands of connections',
      { mode: 'conns', host: '198.51.100.10', port: 8081, count: 1200, wave: 100 },
      'throttled: at most 1024 open, new ones over 200/s refused',
      (r) => r.status === 200 && result<{ connected: number }>(r).connected <= 1024,
    );
    const body = result<{ connected: number; errors: Record<string, number> }>(r);
    assert.ok(body.connected > 0, 'some connections are allowed');
    rows.at(-1)!.outcome = `${body.connected} of 1200 connected; ${JSON.stringify(body.errors)}`;
  });
});
