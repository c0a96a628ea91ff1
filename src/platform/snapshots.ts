// Snapshots for fast starts, in the manner of Firecracker snapshots and Lambda SnapStart:
//
//   base snapshot   one per guest build and VM size: a booted guest, agent ready, an empty drive
//                   slot (a sparse placeholder the size of the largest code bundle).
//   function        one per function version: a clone of the base with the bundle in the slot,
//   snapshot        mounted, the runtime started and the handler loaded (secrets are not in it:
//                   a clone's runtime gets them when restored).
//   clone           an instance: a VMM mapping the function snapshot's memory copy-on-write and
//                   loading its device state, then given its own clock, hostname and entropy.
//
// Pre-spawned VMMs (QEMU started with its devices, waiting for the state) are kept per function
// snapshot while its version runs, so that a restore pays neither process start nor device
// set-up; they are parked when it scales to zero.
//
// Folders live in DATA_DIR/snapshots: `base-<key>` and `fn-<key>`, the key a digest of every
// input (guest assets, agent and protocol versions, QEMU, accelerator, VM size; for functions
// also the bundle, handler and environment). A changed input is a new key; the old
// folder is never restored (the driver also checks each snapshot's recorded inputs) and is
// removed: function snapshots when their version retires, everything stale at start.

import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IsolaError, toIsolaError } from '../errors.js';
import { SNAPSHOT_CLOCK_SKEW_MS } from '../guest/clone-random.js';
import { guestResolvers, networkEnabled, sandboxNetwork } from '../net/attach.js';
import { type EgressPolicy, NO_EGRESS } from '../net/policy.js';
import { MicroVmDriver } from '../sandbox/drivers/microvm.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import {
  SNAPSHOT_MEMORY,
  SNAPSHOT_META,
  type SnapshotInputs,
  type SnapshotMeta,
  readSnapshotMeta,
  staleReasons,
} from '../sandbox/snapshot.js';
import { Limiter } from '../util/limiter.js';
import {
  INIT_TIMEOUT_MS,
  type InstanceSpec,
  RuntimeChannel,
  launchNodeRuntime,
} from './instance.js';

/** The drive slot: room for the largest bundle image (250 MiB unpacked plus ext4 overhead). */
export const SLOT_BYTES = 512 * 1024 * 1024;
/** A failed function snapshot is not tried again sooner than this (the instance boots). */
const BUILD_RETRY_MS = 60_000;
/** A taken pre-spawned VMM is replaced this long after (the clone's first request goes first). */
const REFILL_DELAY_MS = 300;
/**
 * Stand-in invocations a template runs before its snapshot (fn-runtime.ts warmHandler): under
 * KVM enough for V8 to optimise the runtime's invocation path, so clones start JIT-warm. Under
 * TCG only a few (its functions compiled, not optimised): a clone translates every piece of
 * machine code it runs first, and optimised code is more of it (measured: first invocation
 * 420-515 ms after 300 rounds, 280-330 ms after 3; warm p50 4.5 ms against 5.5-8 ms).
 */
const WARMUP_ROUNDS = { kvm: 300, tcg: 3 } as const;
/** Restores at once; more wait (a burst over many functions restores a few at a time). */
const MAX_CONCURRENT_RESTORES = Math.max(2, os.cpus().length);
/** Snapshot builds at once: each keeps a vCPU busy for seconds under TCG. */
const BUILD_CONCURRENCY = 2;

export interface SnapshotPolicy {
  /** Pre-spawned VMMs kept per function snapshot (0: spawn at restore). */
  prespawnPerFunction: number;
  /** Pre-spawned VMMs kept in all. */
  prespawnMax: number;
}

export const DEFAULT_SNAPSHOT_POLICY: SnapshotPolicy = {
  prespawnPerFunction: Number(process.env.ISOLA_PRESPAWN ?? 1),
  prespawnMax: Number(process.env.ISOLA_PRESPAWN_MAX ?? 8),
};

/** What a function snapshot is made of: a Node.js instance spec without its per-instance parts. */
export type FunctionImage = Pick<
  InstanceSpec,
  'functionName' | 'version' | 'config' | 'env' | 'bundle'
> & { group: { key: string; tenantId: string; functionId: string } };

export interface Clone {
  sandbox: Sandbox;
  meta: SnapshotMeta;
  /** The snapshot had to be built for this start (it paid a boot or a template run). */
  built: boolean;
}

