// Image benchmark (npm run bench:image): pull + unpack of an image of about 100 MB in 5 layers
// from a local registry (Debian's docker-registry on loopback): `isola image pull` + `isola image
// unpack` against `skopeo copy` + `umoci unpack`, interleaved in one run of this script, p50 of
// N runs each with a fresh store; then the time to turn the image into a sandbox root
// filesystem (`isola image rootfs`, built, and again from the cache).
// The layers are real files from this host (libraries, share data), gzip-compressed, so their
// size, file count and compression ratio are those of ordinary images.
// Writes bench/results/image.json and bench/results/image.md.
//   node dist/bench/image.js [--runs N]
import { spawnSync } from 'node:child_process';
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../src/assets/paths.js';
import type { TarEntryInput } from '../src/image/tar-write.js';
import { pushLayout, startRegistry, writeOciLayout } from '../test/registry-helpers.js';
import { summarize, writeResults } from './stats.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' } } });
const RUNS = Number(values.runs);
const log = (s: string) => process.stderr.write(`[bench:image] ${s}\n`);
const ISOLA = path.join(REPO_ROOT, 'bin/isola');
const LAYER_BYTES = 20 * 1024 * 1024;

/** Up to `budget` bytes of regular files (and their directories, symlinks) under `root`. */
function collect(root: string, budget: number, skip: Set<string>): TarEntryInput[] {
  const out: TarEntryInput[] = [];
  let used = 0;
  const walk = (dir: string) => {
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch {
      return;
    }
    out.push({ path: `${dir.slice(1)}/`, type: 'dir', mode: 0o755 });
    for (const n of names) {
      if (used >= budget) return;
      const p = path.join(dir, n);
      if (skip.has(p)) continue;
      let st: ReturnType<typeof lstatSync>;
      try {
        st = lstatSync(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) walk(p);
      else if (st.isSymbolicLink())
        out.push({ path: p.slice(1), type: 'symlink', linkname: readlinkSafe(p) });
      else if (st.isFile() && st.size < 8 * 1024 * 1024) {
        skip.add(p);
        out.push({ path: p.slice(1), type: 'file', data: readFileSync(p), mode: st.mode & 0o7777 });
        used += st.size;
      }
    }
  };
  walk(root);
  return out;
}

function readlinkSafe(p: string): string {
  try {
    return readlinkSync(p);
  } catch {
    return 'missing';
  }
}

function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return ms;
}

function duBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) n += duBytes(p);
    else if (e.isFile()) n += statSync(p).size;
  }
  return n;
}

function measure(mode: string, where: string, ref: string) {
  const isolaPull: number[] = [];
  const isolaUnpack: number[] = [];
  const isolaTotal: number[] = [];
  const peerCopy: number[] = [];
  const peerUnpack: number[] = [];
  const peerTotal: number[] = [];
  const rootfsBuild: number[] = [];
  const rootfsCached: number[] = [];
  let unpackedBytes = 0;
  for (let i = 0; i < RUNS; i++) {
    const run = path.join(where, `run-${i}`);
    mkdirSync(run);
    const env = { ...process.env, ISOLA_STORE: path.join(run, 'store') };
    // Alternate who goes first, so neither always meets the other's write-back.
    const order = i % 2 === 0 ? ['isola', 'peer'] : ['peer', 'isola'];
    for (const who of order) {
      if (who === 'isola') {
        const p = timed(ISOLA, ['image', 'pull', '-q', ref], env);
        const u = timed(ISOLA, ['image', 'unpack', ref, path.join(run, 'isola-tree')], env);
        isolaPull.push(p);
        isolaUnpack.push(u);
        isolaTotal.push(p + u);
        unpackedBytes = duBytes(path.join(run, 'isola-tree'));
      } else {
        const c = timed('skopeo', [
          '--insecure-policy',
          'copy',
          '--quiet',
          '--src-tls-verify=false',
          `docker://${ref}`,
          `oci:${path.join(run, 'oci')}:v1`,
        ]);
        const uu = timed('umoci', [
          'unpack',
          '--image',
          `${path.join(run, 'oci')}:v1`,
          path.join(run, 'bundle'),
        ]);
        peerCopy.push(c);
        peerUnpack.push(uu);
        peerTotal.push(c + uu);
      }
    }
    rootfsBuild.push(timed(ISOLA, ['image', 'rootfs', ref], env));
    rootfsCached.push(timed(ISOLA, ['image', 'rootfs', ref], env));
    log(
      `${mode} run ${i + 1}/${RUNS}: isola ${Math.round(isolaPull[i] ?? 0)}+${Math.round(isolaUnpack[i] ?? 0)} ms, skopeo+umoci ${Math.round(peerCopy[i] ?? 0)}+${Math.round(peerUnpack[i] ?? 0)} ms, rootfs ${Math.round(rootfsBuild[i] ?? 0)} ms`,
    );
    rmSync(run, { recursive: true, force: true });
    spawnSync('sync');
  }
  const summary = {
    isolaPull: summarize(isolaPull),
    isolaUnpack: summarize(isolaUnpack),
    isolaTotal: summarize(isolaTotal),
    skopeoCopy: summarize(peerCopy),
    umociUnpack: summarize(peerUnpack),
    peerTotal: summarize(peerTotal),
    rootfsBuild: summarize(rootfsBuild),
    rootfsCached: summarize(rootfsCached),
  };
  const ratio = Math.round((summary.isolaTotal.p50 / summary.peerTotal.p50) * 100) / 100;
  return { summary, ratio, unpackedBytes };
}

