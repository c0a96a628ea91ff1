// Per-sandbox cgroups for the QEMU process: memory, CPU and pids limits. Works on cgroup v2
// (unified hierarchy with controllers) and on v1 (one hierarchy per controller, as on these
// hosts, see ../shared/HOST-NOTES.md). Sandbox cgroups nest under the cgroup isola itself runs
// in (the delegation model), inside a folder `isola` or $ISOLA_CGROUP_PARENT.
// The process is placed in its cgroups before QEMU runs (the launcher writes its own pid into
// cgroup.procs and then execs QEMU), so no guest code ever runs unconfined.

import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { IsolaError } from '../errors.js';

const ROOT = '/sys/fs/cgroup';
/** CFS period; the quota is a multiple of it. 100 ms is the kernel's default period. */
const CPU_PERIOD_US = 100_000;

export interface CgroupLimits {
  memoryBytes: number;
  /** CPU time allowed per period, in CPUs (1.5 = one and a half CPUs). */
  cpus: number;
  pids: number;
}

export type CgroupMode = 'v2' | 'v1' | 'none';

export function cgroupMode(): CgroupMode {
  if (existsSync(path.join(ROOT, 'cgroup.controllers'))) return 'v2';
  if (existsSync(path.join(ROOT, 'memory/cgroup.procs'))) return 'v1';
  return 'none';
}

function ownCgroup(controller: string): string {
  // /proc/self/cgroup lines: "ID:controllers:path"; v2 is "0::path".
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const [, ctrls, p] = line.split(':');
    if (p === undefined || ctrls === undefined) continue;
    if (controller === '' ? ctrls === '' : ctrls.split(',').includes(controller)) return p;
  }
  return '/';
}

function parentName(): string {
  const name = process.env.ISOLA_CGROUP_PARENT ?? 'isola';
  if (!/^[A-Za-z0-9._-]+$/.test(name))
    throw new IsolaError('E_CGROUP', `bad ISOLA_CGROUP_PARENT ${name}`);
  return name;
}

/** The cgroup directories a sandbox with this id uses (deterministic, so the reaper finds them). */
export function sandboxCgroupPaths(id: string, mode: CgroupMode = cgroupMode()): string[] {
  const parent = parentName();
  if (mode === 'v2') return [path.join(ROOT, ownCgroup(''), parent, id)];
  if (mode === 'v1') {
    return ['memory', 'cpu', 'pids'].map((c) => path.join(ROOT, c, ownCgroup(c), parent, id));
  }
  return [];
}

function write(file: string, value: string): void {
  try {
    writeFileSync(file, value);
  } catch (err) {
    throw new IsolaError('E_CGROUP', `writing ${value} to ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Create and configure the sandbox's cgroups; returns the cgroup.procs files to join. */
export function createSandboxCgroups(
  id: string,
  limits: CgroupLimits,
): { dirs: string[]; procsFiles: string[] } {
  const mode = cgroupMode();
  const dirs = sandboxCgroupPaths(id, mode);
  const quota = String(Math.max(1000, Math.round(limits.cpus * CPU_PERIOD_US)));
  try {
    if (mode === 'v2') {
      const dir = dirs[0]!;
      const parent = path.dirname(dir);
      mkdirSync(parent, { recursive: true });
      // Enable the controllers for children of our parent folder (needs them in our own cgroup).
      write(path.join(parent, 'cgroup.subtree_control'), '+memory +cpu +pids');
      mkdirSync(dir);
      write(path.join(dir, 'memory.max'), String(limits.memoryBytes));
      write(path.join(dir, 'memory.swap.max'), '0');
      write(path.join(dir, 'cpu.max'), `${quota} ${CPU_PERIOD_US}`);
      write(path.join(dir, 'pids.max'), String(limits.pids));
    } else if (mode === 'v1') {
      for (const dir of dirs) mkdirSync(dir, { recursive: true });
      const [mem, cpu, pids] = dirs as [string, string, string];
      write(path.join(mem, 'memory.limit_in_bytes'), String(limits.memoryBytes));
      write(path.join(cpu, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
      write(path.join(cpu, 'cpu.cfs_quota_us'), quota);
      write(path.join(pids, 'pids.max'), String(limits.pids));
    }
  } catch (err) {
    removeCgroups(dirs);
    if (err instanceof IsolaError) throw err;
    throw new IsolaError('E_CGROUP', `creating cgroups for ${id}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return { dirs, procsFiles: dirs.map((d) => path.join(d, 'cgroup.procs')) };
}

export function cgroupPids(dir: string): number[] {
  try {
    return readFileSync(path.join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** Remove cgroup directories (they must be empty of processes); idempotent. */
export function removeCgroups(dirs: readonly string[]): string[] {
  const left: string[] = [];
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    try {
      rmdirSync(dir);
    } catch {
      left.push(dir);
    }
  }
  return left;
}

/** Sandbox cgroups that exist under the parent folder (for the reaper and leak checks). */
export function listSandboxCgroups(): string[] {
  const mode = cgroupMode();
  if (mode === 'none') return [];
  const parents = new Set(sandboxCgroupPaths('x', mode).map((d) => path.dirname(d)));
  const out: string[] = [];
  for (const p of parents) {
    if (!existsSync(p)) continue;
    for (const e of readdirSync(p, { withFileTypes: true })) {
      if (e.isDirectory()) out.push(path.join(p, e.name));
    }
  }
  return out;
}
