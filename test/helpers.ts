// Shared pieces of the integration tests: the repo root, the suite's run dir (set by
// scripts/run-tests.mjs), and a look at what isola processes and cgroups exist right now.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runDir } from '../src/assets/paths.js';
import { findQemuProcesses } from '../src/sandbox/reaper.js';
import { sandboxesDir } from '../src/sandbox/run-record.js';
import { listSandboxCgroups } from '../src/vmm/cgroup.js';

/** Repository root (this file compiles to dist/test/helpers.js). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const ISOLA_BIN = path.join(ROOT, 'bin/isola');

export function sandboxFolders(): string[] {
  try {
    return readdirSync(sandboxesDir(runDir()));
  } catch {
    return [];
  }
}

export interface Leftovers {
  qemu: number[];
  folders: string[];
  cgroups: string[];
  /** Host ends of sandbox uplinks (each vanishes with its sandbox's network namespace). */
  uplinks: string[];
}

/** Host interfaces of sandbox uplinks (`isv<slot>`) that exist now. */
export function uplinkInterfaces(): string[] {
  try {
    return readdirSync('/sys/class/net').filter((n) => /^isv\d+$/.test(n));
  } catch {
    return [];
  }
}

export function leftovers(): Leftovers {
  return {
    qemu: findQemuProcesses(runDir()).map((q) => q.pid),
    folders: sandboxFolders(),
    cgroups: listSandboxCgroups(),
    uplinks: uplinkInterfaces(),
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Run a command asynchronously (so several can overlap) and collect its stdout and exit code. */
export function runAsync(
  cmd: string,
  args: string[],
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const ch = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    ch.stdout.on('data', (b: Buffer) => {
      out += b.toString();
    });
    ch.once('close', (code) => resolve({ code, out }));
  });
}