interface FnEntry {
  key: string;
  dir: string;
  meta: SnapshotMeta;
  spare: Sandbox[];
  filling: boolean;
  /** Scaled to zero: no pre-spawning until the next clone. */
  parked: boolean;
  /** The function version's egress policy: its pre-spawned VMMs get their network with it. */
  egress: EgressPolicy;
}

const digest = (v: unknown) =>
  createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 32);

export class SnapshotManager {
  private readonly driver = new MicroVmDriver();
  private readonly bases = new Map<string, Promise<string>>();
  private readonly fns = new Map<string, Promise<FnEntry>>();
  /** Function snapshot keys by instance group (what retiring a version removes). */
  private readonly byGroup = new Map<string, { key: string; group: FunctionImage['group'] }>();
  private readonly failed = new Map<string, { at: number; error: IsolaError }>();
  private inputs: Promise<SnapshotInputs> | null = null;
  /** Builds and restores are CPU-bound: a few at a time. */
  private readonly builds = new Limiter(BUILD_CONCURRENCY);
  private readonly restores = new Limiter(MAX_CONCURRENT_RESTORES);
  /** The clean-up at start (gc); builds and restores wait for it. */
  private cleaned: Promise<unknown> = Promise.resolve();
  private closed = false;
  readonly stats = { baseBuilds: 0, fnBuilds: 0, restores: 0, prespawned: 0, failures: 0 };

