// What a warm instance's guest spends per invocation, from inside it: a real `isola serve` per
// round (a fresh snapshot and clone each time), bench/functions/probe deployed as one instance
// taking 64 requests at once, wrk at 8 connections (no Lua per response), and the probe function
// invoked before and after the measured run for the guest's CPU counters, context switches and
// interrupts, then for a V8 CPU profile of the runtime under the same load.
// Rounds differ on purpose: a clone settles in one of two steady states (few wake-ups with large
// batches, or about one wake-up per invocation), and this shows which one each round got.
// Writes bench/results/guest.{json,md}.   npm run bench:guest
//   BENCH_GUEST_ROUNDS (4), BENCH_WARMUP_SECONDS (15), BENCH_WRK_SECONDS (10), BENCH_PROFILE_MS (4000)

import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, deployNoop, startServer, stopServer } from './server.js';
import { percentile, writeResults } from './stats.js';

const ROUNDS = Number(process.env.BENCH_GUEST_ROUNDS ?? 4);
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 15);
const WRK_SECONDS = Number(process.env.BENCH_WRK_SECONDS ?? 10);
const PROFILE_MS = Number(process.env.BENCH_PROFILE_MS ?? 4000);
/** /proc/stat counts in USER_HZ ticks of 10 ms. */
const TICK_US = 10_000;

interface Probe {
  cpu: number[];
  ctxt: number;
  interrupts: string;
  /** By process (script or name, pid) and thread name, summed over its threads of that name. */
  switches: Record<string, { voluntary: number; involuntary: number; wchan?: string }>;
  /** The runtime's own threads by thread id: name, CPU ticks (user + system), switches. */
  threads: Record<string, { name: string; ticks: number; voluntary: number; involuntary: number }>;
}

/** The runtime's busiest threads: µs of CPU and context switches per invocation (top 4). */
function runtimeThreads(a: Probe, b: Probe, n: number) {
  const per = (x: number) => Math.round((x / n) * 100) / 100;
  return Object.entries(b.threads)
    .map(([tid, t]) => {
      const before = a.threads[tid] ?? { ticks: 0, voluntary: 0, involuntary: 0 };
      return {
        thread: `${t.name}/${tid}`,
        us: Math.round(((t.ticks - before.ticks) * TICK_US) / n),
        voluntary: per(t.voluntary - before.voluntary),
        involuntary: per(t.involuntary - before.involuntary),
      };
    })
    .sort((x, y) => y.us + y.voluntary + y.involuntary - (x.us + x.voluntary + x.involuntary))
    .slice(0, 4);
}

/** The threads that switched most per invocation between two probes (top 5). */
function switchesByThread(a: Probe, b: Probe, n: number) {
  return Object.entries(b.switches)
    .map(([name, s]) => {
      const before = a.switches[name] ?? { voluntary: 0, involuntary: 0 };
      return {
        thread: s.wchan ? `${name} (in ${s.wchan})` : name,
        voluntary: Math.round(((s.voluntary - before.voluntary) / n) * 100) / 100,
        involuntary: Math.round(((s.involuntary - before.involuntary) / n) * 100) / 100,
      };
    })
    .sort((x, y) => y.voluntary + y.involuntary - (x.voluntary + x.involuntary))
    .slice(0, 5);
}

/** Interrupts of the virtio devices (the ports' notifications) from /proc/interrupts. */
function virtioInterrupts(text: string): number {
  let n = 0;
  for (const line of text.split('\n')) {
    if (!line.includes('virtio')) continue;
    n += Number(line.trim().split(/\s+/)[1] ?? 0);
  }
  return n;
}

