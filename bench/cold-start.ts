// Cold-start benchmark (issue 6). Through the gateway of a real `isola serve`, a trivial Node.js
// function (bench/functions/noop):
//   restored   first invocation at zero, the instance restored from the function's snapshot
//              (pre-spawned VMMs are parked at zero, so this includes spawning QEMU);
//   warm       an invocation on a warm instance;
//   booted     first invocation at zero on a server with snapshots off (ISOLA_SNAPSHOTS=0);
//   burst      100 concurrent first invocations over 20 functions at zero (time to the last
//              answer, errors);
// and at the sandbox level, from the same function snapshot:
//   restore    restore latency with a pre-spawned VMM and without, and restores per second;
//   density    idle restored clones: unique memory (USS) and PSS per clone, and how many this
//              machine holds by that measure.
// Writes bench/results/cold-start.json and cold-start.md.   npm run bench:cold-start
//
// Times are end to end at the client (node:http, keep-alive) unless said otherwise. Start
// kinds come from the X-Isola-Start header: a sample whose kind is not the one measured is
// counted and left out.

import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { RuntimeChannel } from '../src/platform/instance.js';
import { MicroVmDriver } from '../src/sandbox/drivers/microvm.js';
import type { Sandbox } from '../src/sandbox/sandbox.js';
import { type BenchServer, ROOT, deployNoop, startServer, stopServer } from './server.js';
import { type Summary, percentile, summarize, writeResults } from './stats.js';
const N = Number(process.env.BENCH_N ?? 50);
const BOOTED_N = Number(process.env.BENCH_BOOTED_N ?? N);
const DENSITY_N = Number(process.env.BENCH_DENSITY_N ?? 40);
const RESTORE_N = Number(process.env.BENCH_RESTORE_N ?? 30);
const BURST_FUNCTIONS = 20;
const BURST_REQUESTS = 100;
const IDLE_S = 1;
/** How long the idle clones' CPU use is measured. */
const IDLE_CPU_WINDOW_S = 10;
/** BENCH_ONLY=burst,warm,... runs only those phases (restored, warm, burst, sandbox, booted). */
const ONLY = process.env.BENCH_ONLY?.split(',') ?? null;
const want = (phase: string) => ONLY === null || ONLY.includes(phase);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function snapshotReady(s: BenchServer, name: string): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    const r = await fetch(`${s.url}/v1/functions/${name}`, {
      headers: { authorization: `Bearer ${s.key}` },
    });
    const state = ((await r.json()) as { snapshot: string }).snapshot;
    if (state === 'ready') return;
    if (state === 'failed') throw new Error(`snapshot of ${name} failed`);
    await sleep(250);
  }
  throw new Error(`snapshot of ${name} not ready`);
}

/** The client: node:http with keep-alive (fetch costs ~1-2 ms more per request here). */
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function invoke(
  s: BenchServer,
  name: string,
): Promise<{ ms: number; kind: string; startMs: number; ok: boolean }> {
  const t0 = performance.now();
  const body = '{"n":1}';
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${s.url}/v1/functions/${name}/invoke`,
      {
        method: 'POST',
        agent,
        headers: {
          authorization: `Bearer ${s.key}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          resolve({
            ms: performance.now() - t0,
            kind: String(res.headers['x-isola-start'] ?? '?'),
            startMs: Number(res.headers['x-isola-start-ms'] ?? Number.NaN),
            ok: status >= 200 && status < 300,
          });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function instanceCount(s: BenchServer): Promise<number> {
  const r = await fetch(`${s.url}/v1/instances`, { headers: { authorization: `Bearer ${s.key}` } });
  return ((await r.json()) as { instances: unknown[] }).instances.length;
}

async function untilZero(s: BenchServer): Promise<void> {
  for (let i = 0; i < 200 && (await instanceCount(s)) > 0; i++) await sleep(100);
}

/** Cold starts at zero, one after another: wait for zero, invoke, keep the sample if `kind`. */
async function coldSeries(
  s: BenchServer,
  name: string,
  kind: string,
  n: number,
): Promise<{ total: Summary; start: Summary; other: Record<string, number> }> {
  const total: number[] = [];
  const start: number[] = [];
  const other: Record<string, number> = {};
  while (total.length < n) {
    await untilZero(s);
    const r = await invoke(s, name);
    if (!r.ok) throw new Error(`${name}: invocation failed`);
    if (r.kind !== kind) {
      other[r.kind] = (other[r.kind] ?? 0) + 1;
      if ((other[r.kind] ?? 0) > n) throw new Error(`never ${kind}: ${JSON.stringify(other)}`);
      continue;
    }
    total.push(r.ms);
    start.push(r.startMs);
    process.stderr.write(`\r[bench] ${kind} ${total.length}/${n} ${Math.round(r.ms)} ms   `);
  }
  process.stderr.write('\n');
  return { total: summarize(total), start: summarize(start), other };
}

/** Unique (private) and proportional memory of a process, from smaps_rollup (MiB). */
function memoryOf(pid: number): { uss: number; pss: number; rss: number } {
  const t = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(t)?.[1] ?? 0);
  return {
    uss: (kb('Private_Clean') + kb('Private_Dirty')) / 1024,
    pss: kb('Pss') / 1024,
    rss: kb('Rss') / 1024,
  };
}

