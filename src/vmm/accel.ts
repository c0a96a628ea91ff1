// Accelerator choice by a real, time-bounded boot probe: KVM only where a guest really boots
// under it, else TCG. The presence of /dev/kvm proves nothing (on these hosts KVM_CREATE_VM works
// but guests crawl or die, ../shared/HOST-NOTES.md). The result is cached per QEMU binary, guest
// kernel and host kernel, and can be forced with ISOLA_ACCEL=kvm|tcg.

import { execFileSync } from 'node:child_process';
import {
  constants,
  accessSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type GuestAssets, cacheDir, runDir } from '../assets/paths.js';
import { IsolaError } from '../errors.js';
import { type Accel, buildQemuArgs } from './qemu-args.js';
import { QEMU_BINARY, QemuProcess } from './qemu-process.js';
import { ACCEL_PROBE_TIMEOUT_MS } from './timeouts.js';

export interface AccelDecision {
  accel: Accel;
  reason: string;
  source: 'override' | 'probe' | 'cache';
  probedAt?: string;
  probeMs?: number;
}

let versionMemo: string | null = null;

/** QEMU's version (`--version`, run once per process). */
export function qemuVersion(): string {
  if (versionMemo) return versionMemo;
  try {
    const out = execFileSync(QEMU_BINARY, ['--version'], { encoding: 'utf8' });
    versionMemo = /version\s+(\S+)/.exec(out)?.[1] ?? out.split('\n')[0] ?? 'unknown';
    return versionMemo;
  } catch (err) {
    throw new IsolaError(
      'E_QEMU_NOT_FOUND',
      `${QEMU_BINARY} is not installed (apt-get install qemu-system-x86)`,
      {
        cause: err,
      },
    );
  }
}

export function kvmUsable(): { ok: boolean; reason: string } {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return { ok: true, reason: '/dev/kvm is present and accessible' };
  } catch (err) {
    return {
      ok: false,
      reason: `/dev/kvm not usable: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
    };
  }
}

function cacheFile(): string {
  return path.join(cacheDir(), 'accel-probe.json');
}

/**
 * The QEMU binary's identity without running it (path, size, mtime): the cache lookup sits on
 * the path of every sandbox create, where a `qemu --version` process would cost ~30 ms.
 */
function qemuIdentity(): string {
  const dirs = QEMU_BINARY.includes('/') ? [''] : (process.env.PATH ?? '').split(':');
  for (const d of dirs) {
    try {
      const st = statSync(d ? path.join(d, QEMU_BINARY) : QEMU_BINARY);
      if (st.isFile())
        return `${d ? path.join(d, QEMU_BINARY) : QEMU_BINARY}:${st.size}:${st.mtimeMs}`;
    } catch {
      // not in this directory
    }
  }
  return `${QEMU_BINARY}:${qemuVersion()}`; // not found: qemuVersion throws E_QEMU_NOT_FOUND
}

function cacheKey(assets: GuestAssets): string {
  return [qemuIdentity(), assets.files.kernel.sha256, os.release()].join('|');
}

/** Boot the probe guest under KVM; true when it reaches init within the time bound. */
export async function probeKvm(
  assets: GuestAssets,
): Promise<{ ok: boolean; detail: string; ms: number }> {
  return probeGuest(assets, 'kvm', ACCEL_PROBE_TIMEOUT_MS);
}

/**
 * Boot the probe guest (initramfs only; it prints ISOLA_PROBE_OK with the TSC frequency its
 * kernel calibrated, then powers off).
 */
async function probeGuest(
  assets: GuestAssets,
  accel: Accel,
  timeoutMs: number,
): Promise<{ ok: boolean; detail: string; ms: number; tscMhz?: number }> {
  const dir = path.join(runDir(), `probe-${process.pid}-${Date.now()}`);
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  let proc: QemuProcess | null = null;
  try {
    const args = buildQemuArgs({
      id: `probe-${process.pid}`,
      accel,
      vcpus: 1,
      memoryMiB: 128,
      kernel: assets.kernel,
      initrd: assets.initrd,
      rootfs: assets.rootfs,
      drives: [],
      hostname: 'probe',
      qmpSocket: path.join(dir, 'qmp.sock'),
      agentSocket: path.join(dir, 'agent.sock'),
      controlSocket: path.join(dir, 'ctl.sock'),
      consoleSocket: path.join(dir, 'console.sock'),
      paused: false,
      tcgTbSizeMiB: 32,
      probe: true,
    });
    proc = await QemuProcess.spawn(args, { cgroupProcs: [] });
    try {
      await Promise.race([
        proc.attachConsole(path.join(dir, 'console.sock'), timeoutMs),
        proc.exited,
      ]);
      const line = await proc.waitConsole(/ISOLA_PROBE_OK/, timeoutMs);
      const mhz = Number(/tsc_mhz=([0-9.]+)/.exec(line)?.[1]);
      return {
        ok: true,
        detail: `probe guest booted under ${accel.toUpperCase()}`,
        ms: performance.now() - t0,
        ...(mhz > 0 ? { tscMhz: mhz } : {}),
      };
    } catch (err) {
      const ms = performance.now() - t0;
      if (!proc.running) {
        return {
          ok: false,
          detail: `QEMU with ${accel.toUpperCase()} failed: ${proc.stderr.slice(-3).join(' | ') || 'exited'}`,
          ms,
        };
      }
      return {
        ok: false,
        detail: `probe guest did not reach init under ${accel.toUpperCase()} within ${timeoutMs} ms (${(err as Error).message})`,
        ms,
      };
    }
  } finally {
    await proc?.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Decide the accelerator: override, else cached probe, else probe now (and cache). */
export async function chooseAccel(
  assets: GuestAssets,
  opts: { override?: string; reprobe?: boolean } = {},
): Promise<AccelDecision> {
  const override =
    opts.override && opts.override !== 'auto' ? opts.override : process.env.ISOLA_ACCEL;
  if (override && override !== 'auto') {
    if (override !== 'kvm' && override !== 'tcg') {
      throw new IsolaError(
        'E_INVALID_ARGUMENT',
        `ISOLA_ACCEL must be kvm, tcg or auto, not ${override}`,
      );
    }
    return { accel: override, reason: `forced by configuration (${override})`, source: 'override' };
  }
  const key = cacheKey(assets);
  if (!opts.reprobe) {
    try {
      const cached = JSON.parse(readFileSync(cacheFile(), 'utf8')) as AccelDecision & {
        key: string;
      };
      if (cached.key === key)
        return {
          accel: cached.accel,
          reason: cached.reason,
          source: 'cache',
          probedAt: cached.probedAt,
          probeMs: cached.probeMs,
        };
    } catch {
      // no cache yet
    }
  }
  const kvm = kvmUsable();
  let decision: AccelDecision;
  if (!kvm.ok) {
    decision = {
      accel: 'tcg',
      reason: `${kvm.reason}; using TCG`,
      source: 'probe',
      probedAt: new Date().toISOString(),
      probeMs: 0,
    };
  } else {
    const r = await probeKvm(assets);
    decision = r.ok
      ? {
          accel: 'kvm',
          reason: `${r.detail} in ${Math.round(r.ms)} ms`,
          source: 'probe',
          probedAt: new Date().toISOString(),
          probeMs: r.ms,
        }
      : {
          accel: 'tcg',
          reason: `${kvm.reason}, but ${r.detail}; using TCG`,
          source: 'probe',
          probedAt: new Date().toISOString(),
          probeMs: r.ms,
        };
  }
  mkdirSync(cacheDir(), { recursive: true });
  const tmp = `${cacheFile()}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify({ ...decision, key }));
  renameSync(tmp, cacheFile());
  return decision;
}

