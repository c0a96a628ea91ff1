// Each live sandbox owns a folder <run dir>/sandboxes/<id>/ holding its sockets and owner.json,
// which names the host process that owns it and the QEMU process and cgroups it made. The
// record is written before anything is created (temp file + rename, so it is never half
// written), which is what lets the reaper clean up after a crash at any point.

import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runDir } from '../assets/paths.js';
import { processStartTime } from '../vmm/qemu-process.js';

export interface OwnerRecord {
  id: string;
  hostPid: number;
  hostStartTime: number | null;
  qemuPid: number | null;
  qemuStartTime: number | null;
  cgroups: string[];
  /** Host end of the sandbox's uplink, once attached (it goes with QEMU's network namespace). */
  uplink?: string | null;
  createdAt: string;
}

export function sandboxesDir(base = runDir()): string {
  return path.join(base, 'sandboxes');
}

export function sandboxDir(id: string, base = runDir()): string {
  return path.join(sandboxesDir(base), id);
}

export function writeOwnerRecord(dir: string, rec: OwnerRecord): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, 'owner.json');
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, JSON.stringify(rec));
  renameSync(tmp, file);
}

export function readOwnerRecord(dir: string): OwnerRecord | null {
  try {
    return JSON.parse(readFileSync(path.join(dir, 'owner.json'), 'utf8')) as OwnerRecord;
  } catch {
    return null;
  }
}

export function newOwnerRecord(id: string, cgroups: string[]): OwnerRecord {
  return {
    id,
    hostPid: process.pid,
    hostStartTime: processStartTime(process.pid),
    qemuPid: null,
    qemuStartTime: null,
    cgroups,
    createdAt: new Date().toISOString(),
  };
}