/** User + system CPU time of a process (seconds). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function memAvailableMiB(): number {
  const t = readFileSync('/proc/meminfo', 'utf8');
  return Number(/^MemAvailable:\s+(\d+)/m.exec(t)?.[1] ?? 0) / 1024;
}

/** One invocation on a clone, as an instance makes it (restore frame, then an invoke). */
/**
 * One invocation on a clone, as an instance makes it (restore frame, then an invoke). The
 * channel stays open, as an instance keeps it: with no host on its port the runtime polls it.
 */
async function touch(sb: Sandbox, meta: Record<string, unknown>): Promise<RuntimeChannel> {
  const rt = new RuntimeChannel(
    await sb.functionChannel(),
    1 + (randomBytes(3).readUIntBE(0, 3) | 0),
  );
  rt.notify({ t: 'restore', seed: randomBytes(32).toString('hex'), env: {} });
  await rt.call(
    { t: 'invoke', requestId: `bench-${meta.execId}`, deadline: Date.now() + 30_000 },
    Buffer.from('{"n":1}'),
    30_000,
  );
  return rt;
}

async function sandboxLevel(snapDir: string) {
  const driver = new MicroVmDriver();
  // Restore latency without and with a pre-spawned VMM (one clone at a time).
  const spawned: number[] = [];
  const prespawned: number[] = [];
  for (let i = 0; i < RESTORE_N; i++) {
    const a = await driver.fromSnapshot(snapDir);
    let t0 = performance.now();
    await a.start();
    spawned.push(performance.now() - t0);
    await a.destroy();
    const b = await driver.fromSnapshot(snapDir);
    await b.prepare();
    t0 = performance.now();
    await b.start();
    prespawned.push(performance.now() - t0);
    await b.destroy();
  }
  // Restores per second: RESTORE_N clones, two at a time (this machine has two CPUs).
  const tRate = performance.now();
  const queue = Array.from({ length: RESTORE_N }, (_, i) => i);
  await Promise.all(
    [0, 1].map(async () => {
      while (queue.shift() !== undefined) {
        const c = await driver.fromSnapshot(snapDir);
        await c.start();
        await c.destroy();
      }
    }),
  );
  const perSecond = RESTORE_N / ((performance.now() - tRate) / 1000);
  // Density: DENSITY_N idle clones, each invoked once, then measured after they settle.
  const availBefore = memAvailableMiB();
  const clones: Sandbox[] = [];
  const channels: RuntimeChannel[] = [];
  const meta = JSON.parse(readFileSync(path.join(snapDir, 'snapshot.json'), 'utf8')) as {
    extra: Record<string, unknown>;
  };
  try {
    for (let i = 0; i < DENSITY_N; i++) {
      const c = await driver.fromSnapshot(snapDir);
      clones.push(c);
      await c.start();
      channels.push(await touch(c, meta.extra));
      process.stderr.write(`\r[bench] density ${i + 1}/${DENSITY_N}   `);
    }
    process.stderr.write('\n');
    await sleep(3000);
    const mems = clones.map((c) => memoryOf(c.vmmPid!));
    // CPU the idle clones use (QEMU user + system time over IDLE_CPU_WINDOW_S).
    const pids = clones.map((c) => c.vmmPid!);
    const cpu0 = pids.map(cpuSeconds);
    await sleep(IDLE_CPU_WINDOW_S * 1000);
    const idleCpu = pids.map((p, i) => ((cpuSeconds(p) - cpu0[i]!) / IDLE_CPU_WINDOW_S) * 100);
    const availAfter = memAvailableMiB();
    const uss = mems.map((m) => m.uss);
    const pss = mems.map((m) => m.pss);
    const ussMean = uss.reduce((a, b) => a + b, 0) / uss.length;
    const usedPerClone = (availBefore - availAfter) / DENSITY_N;
    return {
      restore: {
        spawnedVmm: summarize(spawned),
        prespawnedVmm: summarize(prespawned),
        restoresPerSecond: Math.round(perSecond * 10) / 10,
      },
      density: {
        clones: DENSITY_N,
        ussMiB: summarize(uss),
        pssMiB: summarize(pss),
        rssMiB: summarize(mems.map((m) => m.rss)),
        memAvailableDropPerCloneMiB: Math.round(usedPerClone * 10) / 10,
        /** Percent of one host CPU each idle clone uses (guest timers, QEMU's main loop). */
        idleCpuPercent: summarize(idleCpu),
        /** Idle clones the host's CPUs carry at that rate (the limit before memory is). */
        projectedClonesByIdleCpu: Math.floor(
          (os.cpus().length * 100) / Math.max(percentile(idleCpu, 50), 0.01),
        ),
        memTotalMiB: Math.round(os.totalmem() / 1048576),
        memAvailableBeforeMiB: Math.round(availBefore),
        /** Idle restored clones the memory available before the run holds, at the mean USS. */
        projectedClonesByUss: Math.floor(availBefore / ussMean),
        /** The same at the measured drop in MemAvailable per clone (page cache included). */
        projectedClonesByMemAvailable: Math.floor(availBefore / Math.max(usedPerClone, 1)),
      },
    };
  } finally {
    for (const rt of channels) rt.close();
    await Promise.all(clones.map((c) => c.destroy()));
  }
}

