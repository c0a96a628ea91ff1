// The microvm driver: each sandbox is a QEMU `microvm` with its own Linux kernel, the guest
// image as a read-only virtio-blk disk under a tmpfs overlay, and the agent on a virtio-serial
// port. Boot: spawn QEMU paused inside the sandbox cgroups, connect QMP and the agent socket,
// release the CPUs, wait for the agent; a boot that does not reach the agent within the watchdog
// time is killed and retried (counted in the boot report).

import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  closeSync,
  createReadStream,
  createWriteStream,
  existsSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { cacheDir, loadAssets, runDir } from '../../assets/paths.js';
import { IsolaError, toIsolaError } from '../../errors.js';
import { attachNetwork, releaseUplink } from '../../net/attach.js';
import { POD_TAP, type PodLink, attachPod, detachPod, discoverPodLink } from '../../net/pod.js';
import { NO_EGRESS } from '../../net/policy.js';
import { GUEST_LINK, type Uplink } from '../../net/pool.js';
import { AGENT_VERSION, type GuestInfo, PROTOCOL_VERSION } from '../../protocol/messages.js';
import { envNumber } from '../../util/env.js';
import { type AccelDecision, chooseAccel, qemuVersion, tcgTscKhz } from '../../vmm/accel.js';
import {
  cgroupPids,
  createSandboxCgroups,
  removeCgroups,
  sandboxCgroupPaths,
} from '../../vmm/cgroup.js';
import {
  type JailPlan,
  TAP_FD,
  allocateJailId,
  jailBinds,
  jailEnabled,
  prepareJailFiles,
  releaseJailId,
} from '../../vmm/jail.js';
import {
  type Accel,
  type DiskLimits,
  type VmDescription,
  buildQemuArgs,
} from '../../vmm/qemu-args.js';
import { QemuProcess, processStartTime } from '../../vmm/qemu-process.js';
import { QmpClient, connectUnix } from '../../vmm/qmp.js';
import { SEALED_MEMORY_PATH, releaseSealedMemory, sealedMemory } from '../../vmm/sealed-memory.js';
import {
  QMP_CONNECT_TIMEOUT_MS,
  STOP_TIMEOUT_MS,
  bootTimeoutMs,
  kernelBootTimeoutMs,
} from '../../vmm/timeouts.js';
import { AgentClient, type ExecIo } from '../agent-client.js';
import { ControlChannel } from '../control-channel.js';
import { type SandboxState, nextState } from '../lifecycle.js';
import { reap } from '../reaper.js';
import { type OwnerRecord, newOwnerRecord, sandboxDir, writeOwnerRecord } from '../run-record.js';
import type {
  BootReport,
  ExecRequest,
  RestoreOptions,
  RestoreReport,
  RunResult,
  Sandbox,
  SandboxCapabilities,
  SandboxDriver,
  SandboxProcess,
} from '../sandbox.js';
import {
  SNAPSHOT_FORMAT,
  SNAPSHOT_MEMORY,
  SNAPSHOT_META,
  SNAPSHOT_STATE,
  type SnapshotInputs,
  type SnapshotMeta,
  assertFresh,
  readSnapshotMeta,
  staleReasons,
  writeSnapshotMeta,
} from '../snapshot.js';
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
/** Saving device state (no RAM) takes milliseconds; loading it the same. */
const MIGRATION_TIMEOUT_MS = 30_000;
const MIGRATION_POLL_MS = 2;
/** A restored guest answers within a second under TCG; this bounds a stuck one. */
const RESTORE_TIMEOUT_MS = 20_000;
/**
 * Per-drive I/O limits: $ISOLA_DISK_MBPS MiB/s (default 100) and $ISOLA_DISK_IOPS operations/s
 * (default 2000), bursts of four times that for 30 s; 0 turns a limit off.
 */
export function diskLimits(env: NodeJS.ProcessEnv = process.env): DiskLimits | undefined {
  const mbps = envNumber('ISOLA_DISK_MBPS', 100, env);
  const iops = envNumber('ISOLA_DISK_IOPS', 2000, env);
  if (mbps === 0 || iops === 0) return undefined;
  return { bytesPerS: Math.round(mbps * 1024 * 1024), opsPerS: Math.round(iops) };
}

