// The microvm driver: each sandbox is a QEMU `microvm` with its own Linux kernel, the guest
// image as a read-only virtio-blk disk under a tmpfs overlay, and the agent on a virtio-serial
// port. Boot: spawn QEMU paused inside the sandbox cgroups, connect QMP and the agent socket,
// release the CPUs, wait for the agent; a boot that does not reach the agent within the watchdog
// time is killed and retried (counted in the boot report).

import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { loadAssets, runDir } from '../../assets/paths.js';
import { IsolaError, toIsolaError } from '../../errors.js';
import type { GuestInfo } from '../../protocol/messages.js';
import { type AccelDecision, chooseAccel, tcgTscKhz } from '../../vmm/accel.js';
import {
  cgroupPids,
  createSandboxCgroups,
  removeCgroups,
  sandboxCgroupPaths,
} from '../../vmm/cgroup.js';
import { type Accel, buildQemuArgs } from '../../vmm/qemu-args.js';
import { QemuProcess, processStartTime } from '../../vmm/qemu-process.js';
import { QmpClient, connectUnix } from '../../vmm/qmp.js';
import {
  QMP_CONNECT_TIMEOUT_MS,
  STOP_TIMEOUT_MS,
  bootTimeoutMs,
  kernelBootTimeoutMs,
} from '../../vmm/timeouts.js';
import { AgentClient, type ExecIo } from '../agent-client.js';
import { type SandboxState, nextState } from '../lifecycle.js';
import { reap } from '../reaper.js';
import { type OwnerRecord, newOwnerRecord, sandboxDir, writeOwnerRecord } from '../run-record.js';
import type {
  BootReport,
  ExecRequest,
  RunResult,
  Sandbox,
  SandboxCapabilities,
  SandboxDriver,
  SandboxProcess,
} from '../sandbox.js';
import { type SandboxSpec, type SandboxSpecInput, parseSandboxSpec } from '../spec.js';

/**
 * QEMU's own memory above guest RAM in the cgroup limit: device state, heap and, under TCG, the
 * translation cache (bounded by TCG_TB_SIZE_MIB).
 */
const DEFAULT_OVERHEAD_MIB = 192;
/** TCG translation cache: 64 MiB holds a booted kernel + Node.js without thrashing. */
const TCG_TB_SIZE_MIB = Number(process.env.ISOLA_TCG_TB_MIB ?? 64);
/** A step that fails within this much of the boot deadline counts as the watchdog firing. */
const BOOT_DEADLINE_SLACK_MS = 50;
/** pids limit for the QEMU process: vCPU threads, I/O and RCU threads, with headroom. */
const DEFAULT_PIDS_LIMIT = 128;
/** QEMU threads that work besides the vCPUs (I/O, main loop) get half a CPU in the CPU quota. */
const CPU_QUOTA_EXTRA = 0.5;
/** The function socket exists once QEMU runs; connecting is local and immediate. */
const FUNCTION_CHANNEL_CONNECT_MS = 5000;

export class MicroVmDriver implements SandboxDriver {
  readonly name = 'microvm';
  private reaped: Promise<unknown> | null = null;
  private accel: Promise<AccelDecision> | null = null;
  private tsc: Promise<number | null> | null = null;

  /** Clean what a crashed process left in the run dir; once per driver instance. */
  private ensureReaped(): Promise<unknown> {
    this.reaped ??= reap(runDir()).catch(() => undefined);
    return this.reaped;
  }

  async create(input: SandboxSpecInput): Promise<Sandbox> {
    const spec = parseSandboxSpec(input);
    await this.ensureReaped();
    const assets = loadAssets();
    let decision: AccelDecision;
    if (spec.accel !== 'auto') {
      decision = await chooseAccel(assets, { override: spec.accel });
    } else {
      this.accel ??= chooseAccel(assets);
      decision = await this.accel;
    }
    let tscKhz: number | null = null;
    if (decision.accel === 'tcg') {
      this.tsc ??= tcgTscKhz(assets);
      tscKhz = await this.tsc;
    }
    const id = `sb-${randomBytes(6).toString('hex')}`;
    return new MicroVmSandbox(id, spec, decision.accel, tscKhz, {
      kernel: spec.kernel ?? assets.kernel,
      initrd: spec.initrd ?? assets.initrd,
      rootfs: spec.guestImage ?? assets.rootfs,
    });
  }
}

