// Benchmark of the micro-VM sandbox core (npm run bench):
//  - boot to agent-ready over N boots, split into QEMU start, kernel to init, agent start;
//  - exec round trip of `true` in a booted sandbox, against the same spawn on the host (peer);
//  - host memory per idle sandbox (PSS of the QEMU process, from smaps_rollup), booted and started
//    the default way (resumed from the cached snapshot of a booted guest), and that start's time.
// Writes bench/results/boot.json and bench/results/boot.md.
//   node dist/bench/boot.js [--boots N] [--execs N] [--idle N]
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../src/assets/paths.js';
import { MicroVmDriver } from '../src/sandbox/drivers/microvm.js';
import type { Sandbox } from '../src/sandbox/sandbox.js';
import { qemuVersion } from '../src/vmm/accel.js';
import { type Summary, summarize, writeResults } from './stats.js';

const { values } = parseArgs({
  options: {
    boots: { type: 'string', default: '20' },
    execs: { type: 'string', default: '200' },
    idle: { type: 'string', default: '3' },
  },
});
const BOOTS = Number(values.boots);
const EXECS = Number(values.execs);
const IDLE = Number(values.idle);
/** Default (snapshot) starts timed. */
const STARTS = 10;
/** Time an idle guest gets to settle after boot before its memory is read. */
const IDLE_SETTLE_MS = 3_000;

const log = (s: string) => process.stderr.write(`[bench] ${s}\n`);

function memOf(pid: number): { pssMiB: number; rssMiB: number; privateMiB: number } {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  const mib = (x: number) => Math.round((x / 1024) * 10) / 10;
  return {
    pssMiB: mib(kb('Pss')),
    rssMiB: mib(kb('Rss')),
    privateMiB: mib(kb('Private_Clean') + kb('Private_Dirty')),
  };
}

function hostSpawn(cmd: string, args: string[]): Promise<number> {
  const t = performance.now();
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    c.on('error', reject);
    c.on('close', () => resolve(performance.now() - t));
  });
}