/** Attempts at calibrating the TSC: a probe boot hangs now and then exactly at calibration. */
const TSC_CALIBRATION_ATTEMPTS = 4;
/** A TCG probe boot reaches init in ~2 s here; 8 s means it hung. */
const TSC_CALIBRATION_TIMEOUT_MS = 8_000;

/**
 * The TSC frequency a TCG guest sees, in kHz, learned once from a probe guest's own calibration
 * and cached. Under TCG the guest's TSC is the host's, and its kernel calibrates it against the
 * emulated PIT, a timing loop that fails now and then under load ("tsc: Unable to calibrate
 * against PIT"), after which the boot hangs: about one boot in ten here. Booting with
 * `tsc_early_khz` skips that calibration (0 hangs in 40 probe boots, measured).
 * Returns null when no probe boot calibrated (boots then calibrate themselves).
 */
export async function tcgTscKhz(assets: GuestAssets): Promise<number | null> {
  const file = path.join(cacheDir(), 'tsc-calibration.json');
  const key = cacheKey(assets);
  try {
    const cached = JSON.parse(readFileSync(file, 'utf8')) as { key: string; tscKhz: number };
    if (cached.key === key && cached.tscKhz > 0) return cached.tscKhz;
  } catch {
    // not calibrated yet
  }
  for (let i = 0; i < TSC_CALIBRATION_ATTEMPTS; i++) {
    const r = await probeGuest(assets, 'tcg', TSC_CALIBRATION_TIMEOUT_MS);
    if (r.ok && r.tscMhz) {
      const tscKhz = Math.round(r.tscMhz * 1000);
      mkdirSync(cacheDir(), { recursive: true });
      const tmp = `${file}.tmp-${process.pid}`;
      writeFileSync(tmp, JSON.stringify({ key, tscKhz, measuredAt: new Date().toISOString() }));
      renameSync(tmp, file);
      return tscKhz;
    }
  }
  return null;
}