type BootTimings = Pick<BootReport, 'qemuStartMs' | 'kernelToInitMs' | 'agentStartMs' | 'totalMs'>;

interface Attempt {
  qemu: QemuProcess;
  qmp: QmpClient | null;
  agent: AgentClient | null;
}

class MicroVmSandbox implements Sandbox {
  readonly driver = 'microvm';
  readonly capabilities: SandboxCapabilities = { ownKernel: true, snapshot: false, network: false };
  private _state: SandboxState = 'created';
  private _boot: BootReport | null = null;
  private current: Attempt | null = null;
  private readonly dir: string;
  private readonly record: OwnerRecord;

  constructor(
    readonly id: string,
    private readonly spec: SandboxSpec,
    private readonly accel: Accel,
    private readonly tscKhz: number | null,
    private readonly files: { kernel: string; initrd: string; rootfs: string },
  ) {
    this.dir = sandboxDir(id);
    this.record = newOwnerRecord(id, sandboxCgroupPaths(id));
  }

  get state(): SandboxState {
    return this._state;
  }

  get boot(): BootReport | null {
    return this._boot;
  }

  get vmmPid(): number | null {
    return this.current?.qemu.running ? this.current.qemu.pid : null;
  }

  private move(action: Parameters<typeof nextState>[1]): void {
    this._state = nextState(this._state, action);
  }

  async start(): Promise<void> {
    this.move('start');
    writeOwnerRecord(this.dir, this.record);
    const timeout = this.spec.timeouts.bootMs ?? bootTimeoutMs(this.accel);
    let lastErr: IsolaError | null = null;
    let attempts = 0;
    const hangs: BootReport['hangs'] = [];
    const tStart = performance.now();
    for (let attempt = 0; attempt <= this.spec.bootRetries; attempt++) {
      if (this._state !== 'starting') break; // destroyed while booting
      attempts++;
      try {
        const timings = await this.bootOnce(timeout);
        this._boot = {
          accel: this.accel,
          retries: attempt,
          ...timings,
          wallMs: performance.now() - tStart,
          hangs,
        };
        this.move('booted');
        return;
      } catch (err) {
        lastErr = toIsolaError(err);
        if (lastErr.code === 'E_SANDBOX_BOOT_TIMEOUT') {
          hangs.push({
            attempt,
            stage: String(lastErr.details?.stage ?? 'agent'),
            consoleTail: (lastErr.details?.consoleTail as string[] | undefined) ?? [],
          });
        }
        await this.teardownAttempt();
        if (lastErr.code !== 'E_SANDBOX_BOOT_TIMEOUT') break; // only hangs are worth a retry
      }
    }
    if (this._state === 'starting') this.move('bootFailed');
    await this.releaseResources();
    if (!lastErr)
      throw new IsolaError('E_SANDBOX_INVALID_STATE', 'sandbox destroyed while starting');
    throw new IsolaError(
      lastErr.code,
      `${lastErr.message} (${attempts} boot attempt${attempts > 1 ? 's' : ''})`,
      {
        cause: lastErr,
        details: { ...lastErr.details, attempts },
      },
    );
  }

  /** One boot attempt under the watchdog: any failure after the deadline is a boot timeout. */
  private async bootOnce(timeoutMs: number): Promise<BootTimings> {
    const t0 = performance.now();
    const deadline = t0 + timeoutMs;
    try {
      return await this.bootSteps(t0, deadline);
    } catch (err) {
      const e = toIsolaError(err);
      // Every step waits at most until the deadline, so an agent timeout, or any failure at the
      // deadline (timers fire on a millisecond clock, so "at" allows some slack), is the
      // watchdog firing. A crashed QEMU is not: it is reported as it is.
      const atDeadline = performance.now() >= deadline - BOOT_DEADLINE_SLACK_MS;
      if (
        e.code !== 'E_SANDBOX_BOOT_TIMEOUT' &&
        e.code !== 'E_QEMU_EXITED' &&
        (e.code === 'E_AGENT_TIMEOUT' || atDeadline)
      ) {
        throw new IsolaError(
          'E_SANDBOX_BOOT_TIMEOUT',
          `guest did not reach the agent within ${timeoutMs} ms`,
          {
            cause: err,
            details: { stage: 'agent', consoleTail: this.current?.qemu.console.slice(-20) ?? [] },
          },
        );
      }
      throw e;
    }
  }

