// The one interface every isolation class implements (microvm now; gvisor, container and vm
// drivers later). Callers (CLI, OCI runtime, platform pool) depend on this file only.

import type { Duplex } from 'node:stream';
import type { ExitStatus, GuestInfo, Signal } from '../protocol/messages.js';
import type { ExecIo } from './agent-client.js';
import type { SandboxState } from './lifecycle.js';
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
  start(): Promise<void>;
  exec(req: ExecRequest, io?: ExecIo): Promise<SandboxProcess>;
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

export interface SandboxDriver {
  readonly name: string;
  /** Validate the spec and allocate the sandbox; starts nothing. */
  create(spec: SandboxSpecInput): Promise<Sandbox>;
}
