// Container state under the runtime's --root, one folder per container:
//   <root>/<id>/state.json   written to a temp file and renamed, so a crash never leaves half
//                            of it; the folder's creation (mkdir) is what makes an id taken.
// The OCI lifecycle (creating -> created -> running -> stopped, plus paused) as a pure
// transition table with typed errors for illegal moves.

import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { IsolaError } from '../errors.js';
import { sameProcessAlive } from '../vmm/qemu-process.js';

export type OciStatus = 'creating' | 'created' | 'running' | 'paused' | 'stopped';

export interface ContainerState {
  ociVersion: string;
  id: string;
  status: OciStatus;
  /** Host pid of the container's monitor process: it lives as long as the container process. */
  pid: number;
  pidStartTime: number | null;
  bundle: string;
  annotations: Record<string, string>;
  created: string;
  /** Monitor's control socket. */
  control: string;
  /** --console-socket of create (terminal mode). */
  consoleSocket?: string;
  /** Sandbox id of the micro-VM (for the reaper and `delete --force`). */
  sandboxId?: string;
  exitCode?: number | null;
  exitSignal?: string | null;
}

export type OciAction =
  | 'created'
  | 'start'
  | 'exited'
  | 'kill'
  | 'pause'
  | 'resume'
  | 'delete'
  | 'exec';

const LEGAL: Record<OciAction, OciStatus[]> = {
  created: ['creating'],
  start: ['created'],
  exited: ['creating', 'created', 'running', 'paused'],
  kill: ['created', 'running', 'paused'],
  pause: ['running'],
  resume: ['paused'],
  delete: ['stopped'],
  exec: ['running'],
};

/** Throws E_OCI_STATE when `action` is illegal in `status` (the runtime spec's lifecycle). */
export function checkTransition(id: string, status: OciStatus, action: OciAction): void {
  if (!LEGAL[action].includes(status)) {
    throw new IsolaError('E_OCI_STATE', `cannot ${action} container ${id}: it is ${status}`, {
      details: { id, status, action },
    });
  }
}

export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/;

export function validateId(id: string | undefined): string {
  if (!id || !ID_PATTERN.test(id)) {
    throw new IsolaError('E_INVALID_ARGUMENT', `invalid container id ${JSON.stringify(id ?? '')}`);
  }
  return id;
}

export class StateStore {
  constructor(readonly root: string) {}

  dir(id: string): string {
    return path.join(this.root, id);
  }

  /** Claim an id: fails with E_OCI_EXISTS when a container with that id exists. */
  claim(id: string): string {
    mkdirSync(this.root, { recursive: true, mode: 0o711 });
    try {
      mkdirSync(this.dir(id), { mode: 0o711 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new IsolaError('E_OCI_EXISTS', `container ${id} already exists`);
      }
      throw err;
    }
    return this.dir(id);
  }

  write(state: ContainerState): void {
    const file = path.join(this.dir(state.id), 'state.json');
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(state));
    renameSync(tmp, file);
  }

  /** Read a container's state, with its status refreshed from the monitor's liveness. */
  read(id: string): ContainerState {
    let state: ContainerState;
    try {
      state = JSON.parse(
        readFileSync(path.join(this.dir(id), 'state.json'), 'utf8'),
      ) as ContainerState;
    } catch {
      throw new IsolaError('E_OCI_NOT_FOUND', `container ${id} does not exist`);
    }
    if (
      state.status !== 'stopped' &&
      state.pid > 0 &&
      !sameProcessAlive(state.pid, state.pidStartTime)
    ) {
      state.status = 'stopped';
    }
    return state;
  }

  /** Update fields of a stored state (read-modify-write; the monitor is the only writer after create). */
  update(id: string, patch: Partial<ContainerState>): ContainerState {
    const raw = JSON.parse(
      readFileSync(path.join(this.dir(id), 'state.json'), 'utf8'),
    ) as ContainerState;
    const next = { ...raw, ...patch };
    this.write(next);
    return next;
  }

  remove(id: string): void {
    rmSync(this.dir(id), { recursive: true, force: true });
  }

  list(): string[] {
    try {
      return readdirSync(this.root).filter((d) => ID_PATTERN.test(d));
    } catch {
      return [];
    }
  }
}

/** The OCI state JSON as `state` prints it. */
export function ociState(s: ContainerState): Record<string, unknown> {
  return {
    ociVersion: s.ociVersion,
    id: s.id,
    status: s.status,
    pid: s.status === 'stopped' ? 0 : s.pid,
    bundle: s.bundle,
    rootfs: path.join(s.bundle, 'rootfs'),
    created: s.created,
    annotations: s.annotations,
  };
}