  private async bootSteps(t0: number, deadline: number): Promise<BootTimings> {
    const left = () => Math.max(1, deadline - performance.now());
    const qmpSocket = path.join(this.dir, 'qmp.sock');
    const agentSocket = path.join(this.dir, 'agent.sock');
    const consoleSocket = path.join(this.dir, 'console.sock');
    const functionSocket = path.join(this.dir, 'fn.sock');
    for (const s of [qmpSocket, agentSocket, consoleSocket, functionSocket])
      rmSync(s, { force: true });
    const overhead = this.spec.overheadMiB ?? DEFAULT_OVERHEAD_MIB;
    const cg = createSandboxCgroups(this.id, {
      memoryBytes: (this.spec.memoryMiB + overhead) * 1024 * 1024,
      cpus: this.spec.vcpus + CPU_QUOTA_EXTRA,
      pids: this.spec.pidsLimit ?? DEFAULT_PIDS_LIMIT,
    });
    const args = buildQemuArgs({
      id: this.id,
      accel: this.accel,
      vcpus: this.spec.vcpus,
      memoryMiB: this.spec.memoryMiB,
      kernel: this.files.kernel,
      initrd: this.files.initrd,
      rootfs: this.files.rootfs,
      drives: this.spec.drives.map((d, i) => ({
        id: `drive${i}`,
        path: d.path,
        readonly: d.readonly,
        format: d.format,
      })),
      hostname: this.spec.hostname ?? this.id,
      qmpSocket,
      agentSocket,
      consoleSocket,
      ...(this.spec.functionPort ? { functionSocket } : {}),
      paused: true,
      tcgTbSizeMiB: TCG_TB_SIZE_MIB,
      ...(this.tscKhz ? { tscKhz: this.tscKhz } : {}),
    });
    const qemu = await QemuProcess.spawn(args, { cgroupProcs: cg.procsFiles });
    const attempt: Attempt = { qemu, qmp: null, agent: null };
    this.current = attempt;
    this.record.qemuPid = qemu.pid;
    this.record.qemuStartTime = processStartTime(qemu.pid);
    writeOwnerRecord(this.dir, this.record);

    const died = qemu.exited.then(() => {
      throw qemu.exitError();
    });
    died.catch(() => {});
    const race = <T>(p: Promise<T>) => Promise.race([p, died]);

    attempt.qmp = await race(
      QmpClient.connect(qmpSocket, Math.min(QMP_CONNECT_TIMEOUT_MS, left())),
    );
    const tQmp = performance.now();
    await race(qemu.attachConsole(consoleSocket, left()));
    const agentSock = await race(connectUnix(agentSocket, left()));
    const agent = new AgentClient(agentSock);
    attempt.agent = agent;
    // Two-stage watchdog: a kernel that has not reached init by the kernel deadline is hung
    // (seen here at TSC calibration), so it is killed long before the whole boot budget is spent.
    const kernelMs = Math.min(left(), kernelBootTimeoutMs(this.accel));
    const initSeen = qemu.waitConsole(/^ISOLA_INIT /, kernelMs).then(
      () => performance.now(),
      (err: unknown) => {
        if (!qemu.running) throw err;
        throw new IsolaError(
          'E_SANDBOX_BOOT_TIMEOUT',
          `guest kernel did not reach init within ${Math.round(kernelMs)} ms`,
          {
            details: { stage: 'kernel', consoleTail: qemu.console.slice(-20) },
          },
        );
      },
    );
    initSeen.catch(() => {});
    const ready = agent.waitReady(left());
    ready.catch(() => {});
    await race(attempt.qmp.execute('cont'));
    const tCont = performance.now();
    const [tInit] = await race(Promise.all([initSeen, ready]));
    await race(agent.hello(left()));
    const tReady = performance.now();
    agent.on('close', () => {
      if (this._state === 'running') this._state = nextState(this._state, 'crashed');
    });
    return {
      qemuStartMs: tQmp - t0,
      kernelToInitMs: tInit - tCont,
      agentStartMs: tReady - tInit,
      totalMs: tReady - t0,
    };
  }