async function round(i: number) {
  const srv = await startServer('guest');
  try {
    await deployNoop(srv, 'probe', { concurrency: 64, maxInstances: 1 }, 'probe');
    const url = `${srv.url}/v1/functions/probe/invoke`;
    const invoke = async (event: unknown) => {
      const r = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${srv.key}`, 'content-type': 'application/json' },
        body: JSON.stringify(event),
      });
      const body = (await r.json()) as { result?: unknown };
      if (r.status !== 200) throw new Error(`invoke ${r.status}: ${JSON.stringify(body)}`);
      return body.result;
    };
    await invoke({ n: 1 });
    const lua = path.join(srv.dir, 'post.lua');
    writeFileSync(
      lua,
      [
        'wrk.method = "POST"',
        'wrk.body = "{\\"n\\":1}"',
        'wrk.headers["Content-Type"] = "application/json"',
        `wrk.headers["Authorization"] = "Bearer ${srv.key}"`,
        '',
      ].join('\n'),
    );
    const wrkArgs = (s: number) => ['-t', '2', '-c', '8', '-d', `${s}s`, '-s', lua, url];
    const rps = (out: string) => Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? Number.NaN);
    spawnSync('wrk', wrkArgs(WARMUP_SECONDS));
    const a = (await invoke({ probe: true })) as Probe;
    const t0 = performance.now();
    const out = spawnSync('wrk', wrkArgs(WRK_SECONDS), { encoding: 'utf8' }).stdout;
    const secs = (performance.now() - t0) / 1000;
    const b = (await invoke({ probe: true })) as Probe;
    const reqS = rps(out);
    const n = reqS * secs;
    const d = b.cpu.map((x, k) => x - (a.cpu[k] ?? 0)); // user nice system idle iowait irq softirq
    const perInv = (ticks: number) => Math.round((ticks * TICK_US) / n);
    // The profile, under the same load (the sampling slows the guest: its req/s is not kept).
    const w = spawn('wrk', wrkArgs(Math.ceil(PROFILE_MS / 1000) + 2), { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 1000));
    const prof = (await invoke({ profile: PROFILE_MS })) as Array<{ fn: string; percent: number }>;
    await new Promise((r) => w.once('exit', r));
    const ctxtPerInvocation = Math.round(((b.ctxt - a.ctxt) / n) * 100) / 100;
    const r = {
      round: i,
      rps: reqS,
      guestUsPerInvocation: {
        user: perInv(d[0]! + d[1]!),
        system: perInv(d[2]! + d[5]! + d[6]!),
        idle: perInv(d[3]! + d[4]!),
      },
      contextSwitchesPerInvocation: ctxtPerInvocation,
      virtioInterruptsPerInvocation:
        Math.round(((virtioInterrupts(b.interrupts) - virtioInterrupts(a.interrupts)) / n) * 100) /
        100,
      // the two steady states a clone settles in, told apart by the guest's context switches:
      // about 0.45 per invocation in the fast one, 1.1-1.2 in the slow one, where the agent's
      // port reader wakes per interrupt and preempts the runtime (the thread lines below)
      state: ctxtPerInvocation < 0.6 ? 'batches' : 'wake-ups',
      switchesPerInvocation: switchesByThread(a, b, n),
      runtimeThreadsPerInvocation: runtimeThreads(a, b, n),
      profile: prof,
    };
    process.stderr.write(
      `[bench] round ${i}: ${JSON.stringify({ ...r, profile: prof.slice(0, 6) })}\n`,
    );
    return r;
  } finally {
    await stopServer(srv);
  }
}

async function main(): Promise<void> {
  const rounds = [];
  for (let i = 1; i <= ROUNDS; i++) rounds.push(await round(i));
  const result = {
    when: new Date().toISOString(),
    host: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? '' },
    function: 'bench/functions/probe (Node.js, 256 MiB, one instance, 64 requests at once)',
    load: `wrk -t 2 -c 8, ${WRK_SECONDS} s after ${WARMUP_SECONDS} s of warm-up`,
    rounds,
  };
  const fmtProfile = (p: Array<{ fn: string; percent: number }>) =>
    p
      .slice(0, 6)
      .map((x) => `${x.fn} ${x.percent} %`)
      .join('; ');
  const md = [
    '# What the guest spends per warm invocation',
    '',
    `${result.when}, ${result.host.cpus} CPUs, TCG. ${result.function}; ${result.load}. A fresh server, snapshot and clone per round. Guest CPU from the guest's /proc/stat (user includes nice; system includes irq and softirq), in µs of guest time per invocation.`,
    '',
    '| round | requests/s | guest user µs | guest system µs | guest idle µs | context switches / invocation | virtio interrupts / invocation | state |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rounds.map(
      (r) =>
        `| ${r.round} | ${r.rps} | ${r.guestUsPerInvocation.user} | ${r.guestUsPerInvocation.system} | ${r.guestUsPerInvocation.idle} | ${r.contextSwitchesPerInvocation} | ${r.virtioInterruptsPerInvocation} | ${r.state} |`,
    ),
    '',
    `Median requests/s: ${percentile(
      rounds.map((r) => r.rps),
      50,
    )}. State: "batches" (the fast one) below 0.6 context switches per invocation, else "wake-ups" (the slow one: see which threads switch, below).`,
    '',
    'Threads that switched most, per invocation (voluntary / involuntary; process[pid] thread name, over all guest processes):',
    '',
    ...rounds.map(
      (r) =>
        `- round ${r.round}: ${r.switchesPerInvocation.map((x) => `${x.thread} ${x.voluntary} / ${x.involuntary}`).join('; ')}`,
    ),
    '',
    "The runtime's busiest threads, per invocation: µs of CPU, voluntary / involuntary context switches (name/thread id):",
    '',
    ...rounds.map(
      (r) =>
        `- round ${r.round}: ${r.runtimeThreadsPerInvocation.map((x) => `${x.thread} ${x.us} µs, ${x.voluntary} / ${x.involuntary}`).join('; ')}`,
    ),
    '',
    'V8 CPU profile of the runtime under the same load, top self time (percent of samples, idle and native included):',
    '',
    ...rounds.map((r) => `- round ${r.round}: ${fmtProfile(r.profile)}`),
    '',
  ].join('\n');
  const files = writeResults(path.join(ROOT, 'bench/results'), 'guest', result, md);
  process.stderr.write(`wrote ${files.json} and ${files.md}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