/** After a sandbox base snapshot could not be made, creates boot for this long before a retry. */
const BASE_RETRY_MS = 10 * 60_000;
/** Fresh entropy handed to each clone (bytes). */
const CLONE_ENTROPY_BYTES = 64;

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

  private async machine(
    accel: SandboxSpec['accel'],
  ): Promise<{ accel: Accel; tscKhz: number | null }> {
    const assets = loadAssets();
    let decision: AccelDecision;
    if (accel !== 'auto') {
      decision = await chooseAccel(assets, { override: accel });
    } else {
      this.accel ??= chooseAccel(assets);
      decision = await this.accel;
    }
    let tscKhz: number | null = null;
    if (decision.accel === 'tcg') {
      this.tsc ??= tcgTscKhz(assets);
      tscKhz = await this.tsc;
    }
    return { accel: decision.accel, tscKhz };
  }

  async create(input: SandboxSpecInput): Promise<Sandbox> {
    const spec = parseSandboxSpec(input);
    if (spec.start === 'auto' && startsFromSnapshot(spec)) {
      const dir = await this.sandboxBase(spec).catch(() => null);
      if (dir) {
        await this.ensureReaped();
        const meta = readSnapshotMeta(dir);
        const assets = loadAssets();
        return new MicroVmSandbox(
          this,
          newId(),
          spec,
          meta.inputs.accel,
          meta.inputs.tscKhz,
          { kernel: assets.kernel, initrd: assets.initrd, rootfs: assets.rootfs },
          { dir, meta, clockOffsetMs: 0 },
        );
      }
      // No snapshot could be made here (e.g. no space): boot, as `start: 'boot'` would.
    }
    if (spec.memoryFile && existsSync(spec.memoryFile)) {
      throw new IsolaError(
        'E_INVALID_SPEC',
        `invalid sandbox spec: memoryFile: ${spec.memoryFile} already exists`,
      );
    }
    await this.ensureReaped();
    const assets = loadAssets();
    const { accel, tscKhz } = await this.machine(spec.accel);
    return new MicroVmSandbox(
      this,
      newId(),
      spec,
      accel,
      tscKhz,
      {
        kernel: spec.kernel ?? assets.kernel,
        initrd: spec.initrd ?? assets.initrd,
        rootfs: spec.guestImage ?? assets.rootfs,
      },
      null,
    );
  }

  private readonly bases = new Map<string, Promise<string>>();

  /**
   * The cached snapshot of a freshly booted guest of this spec's shape (ISOLA_CACHE/snapshots/
   * sandbox-<key>), made on first use by booting one. Its memory is only ever mapped by clones
   * through a sealed copy (sealed-memory.ts), so sandboxes of different owners may share it.
   */
  private sandboxBase(spec: SandboxSpec): Promise<string> {
    const run = async (): Promise<string> => {
      const inputs = await this.snapshotInputs();
      const shape = {
        memoryMiB: spec.memoryMiB,
        vcpus: spec.vcpus,
        functionPort: spec.functionPort,
        dns: spec.network ? spec.network.dns : null,
      };
      const key = createHash('sha256')
        .update(JSON.stringify({ inputs, shape }))
        .digest('hex')
        .slice(0, 24);
      const root = path.join(cacheDir(), 'snapshots');
      const dir = path.join(root, `sandbox-${key}`);
      if (existsSync(path.join(dir, SNAPSHOT_META))) return dir;
      mkdirSync(root, { recursive: true, mode: 0o700 });
      const tmp = mkdtempSync(path.join(root, '.tmp-sandbox-'));
      let sb: Sandbox | null = null;
      try {
        sb = await this.create({
          memoryMiB: shape.memoryMiB,
          vcpus: shape.vcpus,
          functionPort: shape.functionPort,
          hostname: 'isola-base',
          memoryFile: path.join(tmp, SNAPSHOT_MEMORY),
          start: 'boot',
          ...(spec.network ? { network: { egress: NO_EGRESS, dns: spec.network.dns } } : {}),
        });
        await sb.start();
        await sb.snapshot(tmp, { kind: 'sandbox-base' });
        if (existsSync(path.join(dir, SNAPSHOT_META))) return dir; // another process was faster
        rmSync(dir, { recursive: true, force: true });
        renameSync(tmp, dir);
        removeStaleBases(root, inputs);
        return dir;
      } finally {
        await sb?.destroy().catch(() => undefined);
        rmSync(tmp, { recursive: true, force: true });
      }
    };
    const id = JSON.stringify([spec.memoryMiB, spec.vcpus, spec.functionPort, spec.network?.dns]);
    let p = this.bases.get(id);
    if (!p) {
      p = run();
      this.bases.set(id, p);
      // A failed build is remembered for a while: every create would otherwise boot twice (the
      // failed build, then the fallback boot).
      p.catch(() => setTimeout(() => this.bases.delete(id), BASE_RETRY_MS).unref());
    }
    return p;
  }

  /** The snapshot in `dir` is going away: let go of its sealed memory (running clones keep theirs). */
  async forgetSnapshot(dir: string): Promise<void> {
    await releaseSealedMemory(path.join(dir, SNAPSHOT_MEMORY));
  }

  /** What a snapshot taken now would record; a restore requires the same. */
  async snapshotInputs(): Promise<SnapshotInputs> {
    const { accel, tscKhz } = await this.machine('auto');
    return {
      format: SNAPSHOT_FORMAT,
      assets: loadAssets().digest,
      agentVersion: AGENT_VERSION,
      protocolVersion: PROTOCOL_VERSION,
      qemu: qemuVersion(),
      accel,
      tscKhz,
    };
  }

  async fromSnapshot(dir: string, opts: RestoreOptions = {}): Promise<Sandbox> {
    const meta = readSnapshotMeta(dir);
    assertFresh(dir, meta, await this.snapshotInputs());
    for (const f of [SNAPSHOT_MEMORY, SNAPSHOT_STATE]) {
      if (!existsSync(path.join(dir, f)))
        throw new IsolaError('E_SNAPSHOT', `snapshot ${dir} has no ${f}`);
    }
    const drives = meta.vm.drives.map((d, i) => ({ ...d, path: opts.drives?.[i] ?? d.path }));
    if (opts.drives && opts.drives.length !== meta.vm.drives.length) {
      throw new IsolaError(
        'E_INVALID_SPEC',
        `the snapshot has ${meta.vm.drives.length} drives; ${opts.drives.length} given`,
      );
    }
    await this.ensureReaped();
    if (opts.memoryFile) {
      if (existsSync(opts.memoryFile)) {
        throw new IsolaError('E_INVALID_SPEC', `memoryFile ${opts.memoryFile} already exists`);
      }
      // A reflink where the filesystem has them; else a copy that keeps the holes (pages the
      // guest never wrote, or gave back through free page reporting) as holes.
      try {
        execFileSync(
          'cp',
          ['--sparse=always', '--reflink=auto', path.join(dir, SNAPSHOT_MEMORY), opts.memoryFile],
          { stdio: ['ignore', 'ignore', 'pipe'] },
        );
      } catch (err) {
        throw new IsolaError(
          'E_SNAPSHOT',
          `cannot copy the snapshot's memory: ${String((err as { stderr?: Buffer }).stderr ?? err)}`,
        );
      }
    }
    const spec = parseSandboxSpec({
      ...(opts.memoryFile ? { memoryFile: opts.memoryFile } : {}),
      vcpus: meta.vm.vcpus,
      memoryMiB: meta.vm.memoryMiB,
      drives,
      functionPort: meta.vm.functionPort,
      env: opts.env ?? {},
      accel: meta.inputs.accel,
      ...(opts.hostname ? { hostname: opts.hostname } : {}),
      // The NIC is part of the device state; the clone's policy is its own (default: none).
      ...(meta.vm.network
        ? { network: { egress: opts.egress ?? NO_EGRESS, dns: meta.vm.network.dns } }
        : {}),
    });
    const assets = loadAssets();
    const id = newId();
    return new MicroVmSandbox(
      this,
      id,
      spec,
      meta.inputs.accel,
      meta.inputs.tscKhz,
      { kernel: assets.kernel, initrd: assets.initrd, rootfs: assets.rootfs },
      { dir, meta, clockOffsetMs: opts.clockOffsetMs ?? 0 },
    );
  }
}