  private requireRunning(): AgentClient {
    if (this._state !== 'running' || !this.current?.agent) {
      throw new IsolaError(
        'E_SANDBOX_INVALID_STATE',
        `sandbox ${this.id} is ${this._state}, not running`,
        {
          details: { state: this._state },
        },
      );
    }
    return this.current.agent;
  }

  async exec(req: ExecRequest, io?: ExecIo): Promise<SandboxProcess> {
    const agent = this.requireRunning();
    const env = { ...this.spec.env, ...req.env };
    return agent.exec({ ...req, env }, io);
  }

  async run(
    argv: string[],
    opts: Omit<ExecRequest, 'argv' | 'stdin'> & { input?: string | Buffer } = {},
  ): Promise<RunResult> {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const { input, ...rest } = opts;
    const proc = await this.exec(
      { ...rest, argv, stdin: input !== undefined },
      { onStdout: (d) => out.push(d), onStderr: (d) => err.push(d) },
    );
    if (input !== undefined) {
      await proc.writeStdin(input);
      await proc.closeStdin();
    }
    const status = await proc.exited;
    return {
      ...status,
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(err).toString('utf8'),
    };
  }

  connect(port: number): Duplex {
    return this.requireRunning().connect(port);
  }

  async functionChannel(): Promise<Duplex> {
    this.requireRunning();
    if (!this.spec.functionPort) {
      throw new IsolaError('E_INVALID_SPEC', 'this sandbox was created without functionPort');
    }
    return connectUnix(path.join(this.dir, 'fn.sock'), FUNCTION_CHANNEL_CONNECT_MS);
  }

  info(): Promise<GuestInfo> {
    return this.requireRunning().info();
  }

  readFile(p: string): Promise<Buffer> {
    return this.requireRunning().readFile(p);
  }

  writeFile(p: string, data: Buffer | string, mode?: number): Promise<void> {
    return this.requireRunning().writeFile(p, data, mode);
  }

  async pause(): Promise<void> {
    this.requireRunning();
    await this.current!.qmp!.execute('stop');
  }

  async resume(): Promise<void> {
    this.requireRunning();
    await this.current!.qmp!.execute('cont');
  }

  async stop(): Promise<void> {
    if (this._state === 'stopped' || this._state === 'created') {
      this.move('stop');
      return;
    }
    this.move('stop');
    const a = this.current;
    if (a?.qemu.running) {
      const timeout = this.spec.timeouts.stopMs ?? STOP_TIMEOUT_MS;
      if (a.agent && !a.agent.isClosed) {
        await a.agent.shutdown(timeout).catch(() => undefined);
      }
      const timer = new Promise((r) => setTimeout(r, timeout).unref());
      await Promise.race([a.qemu.exited, timer]);
    }
    await this.teardownAttempt();
    await this.releaseCgroups();
    if (this._state === 'stopping') this.move('stopped');
  }

  async destroy(): Promise<void> {
    if (this._state === 'destroyed') return;
    this._state = nextState(this._state, 'destroy');
    await this.teardownAttempt();
    await this.releaseResources();
  }

  private async teardownAttempt(): Promise<void> {
    const a = this.current;
    this.current = null;
    if (a) {
      a.agent?.close();
      a.qmp?.close();
      await a.qemu.kill();
    }
    await this.releaseCgroups();
  }

  private async releaseCgroups(): Promise<void> {
    // After QEMU exits the kernel needs a moment to empty the cgroup before rmdir succeeds.
    for (let i = 0; i < 100; i++) {
      const busy = this.record.cgroups.filter((d) => cgroupPids(d).length > 0);
      if (busy.length === 0) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    removeCgroups(this.record.cgroups);
  }

  private async releaseResources(): Promise<void> {
    await this.releaseCgroups();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
