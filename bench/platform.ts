// Warm-invoke benchmark through the gateway: a real `isola serve`, one trivial Node.js function
// kept warm (one instance, many requests at once), then
//   1. closed loops of 1 and 8 clients (Node fetch, keep-alive): end-to-end latency and the
//      platform's own overhead = the gateway's total time minus the handler's time in the guest
//      (both from the Server-Timing header);
//   2. wrk (Debian) with 1, 8 and 32 connections: requests/s and latency p50/p99, errors.
// Writes bench/results/platform.json and platform.md.   npm run bench:platform

import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../src/util/ports.js';
import { ROOT, deployNoop, startServer, stopServer } from './server.js';
import { percentile, writeResults } from './stats.js';
const SEQ_N = Number(process.env.BENCH_N ?? 300);
const WRK_SECONDS = Number(process.env.BENCH_WRK_SECONDS ?? 10);
/**
 * Load before anything is measured: the instance is a clone of a snapshot whose runtime ran
 * only a few invocations, so V8 optimises the invocation path during its first thousands of
 * requests, and under TCG those compiles take seconds of the guest's one vCPU.
 */
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 15);
/** The target is at 8 connections and a 2-CPU machine is noisy: that run is repeated, the median kept. */
const C8_RUNS = Math.max(1, Number(process.env.BENCH_C8_RUNS ?? 5));
/**
 * For experiments: BENCH_WRK_ONLY=8,32 runs only the warm-up and wrk at those connection counts
 * (no loops, no peer), prints the runs and writes no results.
 */
const WRK_ONLY = process.env.BENCH_WRK_ONLY?.split(',').map(Number) ?? null;