/** Whether a spec can start from a cached snapshot (nothing in it a snapshot cannot carry). */
export function startsFromSnapshot(spec: SandboxSpec): boolean {
  return (
    process.env.ISOLA_SANDBOX_SNAPSHOTS !== '0' &&
    spec.drives.length === 0 &&
    spec.memoryFile === undefined &&
    spec.kernel === undefined &&
    spec.initrd === undefined &&
    spec.guestImage === undefined &&
    spec.podNetwork === undefined &&
    spec.accel === 'auto'
  );
}

/** Sandbox base snapshots made for other guest assets, agent or QEMU: never usable again. */
function removeStaleBases(root: string, inputs: SnapshotInputs): void {
  for (const name of readdirSync(root)) {
    if (!name.startsWith('sandbox-')) continue;
    try {
      const meta = readSnapshotMeta(path.join(root, name));
      if (staleReasons(meta.inputs, inputs).length === 0) continue;
    } catch {
      // unreadable: not a snapshot
    }
    rmSync(path.join(root, name), { recursive: true, force: true });
  }
}

function newId(): string {
  return `sb-${randomBytes(6).toString('hex')}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

type BootTimings = Pick<BootReport, 'qemuStartMs' | 'kernelToInitMs' | 'agentStartMs' | 'totalMs'>;

interface Attempt {
  qemu: QemuProcess;
  qmp: QmpClient | null;
  agent: AgentClient | null;
  ctl: ControlChannel | null;
  /** The jail's user id (also its group), released with the attempt. */
  jailId: number | null;
  uplink: Uplink | null;
  /**
   * The network being attached while QEMU starts (forwarding stays off until the ruleset is
   * in place); a start waits for it before the sandbox counts as running.
   */
  network: Promise<void>;
  /** Wired into a container engine's pod namespace (its redirect is taken off at teardown). */
  pod: { netns: string; link: PodLink } | null;
}

/** The empty folder every jail mounts its root on, in its own mount namespace. */
function jailRootDir(): string {
  const dir = path.join(runDir(), 'jail-root');
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  return dir;
}

/** The kvm group, so a jailed VMM may open /dev/kvm. */
function kvmGroup(): number[] {
  try {
    return [statSync('/dev/kvm').gid];
  } catch {
    return [];
  }
}

class MicroVmSandbox implements Sandbox {
  readonly driver = 'microvm';
  readonly capabilities: SandboxCapabilities = { ownKernel: true, snapshot: true, network: true };
  private _state: SandboxState = 'created';
  private _boot: BootReport | null = null;
  private _restore: RestoreReport | null = null;
  private current: Attempt | null = null;
  /** A restore's VMM spawned ahead of start() (prepare()), with the time it took. */
  private preparing: Promise<number> | null = null;
  private readonly dir: string;
  private readonly record: OwnerRecord;

  constructor(
    private readonly owner: MicroVmDriver,
    readonly id: string,
    private readonly spec: SandboxSpec,
    private readonly accel: Accel,
    private readonly tscKhz: number | null,
    private readonly files: { kernel: string; initrd: string; rootfs: string },
    /** Set for a sandbox that resumes a snapshot instead of booting. */
    private readonly source: {
      dir: string;
      meta: SnapshotMeta;
      clockOffsetMs: number;
    } | null,
  ) {
    this.dir = sandboxDir(id);
    this.record = newOwnerRecord(id, sandboxCgroupPaths(id));
  }

  get restore(): RestoreReport | null {
    return this._restore;
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

  /** The sandbox's uplink (host and namespace addresses), when it has a network. */
  get uplink(): Uplink | null {
    return this.current?.uplink ?? null;
  }

  private move(action: Parameters<typeof nextState>[1]): void {
    this._state = nextState(this._state, action);
  }

  async start(): Promise<void> {
    if (this.source) return this.startRestore();
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

  /**
   * The VMM's own folder (its sockets), the only part of the sandbox folder its jail sees: the
   * owner record beside it, which the reaper trusts, stays out of a compromised VMM's reach.
   */
  private get vmDir(): string {
    return path.join(this.dir, 'vm');
  }

  private sockets() {
    const d = this.vmDir;
    return {
      qmpSocket: path.join(d, 'qmp.sock'),
      agentSocket: path.join(d, 'agent.sock'),
      controlSocket: path.join(d, 'ctl.sock'),
      consoleSocket: path.join(d, 'console.sock'),
      functionSocket: path.join(d, 'fn.sock'),
    };
  }

  /**
   * The VMM's jail: its own user, what it may see, its own network namespace (or the pod's,
   * `podNetns`, where its tap goes instead).
   */
  private jailPlan(vm: VmDescription, podNetns?: string, memfdFrom?: string): JailPlan {
    const id = allocateJailId();
    try {
      const mem = vm.memoryFile;
      if (mem?.share) {
        // The memory of a sandbox that will be snapshotted is its own: created here (QEMU would
        // create it in a folder the jail cannot write) and owned by the jail's user.
        if (!existsSync(mem.path)) {
          const fd = openSync(mem.path, 'wx', 0o600);
          try {
            ftruncateSync(fd, vm.memoryMiB * 1024 * 1024);
          } finally {
            closeSync(fd);
          }
        }
      }
      const binds = jailBinds(vm, this.vmDir);
      prepareJailFiles(binds, id, id);
      return {
        root: jailRootDir(),
        uid: id,
        gid: id,
        groups: vm.accel === 'kvm' ? kvmGroup() : [],
        binds,
        netns: true,
        ...(podNetns ? { netnsPath: podNetns } : {}),
        ...(memfdFrom ? { memfdFrom } : {}),
        ...(vm.network ? { tap: podNetns ? POD_TAP : GUEST_LINK.tap } : {}),
      };
    } catch (err) {
      releaseJailId(id);
      throw err;
    }
  }

  /**
   * Spawn QEMU (paused) in fresh cgroups and connect QMP, the console and the agent socket.
   * Boot and restore share it; a restore's VM is its snapshot's layout with RAM mapped private.
   */
  private async spawnVmm(
    left: () => number,
  ): Promise<{ attempt: Attempt; race: <T>(p: Promise<T>) => Promise<T>; qmpAt: number }> {
    const socks = this.sockets();
    rmSync(this.vmDir, { recursive: true, force: true });
    mkdirSync(this.vmDir, { recursive: true, mode: 0o700 });
    const overhead = this.spec.overheadMiB ?? DEFAULT_OVERHEAD_MIB;
    const cg = createSandboxCgroups(this.id, {
      memoryBytes: (this.spec.memoryMiB + overhead) * 1024 * 1024,
      cpus: this.spec.vcpus + CPU_QUOTA_EXTRA,
      pids: this.spec.pidsLimit ?? DEFAULT_PIDS_LIMIT,
    });
    const disk = diskLimits();
    const podNs = this.spec.podNetwork?.netns;
    const pod = podNs ? await discoverPodLink(podNs) : null;
    // A clone maps its snapshot's memory private; jailed, from a sealed copy (sealed-memory.ts).
    const cloneMemory =
      this.source && !this.spec.memoryFile ? path.join(this.source.dir, SNAPSHOT_MEMORY) : null;
    const sealed = cloneMemory && jailEnabled() ? await sealedMemory(cloneMemory) : null;
    const vm: VmDescription = {
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
      // A clone keeps its source's kernel command line (its real hostname comes by `identity`).
      hostname: this.source?.meta.vm.hostname ?? this.spec.hostname ?? this.id,
      qmpSocket: socks.qmpSocket,
      agentSocket: socks.agentSocket,
      controlSocket: socks.controlSocket,
      consoleSocket: socks.consoleSocket,
      ...(this.spec.functionPort ? { functionSocket: socks.functionSocket } : {}),
      paused: true,
      tcgTbSizeMiB: TCG_TB_SIZE_MIB,
      ...(this.tscKhz ? { tscKhz: this.tscKhz } : {}),
      ...(this.source
        ? {
            memoryFile: this.spec.memoryFile
              ? { path: this.spec.memoryFile, share: true }
              : { path: sealed ? SEALED_MEMORY_PATH : cloneMemory!, share: false },
            incoming: true,
          }
        : this.spec.memoryFile
          ? { memoryFile: { path: this.spec.memoryFile, share: true } }
          : {}),
      ...(this.spec.network
        ? {
            network: {
              tapFd: TAP_FD,
              mac: GUEST_LINK.guestMac,
              address: `${GUEST_LINK.guest}/${GUEST_LINK.prefix}`,
              gateway: GUEST_LINK.gateway,
              dns: this.spec.network.dns,
            },
          }
        : pod
          ? {
              network: {
                tapFd: TAP_FD,
                mac: pod.mac,
                address: pod.address,
                gateway: pod.gateway ?? '',
                dns: [],
              },
            }
          : {}),
      seccomp: true,
      ...(disk ? { diskLimits: disk } : {}),
    };
    const jail = jailEnabled() ? this.jailPlan(vm, podNs, sealed ?? undefined) : null;
    if ((this.spec.network || pod) && !jail) {
      throw new IsolaError('E_NETWORK', 'sandbox networks need root (and the jail) on the host');
    }
    let qemu: QemuProcess;
    try {
      qemu = await QemuProcess.spawn(buildQemuArgs(vm), { cgroupProcs: cg.procsFiles, jail });
    } catch (err) {
      if (jail) releaseJailId(jail.uid);
      throw err;
    }
    const attempt: Attempt = {
      qemu,
      qmp: null,
      agent: null,
      ctl: null,
      jailId: jail?.uid ?? null,
      uplink: null,
      network: Promise.resolve(),
      pod: pod && podNs ? { netns: podNs, link: pod } : null,
    };
    if (pod && podNs) {
      attempt.network = attachPod(podNs, pod);
      attempt.network.catch(() => {});
    }
    const egress = this.spec.network?.egress;
    if (egress) {
      attempt.network = attachNetwork(qemu.pid, egress).then((u) => {
        attempt.uplink = u;
        this.record.uplink = u.hostIf;
        writeOwnerRecord(this.dir, this.record);
      });
      attempt.network.catch(() => {});
    }
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
      QmpClient.connect(socks.qmpSocket, Math.min(QMP_CONNECT_TIMEOUT_MS, left())),
    );
    const qmpAt = performance.now();
    await race(qemu.attachConsole(socks.consoleSocket, left()));
    const agentSock = await race(connectUnix(socks.agentSocket, left()));
    attempt.agent = new AgentClient(
      agentSock,
      this.source ? { firstId: randomInt(1, 2 ** 30) } : {},
    );
    // Connected for the VM's whole life, so that guestctl's reads on the port block (no host
    // means end-of-file to the guest), in a snapshot's source as in its clones.
    attempt.ctl = new ControlChannel(await race(connectUnix(socks.controlSocket, left())));
    return { attempt, race, qmpAt };
  }

  private async bootSteps(t0: number, deadline: number): Promise<BootTimings> {
    const left = () => Math.max(1, deadline - performance.now());
    const { attempt, race, qmpAt: tQmp } = await this.spawnVmm(left);
    const qemu = attempt.qemu;
    const agent = attempt.agent!;
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
    await race(attempt.qmp!.execute('cont'));
    const tCont = performance.now();
    const [tInit] = await race(Promise.all([initSeen, ready]));
    await race(agent.hello(left()));
    await race(attempt.network);
    const tReady = performance.now();
    this.watchAgent(agent);
    return {
      qemuStartMs: tQmp - t0,
      kernelToInitMs: tInit - tCont,
      agentStartMs: tReady - tInit,
      totalMs: tReady - t0,
    };
  }

  private watchAgent(agent: AgentClient): void {
    agent.on('close', () => {
      if (this._state === 'running') this._state = nextState(this._state, 'crashed');
    });
  }

  async prepare(): Promise<void> {
    if (!this.source) {
      throw new IsolaError('E_SANDBOX_INVALID_STATE', 'prepare() is for sandboxes from a snapshot');
    }
    if (this._state !== 'created') {
      throw new IsolaError('E_SANDBOX_INVALID_STATE', `cannot prepare a ${this._state} sandbox`);
    }
    this.preparing ??= (async () => {
      writeOwnerRecord(this.dir, this.record);
      const t0 = performance.now();
      const deadline = t0 + RESTORE_TIMEOUT_MS;
      const { attempt } = await this.spawnVmm(() => Math.max(1, deadline - performance.now()));
      await attempt.network;
      return performance.now() - t0;
    })();
    await this.preparing;
  }

  /** Resume the snapshot: load the device state into the (pre-)spawned VMM, run, re-identify. */
  private async startRestore(): Promise<void> {
    const t0 = performance.now();
    const prespawned = this.preparing !== null;
    try {
      const spawnMs = prespawned ? 0 : await this.prepareTimed();
      if (prespawned) await this.preparing;
      this.move('start');
      const a = this.current;
      if (!a?.qmp || !a.agent) throw new IsolaError('E_RESTORE', 'the VMM is gone');
      const died = a.qemu.exited.then(() => {
        throw a.qemu.exitError();
      });
      died.catch(() => {});
      const race = <T>(p: Promise<T>) => Promise.race([p, died]);
      const deadline = t0 + RESTORE_TIMEOUT_MS;
      const left = () => Math.max(1, deadline - performance.now());

      const tLoad = performance.now();
      await race(
        a.qmp.execute('migrate-set-capabilities', {
          capabilities: [{ capability: 'x-ignore-shared', state: true }],
        }),
      );
      const state = path.join(this.source!.dir, SNAPSHOT_STATE);
      // QEMU listens, isola streams the state file in: no shell or `cat` in the jail, and
      // QEMU's seccomp filter forbids starting processes anyway.
      const sock = path.join(this.vmDir, 'migrate-in.sock');
      rmSync(sock, { force: true });
      await race(a.qmp.execute('migrate-incoming', { uri: `unix:${sock}` }));
      const hangUp = await race(streamInto(sock, state, left()));
      try {
        await race(waitMigration(a.qmp, left()));
      } finally {
        hangUp();
      }
      const tCont = performance.now();
      await race(a.qmp.execute('cont'));
      // The guest's virtio-serial queues come back as they were: a reply the source was sent
      // last may arrive again. The agent client's request ids start at a random number here,
      // so such a reply matches nothing (no handshake on the restore path; the agent's version
      // is part of the snapshot's inputs). Its own identity before anything in the guest uses the clock or draws random numbers.
      await race(
        a.ctl!.call(
          [
            'identity',
            String(Date.now() + this.source!.clockOffsetMs),
            this.spec.hostname ?? this.id,
            randomBytes(CLONE_ENTROPY_BYTES).toString('hex'),
          ],
          left(),
        ),
      );
      await race(a.network);
      const tDone = performance.now();
      this.watchAgent(a.agent);
      this._restore = {
        prespawned,
        spawnMs,
        loadMs: tCont - tLoad,
        resumeMs: tDone - tCont,
        totalMs: tDone - t0,
      };
      this.move('booted');
    } catch (err) {
      const e = toIsolaError(err);
      if (this._state === 'starting') this.move('bootFailed');
      await this.teardownAttempt();
      await this.releaseResources();
      if (e.code === 'E_SANDBOX_INVALID_STATE') throw e;
      throw new IsolaError('E_RESTORE', `restore from ${this.source!.dir} failed: ${e.message}`, {
        cause: e,
        details: { consoleTail: e.details?.consoleTail },
      });
    }
  }

  private async prepareTimed(): Promise<number> {
    await this.prepare();
    return this.preparing ? await this.preparing : 0;
  }

  async snapshot(dir: string, extra: Record<string, unknown> = {}): Promise<SnapshotMeta> {
    const a = this.current;
    this.requireRunning();
    const mem = this.spec.memoryFile;
    if (!mem || path.resolve(path.dirname(mem)) !== path.resolve(dir)) {
      throw new IsolaError(
        'E_SNAPSHOT',
        `a snapshot goes into the folder of the sandbox's memoryFile (${mem ?? 'none set'})`,
      );
    }
    const inputs = await this.owner.snapshotInputs();
    if (inputs.accel !== this.accel) {
      throw new IsolaError(
        'E_SNAPSHOT',
        `this sandbox runs ${this.accel}, the host now ${inputs.accel}`,
      );
    }
    this.move('stop');
    try {
      const qmp = a!.qmp!;
      const t0 = performance.now();
      await qmp.execute('stop');
      await qmp.execute('migrate-set-capabilities', {
        capabilities: [{ capability: 'x-ignore-shared', state: true }],
      });
      const state = path.join(dir, SNAPSHOT_STATE);
      await receiveInto(
        path.join(this.vmDir, 'migrate-out.sock'),
        state,
        a!.jailId,
        async (uri) => {
          await qmp.execute('migrate', { uri });
          await waitMigration(qmp, MIGRATION_TIMEOUT_MS);
        },
      );
      const saveMs = performance.now() - t0;
      const meta: SnapshotMeta = {
        inputs,
        vm: {
          vcpus: this.spec.vcpus,
          memoryMiB: this.spec.memoryMiB,
          drives: this.spec.drives.map((d) => ({
            path: d.path,
            readonly: d.readonly,
            format: d.format,
          })),
          functionPort: this.spec.functionPort,
          hostname: this.source?.meta.vm.hostname ?? this.spec.hostname ?? this.id,
          ...(this.spec.network ? { network: { dns: this.spec.network.dns } } : {}),
        },
        extra,
        createdAt: new Date().toISOString(),
        saveMs,
        stateBytes: statSync(state).size,
      };
      if (path.basename(mem) !== SNAPSHOT_MEMORY) {
        throw new IsolaError('E_SNAPSHOT', `memoryFile must be named ${SNAPSHOT_MEMORY}`);
      }
      // The guest's memory may hold a function's secrets: root only. Jailed clones get it as a
      // sealed memfd (sealed-memory.ts), never the file.
      chmodSync(dir, 0o700);
      chownSync(mem, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
      chmodSync(mem, 0o600);
      chmodSync(state, 0o600);
      writeSnapshotMeta(dir, meta);
      return meta;
    } catch (err) {
      const e = toIsolaError(err);
      throw new IsolaError('E_SNAPSHOT', `snapshot of ${this.id} failed: ${e.message}`, {
        cause: e,
      });
    } finally {
      // The guest's memory now belongs to the snapshot: this VM must never run again.
      await this.teardownAttempt();
      await this.releaseCgroups();
      if (this._state === 'stopping') this.move('stopped');
    }
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

  attach(execId: number, pid: number, io?: ExecIo): SandboxProcess {
    return this.requireRunning().attach(execId, pid, io);
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
    return connectUnix(this.sockets().functionSocket, FUNCTION_CHANNEL_CONNECT_MS);
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
      a.ctl?.close();
      a.qmp?.close();
      await a.qemu.kill();
      await a.network.catch(() => {});
      if (a.uplink) await releaseUplink(a.uplink);
      if (a.pod) await detachPod(a.pod.netns, a.pod.link);
      if (a.jailId !== null) releaseJailId(a.jailId);
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

/** Poll QMP until the current migration (out or in) completed; throw on failure or timeout. */
async function waitMigration(qmp: QmpClient, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const r = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
    if (r.status === 'completed') return;
    if (r.status === 'failed' || r.status === 'cancelled') {
      throw new IsolaError('E_SNAPSHOT', `migration ${r.status}: ${r['error-desc'] ?? ''}`);
    }
    if (performance.now() > deadline) {
      throw new IsolaError('E_SNAPSHOT', `migration still ${r.status} after ${timeoutMs} ms`);
    }
    await sleep(MIGRATION_POLL_MS);
  }
}

/**
 * Connect to QEMU's incoming-migration socket and start streaming `file` into it. QEMU closes
 * the connection as soon as it has read the end-of-state marker, which may be before the pipe
 * has seen its own end: the migration's status (waitMigration), not the pipe, says whether the
 * load succeeded. Returns a function that drops the connection.
 */
async function streamInto(sock: string, file: string, timeoutMs: number): Promise<() => void> {
  const conn = await connectUnix(sock, timeoutMs);
  pipeline(createReadStream(file), conn).catch(() => {});
  return () => conn.destroy();
}

/**
 * Listen on `sock` (owned by the jailed user so QEMU may connect), run `migrate(uri)`, and write
 * what QEMU sends to `file`; resolves when both the migration and the file are complete.
 */
async function receiveInto(
  sock: string,
  file: string,
  owner: number | null,
  migrate: (uri: string) => Promise<void>,
): Promise<void> {
  rmSync(sock, { force: true });
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(sock, () => resolve());
  });
  try {
    if (owner !== null) chownSync(sock, owner, owner);
    const written = new Promise<void>((resolve, reject) => {
      server.once('connection', (conn) => {
        pipeline(conn, createWriteStream(file, { mode: 0o600 })).then(resolve, reject);
      });
    });
    written.catch(() => {});
    await migrate(`unix:${sock}`);
    await written;
  } finally {
    server.close();
    rmSync(sock, { force: true });
  }
}