async function main(): Promise<void> {
  const results: Record<string, unknown> = {
    when: new Date().toISOString(),
    host: { cpus: os.cpus().length, memMiB: Math.round(os.totalmem() / 1048576) },
  };
  // Phase 1: snapshots on.
  const s = await startServer('cold');
  try {
    await deployNoop(s, 'noop', { idleTimeoutS: IDLE_S, concurrency: 1 });
    await snapshotReady(s, 'noop');
    if (want('restored')) results.restored = await coldSeries(s, 'noop', 'restored', N);
    if (want('warm')) {
      const warm: number[] = [];
      // The instance a restore just made: let it run its first requests, then measure.
      for (let i = 0; i < 50; i++) await invoke(s, 'noop');
      for (let i = 0; i < Math.max(N, 200); i++) {
        const r = await invoke(s, 'noop');
        if (r.kind === 'warm') warm.push(r.ms);
      }
      results.warm = { total: summarize(warm) };
    }
    // Burst.
    for (let i = 0; i < (want('burst') ? BURST_FUNCTIONS : 0); i++) {
      await deployNoop(s, `b${i}`, { idleTimeoutS: IDLE_S });
    }
    for (let i = 0; i < (want('burst') ? BURST_FUNCTIONS : 0); i++) await snapshotReady(s, `b${i}`);
    await untilZero(s);
    const t0 = performance.now();
    const burst = await Promise.all(
      Array.from({ length: want('burst') ? BURST_REQUESTS : 0 }, (_, i) =>
        invoke(s, `b${i % BURST_FUNCTIONS}`),
      ),
    );
    const kinds: Record<string, number> = {};
    for (const r of burst) kinds[r.kind] = (kinds[r.kind] ?? 0) + 1;
    if (want('burst'))
      results.burst = {
        functions: BURST_FUNCTIONS,
        requests: BURST_REQUESTS,
        lastResponseMs: Math.round(performance.now() - t0),
        errors: burst.filter((r) => !r.ok).length,
        starts: kinds,
        latency: summarize(burst.map((r) => r.ms)),
      };
    await untilZero(s);
    // Sandbox level, from the noop function's snapshot.
    const snaps = path.join(s.dir, 'data/snapshots');
    const fn = readdirSync(snaps).find((n) => n.startsWith('fn-'));
    if (!fn) throw new Error('no function snapshot');
    if (want('sandbox')) Object.assign(results, await sandboxLevel(path.join(snaps, fn)));
  } finally {
    await stopServer(s);
  }
  // Phase 2: snapshots off (every start boots), same function.
  if (want('booted')) {
    const b = await startServer('cold-booted', { ISOLA_SNAPSHOTS: '0' });
    try {
      await deployNoop(b, 'noop', { idleTimeoutS: IDLE_S, concurrency: 1 });
      results.booted = await coldSeries(b, 'noop', 'booted', BOOTED_N);
    } finally {
      await stopServer(b);
    }
  }
  if (ONLY !== null) {
    // A partial run updates its phases in the last full run's results.
    const file = path.join(ROOT, 'bench/results/cold-start.json');
    const last = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    const { when, ...fresh } = results;
    Object.assign(last, fresh, { updated: { phases: ONLY, at: when } });
    Object.assign(results, last);
  }

  const row = (name: string, d: Summary) =>
    `| ${name} | ${d.n} | ${d.p50} | ${d.p95} | ${d.p99} | ${d.min} | ${d.max} |`;
  const r = results as {
    restored: { total: Summary; start: Summary };
    booted: { total: Summary; start: Summary };
    warm: { total: Summary };
    burst: { lastResponseMs: number; errors: number; starts: Record<string, number> };
    restore: { spawnedVmm: Summary; prespawnedVmm: Summary; restoresPerSecond: number };
    density: {
      ussMiB: Summary;
      pssMiB: Summary;
      clones: number;
      projectedClonesByUss: number;
      projectedClonesByMemAvailable: number;
      memAvailableDropPerCloneMiB: number;
      idleCpuPercent: Summary;
      projectedClonesByIdleCpu: number;
    };
  };
  const md = [
    '# Cold start (bench/cold-start.ts)',
    '',
    `${results.when}, ${os.cpus().length} CPUs, accelerator from \`isola doctor\`. Milliseconds; end to end at the client unless said.${results.updated ? ` Phases ${JSON.stringify((results.updated as { phases: string[] }).phases)} re-run at ${(results.updated as { at: string }).at}.` : ''}`,
    '',
    '| start | n | p50 | p95 | p99 | min | max |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    row('booted (snapshots off), end to end', r.booted.total),
    row('booted: X-Isola-Start-Ms', r.booted.start),
    row('restored from zero, end to end', r.restored.total),
    row('restored: X-Isola-Start-Ms', r.restored.start),
    row('warm, end to end', r.warm.total),
    row('sandbox restore, VMM spawned', r.restore.spawnedVmm),
    row('sandbox restore, VMM pre-spawned', r.restore.prespawnedVmm),
    '',
    `Ratio booted / restored (p50, end to end): ${(r.booted.total.p50 / r.restored.total.p50).toFixed(1)}x.`,
    '',
    `Burst: ${BURST_REQUESTS} first invocations over ${BURST_FUNCTIONS} functions at zero: last answer after ${r.burst.lastResponseMs} ms, ${r.burst.errors} errors, starts ${JSON.stringify(r.burst.starts)}.`,
    '',
    `Restores per second (sandbox level, two at a time): ${r.restore.restoresPerSecond}.`,
    '',
    `Density: ${r.density.clones} idle restored clones (each invoked once): USS p50 ${r.density.ussMiB.p50} MiB (max ${r.density.ussMiB.max}), PSS p50 ${r.density.pssMiB.p50} MiB; MemAvailable fell ${r.density.memAvailableDropPerCloneMiB} MiB per clone. This machine holds about ${r.density.projectedClonesByUss} such clones by USS, ${r.density.projectedClonesByMemAvailable} by the MemAvailable drop. Idle, each uses ${r.density.idleCpuPercent.p50} % of a host CPU (p95 ${r.density.idleCpuPercent.p95}): by CPU the ${os.cpus().length} CPUs carry about ${r.density.projectedClonesByIdleCpu} idle clones.`,
    '',
  ].join('\n');
  const out = writeResults(path.join(ROOT, 'bench/results'), 'cold-start', results, md);
  process.stdout.write(`${md}\nwritten: ${out.json}, ${out.md}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
