// A sandbox snapshot on disk: a folder holding the guest's RAM (`mem`, the file the source VM
// ran on, shared), QEMU's device state (`state`, a migration stream without the RAM: QEMU's
// `x-ignore-shared`) and `snapshot.json` (this file's SnapshotMeta). A clone maps `mem` private
// (copy-on-write) and loads `state`: clones share every page they never write.
//
// A snapshot is only good for the exact machine that made it: the same kernel, initramfs, guest
// image (which holds the agent), QEMU build, accelerator and device layout. `inputs` records
// them; a restore compares them with the current ones and refuses a stale snapshot
// (E_SNAPSHOT_STALE), so an upgrade never resumes an old agent or function.

import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { IsolaError } from '../errors.js';

/** Bump when the layout of a snapshot folder or its meaning changes. */
export const SNAPSHOT_FORMAT = 1;
export const SNAPSHOT_META = 'snapshot.json';
export const SNAPSHOT_MEMORY = 'mem';
export const SNAPSHOT_STATE = 'state';

/** What the guest and its VMM were made of; all must match for a restore. */
export interface SnapshotInputs {
  format: number;
  /** Guest assets digest (kernel package, initramfs, guest image with Node.js and the agent). */
  assets: string;
  agentVersion: string;
  protocolVersion: number;
  /** `qemu-system-x86_64 --version`: the migration stream is only promised within one build. */
  qemu: string;
  accel: 'kvm' | 'tcg';
  tscKhz: number | null;
}

export interface SnapshotDrive {
  path: string;
  readonly: boolean;
  format: 'raw' | 'qcow2';
}

export interface SnapshotMeta {
  inputs: SnapshotInputs;
  /** The device layout a clone must reproduce (drive files may differ, their number may not). */
  vm: {
    vcpus: number;
    memoryMiB: number;
    drives: SnapshotDrive[];
    functionPort: boolean;
    /** The source's hostname: part of the kernel command line, which a clone keeps. */
    hostname: string;
    /** The source had a NIC (its guest configuration, resolvers included, travels along). */
    network?: { dns: string[] };
  };
  /** What the caller recorded with the snapshot (such as the exec id of a running process). */
  extra: Record<string, unknown>;
  createdAt: string;
  /** Time the source VM was paused for the save (ms) and the device state's size (bytes). */
  saveMs: number;
  stateBytes: number;
}

export function writeSnapshotMeta(dir: string, meta: SnapshotMeta): void {
  const file = path.join(dir, SNAPSHOT_META);
  writeFileSync(`${file}.tmp`, `${JSON.stringify(meta, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

export function readSnapshotMeta(dir: string): SnapshotMeta {
  let text: string;
  try {
    text = readFileSync(path.join(dir, SNAPSHOT_META), 'utf8');
  } catch (err) {
    throw new IsolaError('E_SNAPSHOT', `no snapshot in ${dir}`, { cause: err });
  }
  try {
    return JSON.parse(text) as SnapshotMeta;
  } catch (err) {
    throw new IsolaError('E_SNAPSHOT', `snapshot ${dir} has a damaged ${SNAPSHOT_META}`, {
      cause: err,
    });
  }
}

/** Why a snapshot made from `had` cannot be restored on `now` (empty: it can). Pure. */
export function staleReasons(had: SnapshotInputs, now: SnapshotInputs): string[] {
  const out: string[] = [];
  for (const k of Object.keys(now) as Array<keyof SnapshotInputs>) {
    if (had[k] !== now[k]) out.push(`${k}: snapshot has ${String(had[k])}, now ${String(now[k])}`);
  }
  return out;
}

/** Throw E_SNAPSHOT_STALE when the snapshot's inputs differ from the current ones. */
export function assertFresh(dir: string, meta: SnapshotMeta, now: SnapshotInputs): void {
  const why = staleReasons(meta.inputs, now);
  if (why.length > 0) {
    throw new IsolaError('E_SNAPSHOT_STALE', `snapshot ${dir} is stale: ${why.join('; ')}`, {
      details: { reasons: why },
    });
  }
}