async function main(): Promise<void> {
  const base = mkdtempSync(path.join(os.tmpdir(), 'isola-bench-image-'));
  const reg = await startRegistry({ auth: 'none' });
  try {
    const roots = [
      '/usr/lib/x86_64-linux-gnu',
      '/usr/share',
      '/usr/lib/python3',
      '/usr/bin',
      '/usr/lib',
    ];
    const skip = new Set<string>();
    const layers = roots.map((r) => ({ entries: collect(r, LAYER_BYTES, skip) }));
    const layoutDir = path.join(base, 'layout');
    const written = writeOciLayout(layoutDir, 'v1', [{ layers, config: { Cmd: ['/bin/sh'] } }]);
    const img = written.images[0];
    const compressed = img?.layerBlobs.reduce((a, b) => a + b.length, 0) ?? 0;
    const files = layers.reduce((a, l) => a + l.entries.length, 0);
    await pushLayout(layoutDir, 'v1', reg, 'bench/big:v1');
    const ref = `${reg.host}/bench/big:v1`;
    log(`image: 5 layers, ${files} entries, ${(compressed / 1e6).toFixed(1)} MB compressed`);

    const tmpfs = path.join(base, 'tmpfs');
    mkdirSync(tmpfs);
    const mounted =
      spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=3g', 'isola-bench', tmpfs]).status === 0;
    const modes: Array<[string, string]> = mounted
      ? [
          ['tmpfs', tmpfs],
          ['disk', path.join(base, 'disk')],
        ]
      : [['disk', path.join(base, 'disk')]];
    if (!mounted) log('cannot mount a tmpfs; measuring on disk only');
    const byMode: Record<string, ReturnType<typeof measure>> = {};
    try {
      for (const [mode, dir] of modes) {
        mkdirSync(dir, { recursive: true });
        byMode[mode] = measure(mode, dir, ref);
      }
    } finally {
      if (mounted) spawnSync('umount', [tmpfs]);
    }
    const unpackedBytes = Object.values(byMode)[0]?.unpackedBytes ?? 0;
    const results = {
      date: new Date().toISOString(),
      host: { cpus: os.cpus().length, model: os.cpus()[0]?.model },
      image: { layers: 5, entries: files, compressedBytes: compressed, unpackedBytes },
      runs: RUNS,
      modes: byMode,
    };
    const row = (name: string, v: { p50: number; min: number; max: number }) =>
      `| ${name} | ${Math.round(v.p50)} ms | ${Math.round(v.min)}–${Math.round(v.max)} |`;
    const md = [
      `# Image pull + unpack benchmark (${results.date.slice(0, 10)})`,
      '',
      `Image: 5 layers of host files, ${files} entries, ${(compressed / 1e6).toFixed(1)} MB gzip-compressed, ${(unpackedBytes / 1e6).toFixed(1)} MB unpacked; local docker-registry on loopback; ${RUNS} runs per mode, the tools interleaved, a fresh store each run. "tmpfs": store and trees on a tmpfs (what the software costs); "disk": on this VM's disk (adds its write-back, which is noisy here). Reproduce: \`npm run bench:image\`.`,
      '',
    ];
    for (const [mode, r] of Object.entries(byMode)) {
      const s = r.summary;
      md.push(
        `## ${mode}`,
        '',
        '| step | p50 | min–max |',
        '|---|---|---|',
        row('isola image pull', s.isolaPull),
        row('isola image unpack', s.isolaUnpack),
        row('**isola pull + unpack**', s.isolaTotal),
        row('skopeo copy', s.skopeoCopy),
        row('umoci unpack', s.umociUnpack),
        row('**skopeo + umoci**', s.peerTotal),
        row('isola image rootfs (build ext4)', s.rootfsBuild),
        row('isola image rootfs (cached)', s.rootfsCached),
        '',
        `Ratio isola / (skopeo + umoci), p50: **${r.ratio}** (target ≤ 1.0).`,
        '',
      );
    }
    writeResults(path.join(REPO_ROOT, 'bench/results'), 'image', results, md.join('\n'));
    process.stdout.write(md.join('\n'));
  } finally {
    await reg.stop();
    rmSync(base, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
