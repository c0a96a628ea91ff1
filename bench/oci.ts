// OCI runtime benchmark (npm run bench:oci): `ctr run --rm` of busybox `true`, wall time over N
// runs each with isola-runtime, runc and runsc (gVisor) when installed, interleaved in one run
// of this script so that all see the same machine noise. Reports p50/p95 and ratios to runc,
// and isola's breakdown (VM boot, rootfs image, the rest) from its monitor logs.
// Writes bench/results/oci.json and bench/results/oci.md.
//   node dist/bench/oci.js [--runs N]
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../src/assets/paths.js';
import { makeRootfs } from '../test/oci-helpers.js';
import { summarize, writeResults } from './stats.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '20' } } });
const RUNS = Number(values.runs);
const log = (s: string) => process.stderr.write(`[bench:oci] ${s}\n`);

function which(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

async function main(): Promise<void> {
  const base = mkdtempSync(path.join(os.tmpdir(), 'isola-bench-oci-'));
  const sock = path.join(base, 'containerd.sock');
  const rootfs = makeRootfs(path.join(base, 'rootfs'));
  const runtimeRoot = path.join(base, 'isola-root');
  writeFileSync(
    path.join(base, 'config.toml'),
    `version = 2\nroot = "${base}/root"\nstate = "${base}/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${sock}"\n`,
  );
  mkdirSync(path.join(base, 'root'));
  const timingsFile = path.join(base, 'isola-timings.jsonl');
  const containerd: ChildProcess = spawn(
    'containerd',
    ['--config', path.join(base, 'config.toml')],
    {
      stdio: 'ignore',
      env: { ...process.env, ISOLA_RUNTIME_TIMINGS: timingsFile },
    },
  );
  try {
    for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 100));
    const runtimes: Array<{ name: string; binary: string; extra: string[] }> = [
      {
        name: 'isola-runtime',
        binary: path.join(REPO_ROOT, 'bin/isola-runtime'),
        extra: ['--runc-root', runtimeRoot],
      },
    ];
    const runc = which('runc');
    if (runc)
      runtimes.push({
        name: 'runc',
        binary: runc,
        extra: ['--runc-root', path.join(base, 'runc-root')],
      });
    else log('runc not installed: skipped');
    const runsc = which('runsc');
    if (runsc) {
      // gVisor refuses to run in the root network namespace (ctr creates none): no network.
      const wrapper = path.join(base, 'runsc-nonet');
      writeFileSync(wrapper, `#!/bin/sh\nexec ${runsc} --network=none "$@"\n`, { mode: 0o755 });
      runtimes.push({
        name: 'runsc',
        binary: wrapper,
        extra: ['--runc-root', path.join(base, 'runsc-root')],
      });
    } else log('runsc not installed: skipped');
    const times: Record<string, number[]> = Object.fromEntries(runtimes.map((r) => [r.name, []]));
    for (let i = 0; i < RUNS; i++) {
      for (const rt of runtimes) {
        const id = `b-${rt.name}-${process.pid}-${i}`;
        const t0 = performance.now();
        const r = spawnSync(
          'ctr',
          [
            '--address',
            sock,
            '-n',
            `bench-${process.pid}`,
            'run',
            '--rm',
            '--runc-binary',
            rt.binary,
            ...rt.extra,
            '--rootfs',
            rootfs,
            id,
            '/bin/true',
          ],
          { encoding: 'utf8', timeout: 120_000 },
        );
        const ms = performance.now() - t0;
        if (r.status !== 0) {
          log(`${rt.name} run ${i} failed: ${r.stderr.trim().slice(0, 300)}`);
          continue;
        }
        times[rt.name]!.push(ms);
      }
      log(
        `round ${i + 1}/${RUNS}: ${runtimes.map((rt) => `${rt.name} ${Math.round(times[rt.name]!.at(-1) ?? Number.NaN)} ms`).join(', ')}`,
      );
    }
    const summary = Object.fromEntries(runtimes.map((rt) => [rt.name, summarize(times[rt.name]!)]));
    const lines = existsSync(timingsFile)
      ? readFileSync(timingsFile, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, number>)
      : [];
    const breakdown = Object.fromEntries(
      ['rootfsImageMs', 'vmBootMs', 'guestPrepareMs', 'createMs', 'containerStartMs'].map((k) => [
        k,
        summarize(lines.map((l) => l[k]!).filter((v) => typeof v === 'number')),
      ]),
    );
    const runcP50 = summary.runc?.p50;
    const results = {
      date: new Date().toISOString(),
      host: { kernel: os.release(), cpus: os.cpus().length },
      runs: RUNS,
      command: 'ctr run --rm --runc-binary RUNTIME --rootfs BUSYBOX_DIR ID /bin/true',
      wallMs: summary,
      isolaBreakdownMs: breakdown,
      ratioToRuncP50: runcP50
        ? Object.fromEntries(
            Object.entries(summary).map(([k, v]) => [k, Math.round((v.p50 / runcP50) * 10) / 10]),
          )
        : null,
      target: { isolaRuntimeP50Ms: 6000 },
      note: 'isola-runtime boots one micro-VM per container under TCG (no KVM on this host); breakdown in README / issue notes',
    };
    const md = [
      `# OCI runtime benchmark (${results.date.slice(0, 10)})`,
      '',
      `\`${results.command}\`, ${RUNS} runs each, interleaved. Reproduce: \`npm run bench:oci\`.`,
      '',
      '| runtime | p50 | p95 | min–max | n | × runc (p50) |',
      '| --- | --- | --- | --- | --- | --- |',
      ...Object.entries(summary).map(
        ([k, v]) =>
          `| ${k} | ${v.p50} ms | ${v.p95} ms | ${v.min}–${v.max} | ${v.n} | ${results.ratioToRuncP50?.[k] ?? '–'} |`,
      ),
      '',
      'Target here (TCG, before snapshots): isola-runtime p50 ≤ 6000 ms.',
      '',
      'isola-runtime breakdown (p50): ' +
        `rootfs image ${breakdown.rootfsImageMs?.p50} ms, VM boot ${breakdown.vmBootMs?.p50} ms, ` +
        `guest preparation ${breakdown.guestPrepareMs?.p50} ms (create total ${breakdown.createMs?.p50} ms), ` +
        `container start ${breakdown.containerStartMs?.p50} ms; the rest is ctr, the shim and process start-up.`,
      '',
    ].join('\n');
    writeResults(path.join(REPO_ROOT, 'bench/results'), 'oci', results, md);
    process.stdout.write(md);
  } finally {
    containerd.kill('SIGTERM');
    await new Promise((r) => containerd.once('exit', r));
    rmSync(base, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