async function main(): Promise<void> {
  const srv = await startServer('platform');
  const { url, key, dir } = srv;
  try {
    await deployNoop(srv, 'noop', { concurrency: 64, maxInstances: 1 });
    const invokeUrl = `${url}/v1/functions/noop/invoke`;
    const once = async () => {
      const t0 = performance.now();
      const r = await fetch(invokeUrl, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: '{"n":1}',
      });
      await r.arrayBuffer();
      const ms = performance.now() - t0;
      if (r.status !== 200) throw new Error(`invoke ${r.status}`);
      const timing = Object.fromEntries(
        (r.headers.get('server-timing') ?? '').split(',').map((p) => {
          const [name, dur] = p.trim().split(';dur=');
          return [name, Number(dur)];
        }),
      ) as Record<string, number>;
      return {
        ms,
        handler: timing.handler ?? 0,
        total: timing.total ?? ms,
        instance: timing.instance ?? 0,
      };
    };
    const cold = await once();
    process.stderr.write(`[bench] first invoke (boot) ${cold.ms.toFixed(0)} ms\n`);
    for (let i = 0; i < 20; i++) await once();

    const loops: Record<string, unknown> = {};
    const lua = path.join(dir, 'post.lua');
    writeFileSync(
      lua,
      [
        'wrk.method = "POST"',
        'wrk.body = "{\\"n\\":1}"',
        'wrk.headers["Content-Type"] = "application/json"',
        `wrk.headers["Authorization"] = "Bearer ${key}"`,
        // Per response, from Server-Timing: the overhead (total - handler) and its two parts, the
        // gateway's (total - instance) and the relay's (instance - handler: host -> guest ->
        // runtime and back); kept per thread and merged in done().
        'local threads = {}',
        'setup = function(thread) table.insert(threads, thread) end',
        'init = function(args) over = {} gw = {} relay = {} bad = {} end',
        'response = function(status, headers, body)',
        '  if status ~= 200 then bad[status] = (bad[status] or 0) + 1 end',
        '  local st = headers["server-timing"] or headers["Server-Timing"]',
        '  if st then',
        '    local total = tonumber(string.match(st, "total;dur=([%d%.]+)"))',
        '    local inst = tonumber(string.match(st, "instance;dur=([%d%.]+)")) or 0',
        '    local handler = tonumber(string.match(st, "handler;dur=([%d%.]+)")) or 0',
        '    if total then',
        '      over[#over + 1] = total - handler',
        '      gw[#gw + 1] = total - inst',
        '      relay[#relay + 1] = inst - handler',
        '    end',
        '  end',
        'end',
        'local function merged(name)',
        '  local all = {}',
        '  for _, t in ipairs(threads) do for _, v in ipairs(t:get(name) or {}) do all[#all + 1] = v end end',
        '  table.sort(all)',
        '  return all',
        'end',
        'local function pct(all, p) if #all == 0 then return -1 end return all[math.max(1, math.ceil(p / 100 * #all))] end',
        'done = function(summary, latency, requests)',
        '  local o, g, r = merged("over"), merged("gw"), merged("relay")',
        '  local b = {}',
        '  for _, t in ipairs(threads) do for k, v in pairs(t:get("bad") or {}) do b[k] = (b[k] or 0) + v end end',
        '  local bs = {}',
        '  for k, v in pairs(b) do bs[#bs + 1] = string.format("\\"%d\\":%d", k, v) end',
        '  local e = summary.errors',
        '  io.write(string.format("WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"non2xx\\":%d,\\"socket_errors\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d,\\"over_p50_ms\\":%.3f,\\"over_p99_ms\\":%.3f,\\"gw_p50_ms\\":%.3f,\\"gw_p99_ms\\":%.3f,\\"relay_p50_ms\\":%.3f,\\"relay_p99_ms\\":%.3f,\\"statuses\\":{%s}}\\n",',
        '    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,',
        '    latency:percentile(50), latency:percentile(99), pct(o, 50), pct(o, 99), pct(g, 50), pct(g, 99), pct(r, 50), pct(r, 99), table.concat(bs, ",")))',
        'end',
        '',
      ].join('\n'),
    );
    // Where the machine's CPU went during a run: the gateway's process, every VMM (the guest's
    // vCPU thread is most of a VMM's) and wrk (this process's waited-for children: wrk is the
    // only child spawnSync waits for during a run), in clock ticks from /proc/PID/stat.
    const ticks = (pid: number | 'self', children = false) => {
      try {
        const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
        // utime + stime, or cutime + cstime
        return children ? Number(x[13]) + Number(x[14]) : Number(x[11]) + Number(x[12]);
      } catch {
        return 0;
      }
    };
    const childTicks = () => ticks('self', true);
    // The gateway's garbage-collection pauses (isola_gc_pause_seconds on its /metrics): count
    // and total seconds by kind.
    const gcNow = async () => {
      // A connection of its own: a pooled keep-alive socket idle since the loops above was
      // closed under fetch once ("other side closed").
      const text = await new Promise<string>((resolve, reject) => {
        http
          .get(
            `${url}/metrics`,
            { agent: false, headers: { authorization: `Bearer ${srv.admin}` } },
            (res) => {
              let b = '';
              res.setEncoding('utf8');
              res.on('data', (d: string) => {
                b += d;
              });
              res.on('end', () => resolve(b));
            },
          )
          .on('error', reject);
      });
      const by: Record<string, { n: number; s: number }> = {};
      for (const m of text.matchAll(
        /^isola_gc_pause_seconds_(count|sum)\{kind="(\w+)"\} (\S+)$/gm,
      )) {
        by[m[2]!] ??= { n: 0, s: 0 };
        if (m[1] === 'count') by[m[2]!]!.n = Number(m[3]);
        else by[m[2]!]!.s = Number(m[3]);
      }
      return by;
    };
    const gcDelta = (
      a: Awaited<ReturnType<typeof gcNow>>,
      b: Awaited<ReturnType<typeof gcNow>>,
      secs: number,
    ) =>
      Object.fromEntries(
        Object.entries(b).map(([kind, x]) => {
          const n = x.n - (a[kind]?.n ?? 0);
          const s = x.s - (a[kind]?.s ?? 0);
          return [
            kind,
            {
              perSecond: Math.round((n / secs) * 10) / 10,
              meanPauseMs: n > 0 ? Math.round((s / n) * 1e5) / 100 : 0,
              pausedPercent: Math.round((s / secs) * 1e4) / 100,
            },
          ];
        }),
      );
    const vmmPids = () =>
      spawnSync('pgrep', ['-x', 'qemu-system-x86'], { encoding: 'utf8' })
        .stdout.split('\n')
        .filter(Boolean)
        .map(Number);
    const runWrk = (c: number, target: string, seconds = WRK_SECONDS) => {
      const vmms = vmmPids();
      const cpu0 = {
        gateway: ticks(srv.proc.pid!),
        vmm: vmms.reduce((a, p) => a + ticks(p), 0),
        wrk: childTicks(),
      };
      const t0 = performance.now();
      const out = spawnSync(
        'wrk',
        [
          '-t',
          String(Math.min(c, 2)),
          '-c',
          String(c),
          '-d',
          `${seconds}s`,
          '--timeout',
          '30s',
          '-s',
          lua,
          target,
        ],
        { encoding: 'utf8' },
      );
      const secs = (performance.now() - t0) / 1000;
      const line = /WRKJSON (\{.*\})/.exec(out.stdout)?.[1];
      if (!line) throw new Error(`wrk failed: ${out.stdout} ${out.stderr}`);
      const w = JSON.parse(line) as {
        requests: number;
        duration_us: number;
        non2xx: number;
        socket_errors: number;
        p50_us: number;
        p99_us: number;
        over_p50_ms: number;
        over_p99_ms: number;
        gw_p50_ms: number;
        gw_p99_ms: number;
        relay_p50_ms: number;
        relay_p99_ms: number;
        statuses: Record<string, number>;
      };
      return {
        connections: c,
        requests: w.requests,
        rps: Math.round((w.requests / (w.duration_us / 1e6)) * 10) / 10,
        latencyMs: { p50: w.p50_us / 1000, p99: w.p99_us / 1000 },
        // -1: the peer sends no Server-Timing
        overheadMs: w.over_p50_ms < 0 ? null : { p50: w.over_p50_ms, p99: w.over_p99_ms },
        // its parts: the gateway on the host, and the relay (host -> guest -> runtime and back)
        ...(w.over_p50_ms < 0
          ? {}
          : {
              gatewayMs: { p50: w.gw_p50_ms, p99: w.gw_p99_ms },
              relayMs: { p50: w.relay_p50_ms, p99: w.relay_p99_ms },
            }),
        errors: w.non2xx + w.socket_errors,
        // the non-2xx responses by status, when there were any
        ...(w.non2xx > 0 ? { errorStatuses: w.statuses } : {}),
        cpuPercent: {
          // clock ticks are 1/100 s: ticks per second is percent of one CPU
          gateway: Math.round(((ticks(srv.proc.pid!) - cpu0.gateway) * 10) / secs) / 10,
          vmm: Math.round(((vmms.reduce((a, p) => a + ticks(p), 0) - cpu0.vmm) * 10) / secs) / 10,
          wrk: Math.round(((childTicks() - cpu0.wrk) * 10) / secs) / 10,
        },
      };
    };
    process.stderr.write(
      `[bench] warm-up, ${WARMUP_SECONDS} s at 8 connections: ${runWrk(8, invokeUrl, WARMUP_SECONDS).rps} req/s\n`,
    );
    type Run = ReturnType<typeof runWrk>;
    /** wrk at `c` connections through the gateway: C8_RUNS runs at 8 (the target), else one. */
    const load = (c: number): Run[] => {
      const got: Run[] = [];
      for (let i = 0; i < (c === 8 ? C8_RUNS : 1); i++) {
        got.push(runWrk(c, invokeUrl));
        process.stderr.write(`[bench] wrk -c ${c}: ${JSON.stringify(got[i])}\n`);
      }
      return got;
    };
    if (WRK_ONLY) {
      for (const c of WRK_ONLY) load(c);
      return;
    }
    for (const clients of [1, 8]) {
      const lat: number[] = [];
      const over: number[] = [];
      const gateway: number[] = [];
      const relay: number[] = [];
      let errors = 0;
      const per = Math.ceil(SEQ_N / clients);
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: clients }, async () => {
          for (let i = 0; i < per; i++) {
            try {
              const r = await once();
              lat.push(r.ms);
              over.push(r.total - r.handler);
              gateway.push(r.total - r.instance);
              relay.push(r.instance - r.handler);
            } catch {
              errors++;
            }
          }
        }),
      );
      const secs = (performance.now() - t0) / 1000;
      const r2 = (x: number) => Math.round(x * 100) / 100;
      loops[`clients${clients}`] = {
        clients,
        requests: lat.length,
        errors,
        rps: r2(lat.length / secs),
        latencyMs: { p50: r2(percentile(lat, 50)), p99: r2(percentile(lat, 99)) },
        overheadMs: { p50: r2(percentile(over, 50)), p99: r2(percentile(over, 99)) },
        // host side: HTTP, auth, store lookups, pool, the metering write
        gatewayMs: { p50: r2(percentile(gateway, 50)), p99: r2(percentile(gateway, 99)) },
        // host -> agent -> runtime and back, less the handler
        relayMs: { p50: r2(percentile(relay, 50)), p99: r2(percentile(relay, 99)) },
      };
      process.stderr.write(
        `[bench] loop ${clients}: ${JSON.stringify(loops[`clients${clients}`])}\n`,
      );
    }

    // Peer: the same handler in a plain Node.js HTTP server on the host (no VM, no isolation),
    // measured by the same wrk in the same run: what the micro-VM and the platform cost.
    const peerPort = await freePort();
    const peer = spawn(
      process.execPath,
      [
        '-e',
        `import('${path.join(ROOT, 'bench/functions/noop/index.js')}').then(({ default: h }) => require('node:http').createServer((q, s) => { let b = ''; q.on('data', (d) => (b += d)); q.on('end', async () => { const r = await h(JSON.parse(b || 'null'), {}); const t = JSON.stringify({ result: r }); s.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(t) }); s.end(t); }); }).listen(${peerPort}, '127.0.0.1'))`,
      ],
      { stdio: 'ignore' },
    );
    await new Promise((r) => setTimeout(r, 500));
    const peerWrk: Record<string, unknown> = {};
    try {
      for (const c of [1, 8, 32]) {
        peerWrk[`c${c}`] = runWrk(c, `http://127.0.0.1:${peerPort}/`);
        process.stderr.write(`[bench] peer wrk -c ${c}: ${JSON.stringify(peerWrk[`c${c}`])}\n`);
      }
    } finally {
      peer.kill('SIGKILL');
    }
    const wrk: Record<string, unknown> = {};
    let c8Runs: Run[] = [];
    let gatewayGc: ReturnType<typeof gcDelta> | null = null;
    for (const c of [1, 8, 32]) {
      const gc0 = c === 8 ? await gcNow() : null;
      const t0 = performance.now();
      const got = load(c);
      if (gc0) gatewayGc = gcDelta(gc0, await gcNow(), (performance.now() - t0) / 1000);
      // The run with the median overhead p50 stands for the load (runs sorted by it).
      got.sort((a, b) => (a.overheadMs?.p50 ?? 0) - (b.overheadMs?.p50 ?? 0));
      wrk[`c${c}`] = got[Math.floor((got.length - 1) / 2)];
      if (c === 8) c8Runs = got;
    }
    wrk.c8Runs = c8Runs;
    const c8p99 = c8Runs.map((x) => x.overheadMs?.p99 ?? Number.NaN);
    const c8Summary = {
      runs: c8Runs.length,
      overheadP50Median: percentile(
        c8Runs.map((x) => x.overheadMs?.p50 ?? Number.NaN),
        50,
      ),
      overheadP99Median: percentile(c8p99, 50),
      runsWithP99AtMost10Ms: c8p99.filter((x) => x <= 10).length,
    };
    const result = {
      when: new Date().toISOString(),
      host: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? '' },
      function: 'bench/functions/noop (Node.js, 256 MiB, one instance, 64 requests at once)',
      warmupSeconds: WARMUP_SECONDS,
      coldStartMs: Math.round(cold.ms),
      loops,
      wrk,
      c8Summary,
      // the gateway's garbage collection over the runs at 8 connections (its /metrics)
      gatewayGc,
      peerHostNodeWrk: peerWrk,
    };
    const L = loops as Record<
      string,
      {
        gatewayMs: { p50: number; p99: number };
        relayMs: { p50: number; p99: number };
        rps: number;
        latencyMs: { p50: number; p99: number };
        overheadMs: { p50: number; p99: number };
        errors: number;
      }
    >;
    const P = peerWrk as Record<
      string,
      { rps: number; latencyMs: { p50: number; p99: number }; errors: number }
    >;
    const W = wrk as Record<
      string,
      {
        rps: number;
        latencyMs: { p50: number; p99: number };
        overheadMs: { p50: number; p99: number } | null;
        cpuPercent: { gateway: number; vmm: number; wrk: number };
        errors: number;
      }
    >;
    const md = [
      '# Warm invoke through the gateway',
      '',
      `${result.when}, ${result.host.cpus} CPUs, TCG. Function: ${result.function}. Measured after ${WARMUP_SECONDS} s of load at 8 connections (the clone's V8 optimises the invocation path meanwhile).`,
      '',
      '| load | requests/s | latency p50 (ms) | latency p99 (ms) | overhead p50 (ms) | overhead p99 (ms) | errors | CPU gateway / VMMs / wrk (% of one) |',
      '| --- | --- | --- | --- | --- | --- | --- | --- |',
      ...[1, 8].map((c) => {
        const x = L[`clients${c}`]!;
        return `| ${c} client(s), Node fetch | ${x.rps} | ${x.latencyMs.p50} | ${x.latencyMs.p99} | ${x.overheadMs.p50} | ${x.overheadMs.p99} | ${x.errors} | - |`;
      }),
      ...[1, 8, 32].map((c) => {
        const x = W[`c${c}`]!;
        return `| wrk -c ${c} | ${x.rps} | ${x.latencyMs.p50} | ${x.latencyMs.p99} | ${x.overheadMs?.p50 ?? '-'} | ${x.overheadMs?.p99 ?? '-'} | ${x.errors} | ${x.cpuPercent.gateway} / ${x.cpuPercent.vmm} / ${x.cpuPercent.wrk} |`;
      }),
      ...[1, 8, 32].map((c) => {
        const x = P[`c${c}`]!;
        return `| peer: same handler, plain Node.js HTTP server on the host, wrk -c ${c} | ${x.rps} | ${x.latencyMs.p50} | ${x.latencyMs.p99} | - | - | ${x.errors} | - |`;
      }),
      '',
      `wrk -c 8 ran ${c8Runs.length} times; the row is the run with the median overhead p50. Over the runs: overhead p50 median ${c8Summary.overheadP50Median} ms, p99 median ${c8Summary.overheadP99Median} ms, p99 at most 10 ms in ${c8Summary.runsWithP99AtMost10Ms} of ${c8Summary.runs}. All runs (requests/s, overhead p50 / p99 ms, gateway part p99 / relay part p99 ms, CPU gateway / VMMs / wrk): ${c8Runs.map((x) => `${x.rps} (${x.overheadMs?.p50} / ${x.overheadMs?.p99}; ${x.gatewayMs?.p99} / ${x.relayMs?.p99}; ${x.cpuPercent.gateway} / ${x.cpuPercent.vmm} / ${x.cpuPercent.wrk})`).join(', ')}.`,
      '',
      `The gateway's garbage collection over those runs (isola_gc_pause_seconds): ${Object.entries(
        gatewayGc ?? {},
      )
        .map(
          ([k, g]) =>
            `${k} ${g.perSecond}/s, mean pause ${g.meanPauseMs} ms (${g.pausedPercent} % of the time)`,
        )
        .join('; ')}.`,
      '',
      `Of the overhead at 1 client (p50): gateway on the host ${L.clients1!.gatewayMs.p50} ms (HTTP, auth, store lookups, pool, metering write), host-guest relay and runtime ${L.clients1!.relayMs.p50} ms.`,
      '',
      "Overhead = the gateway's time from request in to response out (Server-Timing total) minus the handler time the runtime measured in the guest (Server-Timing handler): HTTP, auth, routing, pool, the host-guest relay and the runtime's framing.",
      '',
    ].join('\n');
    const files = writeResults(path.join(ROOT, 'bench/results'), 'platform', result, md);
    process.stdout.write(`${md}\nwrote ${files.json} and ${files.md}\n`);
  } finally {
    await stopServer(srv);
  }
}

main().catch((err: unknown) => {
  const cause = (err as { cause?: unknown }).cause;
  process.stderr.write(
    `${(err as Error).stack ?? String(err)}${cause ? `\ncause: ${String(cause)}` : ''}\n`,
  );
  process.exitCode = 1;
});
