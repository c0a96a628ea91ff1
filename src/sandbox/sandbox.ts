// The one interface every isolation class implements (microvm now; gvisor, container and vm
// drivers later). Callers (CLI, OCI runtime, platform pool) depend on this file only.

import type { Duplex } from 'node:stream';
import type { EgressPolicy } from '../net/policy.js';
import type { ExitStatus, GuestInfo, Signal } from '../protocol/messages.js';
import type { ExecIo } from './agent-client.js';
import type { SandboxState } from './lifecycle.js';
import type { SnapshotMeta } from './snapshot.js';
import type { SandboxSpecInput } from './spec.js';

export interface ExecRequest {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  uid?: number;
  gid?: number;
  /** Stream stdin through the returned process handle. */
  stdin?: boolean;
}

export interface SandboxProcess {
  execId: number;
  /** The process id inside the guest. */
  pid: number;
  exited: Promise<ExitStatus>;
  writeStdin(data: Buffer | string): Promise<void>;
  closeStdin(): Promise<void>;
  signal(sig: Signal): Promise<boolean>;
}

export interface RunResult extends ExitStatus {
  stdout: string;
  stderr: string;
}

/** Boot timings of the attempt that succeeded, and how many attempts the watchdog killed. */
export interface BootReport {
  accel: 'kvm' | 'tcg';
  retries: number;
  /** Process spawn until QMP answered (QEMU start and device set-up). */
  qemuStartMs: number;
  /** CPUs released until the initramfs init printed its marker (kernel boot). */
  kernelToInitMs: number;
  /** Init until the agent reported ready (guest image mount and Node.js start). */
  agentStartMs: number;
  /** Process spawn until the agent answered the handshake (the attempt that succeeded). */
  totalMs: number;
  /** start() call until running, including attempts the watchdog killed. */
  wallMs: number;
  /** Attempts the watchdog killed: in which stage, and the last console lines. */
  hangs: Array<{ attempt: number; stage: string; consoleTail: string[] }>;
}

/** How a restored sandbox came up (Sandbox.restore), step by step. */
export interface RestoreReport {
  /** The VMM was pre-spawned (prepare()) before start(): no process start on the path. */
  prespawned: boolean;
  /** Spawning QEMU and connecting to it (0 when pre-spawned). */
  spawnMs: number;
  /** Loading the device state (the RAM is mapped, not copied). */
  loadMs: number;
  /** CPUs released until the guest answered on the control port with its new identity. */
  resumeMs: number;
  /** start() call until running. */
  totalMs: number;
}

/** What a driver can do; later issues add snapshot/restore and networking behind these flags. */
export interface SandboxCapabilities {
  ownKernel: boolean;
  snapshot: boolean;
  network: boolean;
}

export interface Sandbox {
  readonly id: string;
  readonly driver: string;
  readonly state: SandboxState;
  readonly capabilities: SandboxCapabilities;
  /** Set once start() succeeded. */
  readonly boot: BootReport | null;
  /** Host pid of the VMM process while it runs. */
  readonly vmmPid: number | null;
  /** Set once start() restored the sandbox from a snapshot (driver.fromSnapshot). */
  readonly restore: RestoreReport | null;
  /**
   * A sandbox made by driver.fromSnapshot: start the VMM now, waiting for its state, so that
   * start() pays only the restore. Optional; start() does it when it was not done.
   */
  prepare(): Promise<void>;
  start(): Promise<void>;
  /**
   * Save the running guest into `dir` (which must hold spec.memoryFile: the RAM stays there) with
   * `extra` recorded beside it, then end the sandbox: its memory now belongs to the snapshot.
   */
  snapshot(dir: string, extra?: Record<string, unknown>): Promise<SnapshotMeta>;
  exec(req: ExecRequest, io?: ExecIo): Promise<SandboxProcess>;
  /** A process already running in the guest (started before the snapshot this clone came from). */
  attach(execId: number, pid: number, io?: ExecIo): SandboxProcess;
  /** exec + collect output + wait: the common case. */
  run(
    argv: string[],
    opts?: Omit<ExecRequest, 'argv' | 'stdin'> & { input?: string | Buffer },
  ): Promise<RunResult>;
  /**
   * A byte stream to a TCP port on the guest's loopback (a function's HTTP server). Returned at
   * once; writes wait for the connection, and a refused connect destroys it (E_GUEST_CONNECT).
   */
  connect(port: number): Duplex;
  /**
   * The byte stream of the sandbox's function port (spec.functionPort): a runtime in the guest
   * opens the port named FUNCTION_PORT_NAME; bytes flow without the agent in between.
   */
  functionChannel(): Promise<Duplex>;
  info(): Promise<GuestInfo>;
  readFile(path: string): Promise<Buffer>;
  writeFile(path: string, data: Buffer | string, mode?: number): Promise<void>;
  /** Freeze every vCPU (the guest stops running, memory stays); resume() continues it. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Graceful shutdown of the guest (kill after the stop timeout). */
  stop(): Promise<void>;
  /** Release everything (process, cgroups, sockets, run directory); idempotent. */
  destroy(): Promise<void>;
}

export interface RestoreOptions {
  /** The clone's hostname (default: its id). */
  hostname?: string;
  /** Environment for processes the host starts in the clone. */
  env?: Record<string, string>;
  /** Files for the snapshot's drives, in order (same count; default: the snapshot's own). */
  drives?: string[];
  /** Set the clone's clock this far from the host's (snapshot templates run behind). */
  clockOffsetMs?: number;
  /**
   * Run on a copy of the snapshot's memory at this path (in a folder of its own, named `mem`),
   * mapped shared, instead of a private mapping: the clone can then be snapshotted in turn
   * (a function's snapshot made from the guest image's base snapshot).
   */
  memoryFile?: string;
  /** Egress policy of a clone of a snapshot with a NIC (default: no egress at all). */
  egress?: EgressPolicy;
}

export interface SandboxDriver {
  readonly name: string;
  /** Validate the spec and allocate the sandbox; starts nothing. */
  create(spec: SandboxSpecInput): Promise<Sandbox>;
  /**
   * A sandbox that resumes the snapshot in `dir` when started, with its own identity (clock,
   * hostname, entropy). Throws E_SNAPSHOT_STALE for a snapshot of other assets/agent/QEMU.
   */
  fromSnapshot(dir: string, opts?: RestoreOptions): Promise<Sandbox>;
}