async function main(): Promise<void> {
  const driver = new MicroVmDriver();
  const boot = {
    qemuStart: [] as number[],
    kernelToInit: [] as number[],
    agentStart: [] as number[],
    total: [] as number[],
    wall: [] as number[],
  };
  let retries = 0;
  let accel = '';
  for (let i = 0; i < BOOTS; i++) {
    const sb = await driver.create({ start: 'boot' });
    try {
      await sb.start();
      const b = sb.boot!;
      accel = b.accel;
      boot.qemuStart.push(b.qemuStartMs);
      boot.kernelToInit.push(b.kernelToInitMs);
      boot.agentStart.push(b.agentStartMs);
      boot.total.push(b.totalMs);
      boot.wall.push(b.wallMs);
      retries += b.retries;
      log(`boot ${i + 1}/${BOOTS}: ${Math.round(b.totalMs)} ms (retries ${b.retries})`);
    } finally {
      await sb.destroy();
    }
  }

  // Exec round trip, in the guest and (peer) on the host, interleaved so both see the same noise.
  const sb = await driver.create({ start: 'boot' });
  await sb.start();
  const guestExec: number[] = [];
  const hostExec: number[] = [];
  for (let i = 0; i < 10; i++) await sb.run(['true']); // warm the translation cache
  for (let i = 0; i < EXECS; i++) {
    const t = performance.now();
    await sb.run(['true']);
    guestExec.push(performance.now() - t);
    hostExec.push(await hostSpawn('true', []));
  }
  await sb.destroy();

  // Memory of idle sandboxes, all running at once: booted, then started the default way.
  const idleMemory = async (start: 'boot' | 'auto') => {
    const idle: Sandbox[] = [];
    const out: Array<ReturnType<typeof memOf>> = [];
    try {
      for (let i = 0; i < IDLE; i++) {
        const s = await driver.create({ start });
        idle.push(s);
        await s.start();
      }
      await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
      for (const s of idle) out.push(memOf(s.vmmPid!));
    } finally {
      for (const s of idle) await s.destroy();
    }
    return out;
  };
  const mem = await idleMemory('boot');
  // The default start: the first one makes the cached snapshot (a boot), the rest resume it.
  const warm = await driver.create({});
  await warm.start();
  await warm.destroy();
  const snapStart: number[] = [];
  for (let i = 0; i < STARTS; i++) {
    const t = performance.now();
    const s = await driver.create({});
    await s.start();
    snapStart.push(performance.now() - t);
    if (!s.restore) throw new Error('the default start did not resume a snapshot');
    await s.destroy();
  }
  const memSnap = await idleMemory('auto');

  const S = (xs: number[]) => summarize(xs);
  const results = {
    date: new Date().toISOString(),
    host: {
      kernel: os.release(),
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memGiB: Math.round(os.totalmem() / 2 ** 30),
    },
    qemu: qemuVersion(),
    accel,
    guest: { vcpus: 1, memoryMiB: 256 },
    boot: {
      boots: BOOTS,
      watchdogRetries: retries,
      qemuStartMs: S(boot.qemuStart),
      kernelToInitMs: S(boot.kernelToInit),
      agentStartMs: S(boot.agentStart),
      bootToAgentReadyMs: S(boot.total),
      wallIncludingRetriesMs: S(boot.wall),
    },
    exec: {
      true: S(guestExec),
      hostPeerTrue: S(hostExec),
      ratioP50: Math.round((S(guestExec).p50 / S(hostExec).p50) * 10) / 10,
    },
    idleMemory: {
      sandboxes: IDLE,
      pssMiB: S(mem.map((m) => m.pssMiB)),
      rssMiB: S(mem.map((m) => m.rssMiB)),
      privateMiB: S(mem.map((m) => m.privateMiB)),
    },
    defaultStart: {
      startToReadyMs: S(snapStart),
      idlePssMiB: S(memSnap.map((m) => m.pssMiB)),
      idleRssMiB: S(memSnap.map((m) => m.rssMiB)),
      idlePrivateMiB: S(memSnap.map((m) => m.privateMiB)),
    },
    targets: { bootP50Ms: 4000, execP50Ms: 20, idlePssMiB: 150 },
  };
  const row = (name: string, s: Summary, unit: string, target = '') =>
    `| ${name} | ${s.p50} ${unit} | ${s.p95} ${unit} | ${s.min}–${s.max} | ${s.n} | ${target} |`;
  const md = [
    `# Sandbox core benchmark (${results.date.slice(0, 10)})`,
    '',
    `Host: ${results.host.cpuModel}, ${results.host.cpus} CPUs, kernel ${results.host.kernel}; QEMU ${results.qemu}; accelerator **${accel}**; guest 1 vCPU, 256 MiB.`,
    `Reproduce: \`npm run bench\` (or \`node dist/bench/boot.js --boots ${BOOTS} --execs ${EXECS} --idle ${IDLE}\`).`,
    '',
    '| measure | p50 | p95 | min–max | n | target |',
    '| --- | --- | --- | --- | --- | --- |',
    row('boot to agent ready', results.boot.bootToAgentReadyMs, 'ms', '≤ 4000 ms p50'),
    row('  QEMU start (spawn → QMP)', results.boot.qemuStartMs, 'ms'),
    row('  kernel to init', results.boot.kernelToInitMs, 'ms'),
    row('  agent start (init → ready)', results.boot.agentStartMs, 'ms'),
    row('boot wall incl. watchdog retries', results.boot.wallIncludingRetriesMs, 'ms'),
    row('exec round trip `true` (guest)', results.exec.true, 'ms', '≤ 20 ms p50'),
    row('peer: spawn `true` on the host', results.exec.hostPeerTrue, 'ms'),
    row('idle sandbox PSS (QEMU process), booted', results.idleMemory.pssMiB, 'MiB', '≤ 150 MiB'),
    row('idle sandbox RSS, booted', results.idleMemory.rssMiB, 'MiB'),
    row(
      'default start (resume the cached booted guest)',
      results.defaultStart.startToReadyMs,
      'ms',
    ),
    row('idle sandbox PSS, default start', results.defaultStart.idlePssMiB, 'MiB', '≤ 150 MiB'),
    row('idle sandbox private memory, default start', results.defaultStart.idlePrivateMiB, 'MiB'),
    '',
    `Watchdog retries: ${retries} in ${BOOTS} boots. Guest exec / host spawn ratio at p50: ${results.exec.ratioP50}x.`,
    '',
  ].join('\n');
  const out = writeResults(path.join(REPO_ROOT, 'bench/results'), 'boot', results, md);
  process.stdout.write(md);
  log(`wrote ${out.json} and ${out.md}`);
  // Make sure the machine is clean: no QEMU of ours left.
  // pgrep run directly (through sh, the shell's own command line would match the pattern).
  let left = '0';
  try {
    left = execFileSync('pgrep', ['-c', '-f', 'qemu-system.*isola-sb-'], {
      encoding: 'utf8',
    }).trim();
  } catch {
    left = '0'; // pgrep exits 1 when nothing matches
  }
  if (left !== '0') log(`warning: ${left} QEMU processes still running`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