  constructor(
    readonly dir: string,
    private readonly policy: SnapshotPolicy = DEFAULT_SNAPSHOT_POLICY,
    private readonly log: (line: string) => void = () => undefined,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /**
   * Remove what cannot be used: half-built folders and snapshots made from other inputs (guest
   * build, agent, QEMU, accelerator). Valid function snapshots stay: a restarted server restores
   * from them without rebuilding. Run once at server start.
   */
  gc(): Promise<string[]> {
    const p = this.collect();
    this.cleaned = p.catch(() => undefined);
    return p;
  }

  private async collect(): Promise<string[]> {
    const inputs = await this.currentInputs();
    const removed: string[] = [];
    for (const name of readdirSync(this.dir)) {
      let keep = false;
      if (name === 'slot.img') keep = true;
      else if (name.startsWith('base-')) keep = this.isCurrentBase(name, inputs);
      else if (name.startsWith('fn-')) {
        try {
          const meta = readSnapshotMeta(path.join(this.dir, name));
          keep = staleReasons(meta.inputs, inputs).length === 0;
        } catch {
          keep = false;
        }
      }
      if (!keep) {
        void this.driver.forgetSnapshot(path.join(this.dir, name));
        rmSync(path.join(this.dir, name), { recursive: true, force: true });
        removed.push(name);
      }
    }
    return removed;
  }

  private isCurrentBase(name: string, inputs: SnapshotInputs): boolean {
    const m = /^base-(\d+)m-(\d+)c-([0-9a-f]+)$/.exec(name);
    return m !== null && m[3] === baseKey(inputs, Number(m[1]), Number(m[2]));
  }

  private currentInputs(): Promise<SnapshotInputs> {
    this.inputs ??= this.driver.snapshotInputs();
    return this.inputs;
  }

  /** State of a function version's snapshot, for the API. */
  status(groupKey: string): 'ready' | 'building' | 'failed' | 'none' {
    const key = this.byGroup.get(groupKey)?.key;
    if (!key) return 'none';
    if (this.failed.has(key)) return 'failed';
    const dir = path.join(this.dir, `fn-${key}`);
    return existsSync(path.join(dir, SNAPSHOT_META)) ? 'ready' : 'building';
  }

  /**
   * Build (or find) the function's snapshot ahead of the first start; never throws. No VMM is
   * pre-spawned for it until it runs (a function at zero holds no process).
   */
  async prepare(fn: FunctionImage): Promise<void> {
    // The key is registered for the group before this returns: a retire that follows (the
    // previous version's, in the same deploy) must see that the new group shares it.
    await this.fnKey(fn);
    this.fnSnapshot(fn).catch(() => undefined);
  }

  /** The function version scaled to zero: its pre-spawned VMMs go (the snapshot stays). */
  async park(groupKey: string): Promise<void> {
    const key = this.byGroup.get(groupKey)?.key;
    const entry = key ? this.settled.get(key) : undefined;
    if (!entry) return;
    entry.parked = true;
    const spare = entry.spare.splice(0);
    await Promise.all(spare.map((s) => s.destroy().catch(() => undefined)));
  }

  /**
   * A sandbox restored from the function's snapshot, running, its runtime process alive (its
   * exec id in meta.extra). Builds the snapshot first when needed.
   */
  async clone(fn: FunctionImage): Promise<Clone> {
    if (this.closed) throw new IsolaError('E_SHUTTING_DOWN', 'the server is shutting down');
    const key = await this.fnKey(fn);
    // Built for this start (it paid for a template run, or a boot) unless it was on disk.
    const built = !existsSync(path.join(this.dir, `fn-${key}`, SNAPSHOT_META));
    const entry = await this.fnSnapshot(fn);
    entry.parked = false;
    const sandbox = await this.restores.run(async () => {
      if (this.closed) throw new IsolaError('E_SHUTTING_DOWN', 'the server is shutting down');
      const spare = entry.spare.shift();
      if (spare) this.stats.prespawned++;
      const sb = spare ?? (await this.driver.fromSnapshot(entry.dir, { egress: entry.egress }));
      // The replacement VMM is spawned after this clone's first moments: both want the host's
      // CPUs, and the clone is what a request waits for.
      setTimeout(() => this.fill(entry), REFILL_DELAY_MS).unref();
      try {
        await sb.start();
      } catch (err) {
        await sb.destroy().catch(() => undefined);
        throw err;
      }
      return sb;
    });
    this.stats.restores++;
    return { sandbox, meta: entry.meta, built };
  }

  /** Drop the snapshots (and pre-spawned VMMs) of the groups `which` selects. */
  async retire(which: (g: FunctionImage['group']) => boolean): Promise<void> {
    const groups = [...this.byGroup.values()].filter((v) => which(v.group));
    for (const g of groups) await this.drop(g.group.key);
  }

  private async drop(groupKey: string): Promise<void> {
    const key = this.byGroup.get(groupKey)?.key;
    if (!key) return;
    this.byGroup.delete(groupKey);
    if ([...this.byGroup.values()].some((v) => v.key === key)) return; // another group shares it
    const p = this.fns.get(key);
    this.fns.delete(key);
    this.failed.delete(key);
    const entry = await p?.catch(() => null);
    this.settled.delete(key);
    if (entry) {
      const spare = entry.spare.splice(0);
      await Promise.all(spare.map((s) => s.destroy().catch(() => undefined)));
    }
    await this.driver.forgetSnapshot(path.join(this.dir, `fn-${key}`));
    rmSync(path.join(this.dir, `fn-${key}`), { recursive: true, force: true });
  }

  /**
   * Destroy every pre-spawned VMM and stop builds in progress (snapshots stay on disk; a
   * half-built one is removed as its build fails). Restores waiting for a slot are refused.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.restores.releaseWaiters();
    const building = [...this.building];
    await Promise.all(building.map((s) => s.destroy().catch(() => undefined)));
    const spare = [...this.settled.values()].flatMap((e) => e.spare.splice(0));
    await Promise.all(spare.map((s) => s.destroy().catch(() => undefined)));
  }

  /** Sandboxes of builds in progress (a base boot or a function template). */
  private readonly building = new Set<Sandbox>();

  /** Pre-spawned VMMs alive or being spawned now. */
  get spareCount(): number {
    let n = 0;
    for (const e of this.settled.values()) n += e.spare.length + (e.filling ? 1 : 0);
    return n;
  }

  private readonly settled = new Map<string, FnEntry>();

  private fill(entry: FnEntry): void {
    if (this.closed || entry.filling || entry.parked || !this.fns.has(entry.key)) return;
    if (entry.spare.length >= this.policy.prespawnPerFunction) return;
    if (this.spareCount >= this.policy.prespawnMax) return;
    entry.filling = true;
    void (async () => {
      let sb: Sandbox | null = null;
      let kept = false;
      try {
        sb = await this.driver.fromSnapshot(entry.dir, { egress: entry.egress });
        await sb.prepare();
        if (!this.closed && !entry.parked && this.fns.has(entry.key)) {
          entry.spare.push(sb);
          kept = true;
        }
      } catch {
        // a failed pre-spawn only costs the next restore its spawn time (and is not retried
        // until the next clone is taken)
      } finally {
        if (sb && !kept) await sb.destroy().catch(() => undefined);
        entry.filling = false;
      }
      if (kept) this.fill(entry); // more wanted (ISOLA_PRESPAWN > 1)
    })();
  }

  private async fnKey(fn: FunctionImage): Promise<string> {
    await this.cleaned; // never build into a folder the start-up clean-up is emptying
    const inputs = await this.currentInputs();
    const key = digest({
      kind: 'function',
      base: baseKey(inputs, fn.config.memoryMiB, fn.config.vcpus),
      // Not the group key: it names the secrets revision, and secrets are not in snapshots.
      functionId: fn.group.functionId,
      bundle: fn.bundle,
      env: fn.env,
      fn: fn.functionName,
      version: fn.version,
      memoryMiB: fn.config.memoryMiB,
      vcpus: fn.config.vcpus,
    });
    this.byGroup.set(fn.group.key, { key, group: fn.group });
    return key;
  }

  private async fnSnapshot(fn: FunctionImage): Promise<FnEntry> {
    const key = await this.fnKey(fn);
    const failed = this.failed.get(key);
    if (failed && Date.now() - failed.at < BUILD_RETRY_MS) throw failed.error;
    let p = this.fns.get(key);
    if (!p) {
      const mine: Promise<FnEntry> = this.buildFn(key, fn).then(
        (e) => {
          if (this.fns.get(key) !== mine) {
            // Retired (deploy, delete) while it was being built; unless wanted again since.
            if (!this.fns.has(key)) rmSync(e.dir, { recursive: true, force: true });
            throw new IsolaError('E_SNAPSHOT', `${fn.functionName} v${fn.version} was retired`);
          }
          this.settled.set(key, e);
          return e;
        },
        (err: unknown) => {
          const e = toIsolaError(err);
          this.failed.set(key, { at: Date.now(), error: e });
          this.fns.delete(key);
          this.stats.failures++;
          this.log(`snapshot of ${fn.functionName} v${fn.version} failed: ${e.message}`);
          throw e;
        },
      );
      p = mine;
      p.catch(() => undefined);
      this.fns.set(key, p);
    }
    return p;
  }

  private async slot(): Promise<string> {
    const file = path.join(this.dir, 'slot.img');
    if (!existsSync(file) || statSync(file).size !== SLOT_BYTES) {
      const tmp = `${file}.${process.pid}.tmp`;
      closeSync(openSync(tmp, 'w', 0o600));
      truncateSync(tmp, SLOT_BYTES);
      renameSync(tmp, file);
    }
    return file;
  }

  /** The base snapshot for a VM size: boot a guest with the empty slot, snapshot it. */
  private base(memoryMiB: number, vcpus: number): Promise<string> {
    const id = `${memoryMiB}:${vcpus}`;
    let p = this.bases.get(id);
    if (!p) {
      p = (async () => {
        const inputs = await this.currentInputs();
        const dir = path.join(
          this.dir,
          `base-${memoryMiB}m-${vcpus}c-${baseKey(inputs, memoryMiB, vcpus)}`,
        );
        if (existsSync(path.join(dir, SNAPSHOT_META))) return dir;
        const slot = await this.slot();
        const tmp = mkdtempSync(path.join(this.dir, '.tmp-base-'));
        const t0 = performance.now();
        let sb: Sandbox | null = null;
        try {
          if (this.closed) throw new IsolaError('E_SHUTTING_DOWN', 'shutting down');
          // With a NIC whose namespace lets nothing out: clones get their policy at restore.
          const network = sandboxNetwork(NO_EGRESS);
          sb = await this.driver.create({
            memoryMiB,
            vcpus,
            drives: [{ path: slot, readonly: true, format: 'raw' }],
            functionPort: true,
            ...(network ? { network } : {}),
            hostname: 'isola-base',
            memoryFile: path.join(tmp, SNAPSHOT_MEMORY),
          });
          this.building.add(sb);
          await sb.start();
          await sb.snapshot(tmp, { kind: 'base' });
          if (!publish(tmp, dir)) return dir;
          this.stats.baseBuilds++;
          this.log(
            `base snapshot ${path.basename(dir)} built in ${Math.round(performance.now() - t0)} ms`,
          );
          return dir;
        } catch (err) {
          this.bases.delete(id);
          throw err;
        } finally {
          if (sb) this.building.delete(sb);
          await sb?.destroy().catch(() => undefined);
          rmSync(tmp, { recursive: true, force: true });
        }
      })();
      p.catch(() => undefined);
      this.bases.set(id, p);
    }
    return p;
  }

  /**
   * A function snapshot: restore the base on a copy of its memory (shared, so it can be
   * snapshotted again) with the bundle in the slot and the clock set back (clone-random.ts),
   * mount the bundle, start the runtime, wait until the handler loaded, snapshot.
   */
  private async buildFn(key: string, fn: FunctionImage): Promise<FnEntry> {
    const dir = path.join(this.dir, `fn-${key}`);
    const bundle = fn.bundle;
    if (!bundle) throw new IsolaError('E_SNAPSHOT', 'only Node.js bundles have snapshots');
    const size = statSync(bundle.image).size;
    if (size > SLOT_BYTES) {
      throw new IsolaError('E_SNAPSHOT', `bundle image of ${size} bytes exceeds the drive slot`);
    }
    const baseDir = await this.base(fn.config.memoryMiB, fn.config.vcpus);
    return this.builds.run(async () => {
      if (existsSync(path.join(dir, SNAPSHOT_META))) {
        return newEntry(key, dir, readSnapshotMeta(dir), fn.config.egress);
      }
      const tmp = mkdtempSync(path.join(this.dir, '.tmp-fn-'));
      const t0 = performance.now();
      let sb: Sandbox | null = null;
      try {
        if (this.closed) throw new IsolaError('E_SHUTTING_DOWN', 'shutting down');
        sb = await this.driver.fromSnapshot(baseDir, {
          drives: [bundle.image],
          hostname: 'isola-template',
          clockOffsetMs: -SNAPSHOT_CLOCK_SKEW_MS,
          memoryFile: path.join(tmp, SNAPSHOT_MEMORY),
        });
        this.building.add(sb);
        await sb.start();
        // The slot's placeholder was read at boot (partition scan): flushSlot drops those
        // cached blocks before the bundle is mounted.
        const out: string[] = [];
        const proc = await launchNodeRuntime(
          sb,
          fn,
          { onStderr: (d) => out.push(d.toString('utf8')) },
          { flushSlot: true, errorCode: 'E_SNAPSHOT' },
        );
        const rt = new RuntimeChannel(await sb.functionChannel());
        const died = proc.exited.then((s) => {
          throw new IsolaError(
            'E_SNAPSHOT',
            `runtime exited while loading (${JSON.stringify(s)}): ${out.join('').slice(-500)}`,
          );
        });
        died.catch(() => undefined);
        const health = (await Promise.race([
          rt.call({ t: 'health' }, undefined, INIT_TIMEOUT_MS),
          died,
        ])) as { header: { ready?: boolean; error?: { message?: string } } };
        if (!health.header.ready) {
          throw new IsolaError(
            'E_SNAPSHOT',
            `handler did not load: ${health.header.error?.message ?? 'unknown'}`,
          );
        }
        const rounds = WARMUP_ROUNDS[(await this.currentInputs()).accel];
        for (let i = 0; i < rounds; i++) {
          await rt.call(
            { t: 'warm' },
            Buffer.from(JSON.stringify({ warm: i, path: '/x?y=1' })),
            INIT_TIMEOUT_MS,
          );
        }
        const meta = await sb.snapshot(tmp, {
          kind: 'function',
          execId: proc.execId,
          pid: proc.pid,
          function: fn.functionName,
          version: fn.version,
        });
        rt.close();
        // Another build of the same key (a version retired and wanted again meanwhile) may have
        // finished first: same inputs, same snapshot; keep that one.
        if (!publish(tmp, dir)) {
          return newEntry(key, dir, readSnapshotMeta(dir), fn.config.egress);
        }
        this.stats.fnBuilds++;
        this.log(
          `snapshot of ${fn.functionName} v${fn.version} built in ${Math.round(performance.now() - t0)} ms`,
        );
        return newEntry(key, dir, meta, fn.config.egress);
      } finally {
        if (sb) this.building.delete(sb);
        await sb?.destroy().catch(() => undefined);
        rmSync(tmp, { recursive: true, force: true });
      }
    });
  }
}

function newEntry(key: string, dir: string, meta: SnapshotMeta, egress: EgressPolicy): FnEntry {
  return { key, dir, meta, spare: [], filling: false, parked: false, egress };
}

/** Move a finished build into place; false when a build of the same key got there first. */
function publish(tmp: string, dir: string): boolean {
  if (existsSync(path.join(dir, SNAPSHOT_META))) return false;
  rmSync(dir, { recursive: true, force: true }); // a leftover without its meta: not a snapshot
  renameSync(tmp, dir);
  return true;
}

function baseKey(inputs: SnapshotInputs, memoryMiB: number, vcpus: number): string {
  // The NIC is part of the device state, the resolvers part of the guest's configuration.
  const net = networkEnabled() ? (guestResolvers() ?? 'default') : null;
  return digest({ kind: 'base', inputs, memoryMiB, vcpus, slot: SLOT_BYTES, net });
}
