// The control plane: tenants, keys, functions, versions, aliases, secrets, invocation, logs and
// metering, over one PlatformStore and one instance Pool. The gateway (src/gateway) only parses
// HTTP into calls on this class and turns its results and IsolaErrors into responses.
//
// Tenancy: every function call takes the caller's tenant id and looks the function up within
// it, so another tenant's function is simply "not found" (never "forbidden").

import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { IsolaError, toIsolaError } from '../errors.js';
import { resolveImage } from '../image/images.js';
import { pullImage } from '../image/pull.js';
import { ensureRootfsImage, mkfsFromDir } from '../image/rootfs.js';
import { type ImageRecord, ImageStore } from '../image/store/store.js';
import { GroupCommit } from '../util/group-commit.js';
import { AdmissionGate } from './admission.js';
import { AuditLog } from './audit.js';
import { prepareBundle } from './bundle/bundle.js';
import {
  type ConfigPatch,
  FUNCTION_DEFAULTS,
  TENANT_DEFAULTS,
  applyConfig,
  stripUndefined,
} from './config.js';
import { Instance, type InvokeOutcome } from './instance.js';
import { DUMMY_HASH, newKey, parseKey, secretMatches } from './keys.js';
import { LogSink } from './logs.js';
import {
  Counter,
  GC_BUCKETS,
  Gauge,
  Histogram,
  Registry,
  eventLoopDelayGauge,
  observeGc,
} from './metrics.js';
import { type GroupSpec, type Lease, Pool } from './pool.js';
import { ReadCache, cachingStore } from './read-cache.js';
import { DEFAULT_ALIAS, parseTarget, pickVersion } from './routing.js';
import { SecretBox } from './secrets.js';
import { DEFAULT_SNAPSHOT_POLICY, type FunctionImage, SnapshotManager } from './snapshots.js';
import type {
  AliasRecord,
  ApiKey,
  FunctionRecord,
  InvocationRecord,
  InvocationStatus,
  PlatformStore,
  Runtime,
  StartKind,
  Tenant,
  TenantLimits,
  VersionRecord,
} from './store/types.js';

/** Longest a request waits for a busy function's instance before 429. */
export const QUEUE_WAIT_MS = 10_000;
/**
 * How long a request may wait for its tenant's quota (Knative's activator buffers a burst until
 * capacity comes): a burst of cold starts on a small host takes seconds to drain.
 */
export const TENANT_QUEUE_WAIT_MS = 30_000;
/** Free space an image bundle's ext4 gets (read-only; only metadata needs room). */
const BUNDLE_IMAGE_HEADROOM = 4 * 1024 * 1024;

export interface Principal {
  role: 'admin' | 'tenant';
  keyId: string;
  tenantId: string | null;
}

export interface PlatformOptions {
  dataDir: string;
  store: PlatformStore;
  imageStoreDir: string;
  /** Registries reached over plain http besides loopback (image deploys pull from them). */
  insecureRegistries?: string[];
  /**
   * Start Node.js instances from snapshots (snapshots.ts); default on, ISOLA_SNAPSHOTS=0 turns
   * it off (every start boots).
   */
  snapshots?: boolean;
}

export interface InvokeResult {
  requestId: string;
  functionName: string;
  version: number;
  startKind: StartKind;
  startMs: number;
  durationMs: number;
  outcome: InvokeOutcome;
}

export class Platform {
  readonly store: PlatformStore;
  /** The invocation path's reads (key, function, alias, version), kept briefly (read-cache.ts). */
  private readonly reads = new ReadCache();
  readonly pool: Pool;
  readonly logs: LogSink;
  /** State-changing API calls, recorded by the gateway (audit.ts). */
  readonly audit: AuditLog;
  /** Metering records, committed in groups (one transaction per turn of the event loop). */
  private readonly meterLog: GroupCommit<InvocationRecord>;
  readonly metrics = new Registry();
  private readonly box: SecretBox;
  private readonly stopGc: () => void;
  private readonly tenantCache = new Map<string, Tenant>();
  /** Per-tenant concurrency quota, with a bounded queue (admission.ts). */
  readonly admission = new AdmissionGate();
  private draining = false;
  private readonly active = new Set<Promise<unknown>>();
  private images: ImageStore | null = null;

  readonly m = {
    invocations: this.metrics.add(
      new Counter('isola_invocations_total', 'Invocations by tenant, function and outcome.'),
    ),
    errors: this.metrics.add(
      new Counter('isola_invocation_errors_total', 'Failed invocations by error code.'),
    ),
    duration: this.metrics.add(
      new Histogram('isola_invocation_duration_seconds', 'Invocation time in the function.'),
    ),
    starts: this.metrics.add(
      new Counter(
        'isola_instance_starts_total',
        'Instance acquisitions by kind (warm, restored, booted).',
      ),
    ),
    startTime: this.metrics.add(
      new Histogram('isola_start_duration_seconds', 'Time to get an instance, by start kind.'),
    ),
    startSteps: this.metrics.add(
      new Histogram(
        'isola_start_step_seconds',
        'Instance start steps by start kind: restored (spawn, load, resume, restore) or booted (boot, load).',
      ),
    ),
    queueWait: this.metrics.add(
      new Histogram('isola_queue_wait_seconds', 'Time requests waited for a busy instance.'),
    ),
    gc: this.metrics.add(
      new Histogram(
        'isola_gc_pause_seconds',
        "The server process's garbage-collection pauses by kind (minor: scavenge, major: mark-compact).",
        GC_BUCKETS,
      ),
    ),
    throttled: this.metrics.add(
      new Counter('isola_throttled_total', 'Requests refused with 429, by reason.'),
    ),
  };
  private readonly loopDelay = eventLoopDelayGauge(
    'isola_event_loop_delay_seconds',
    "How late the server's event loop ran a timer due every 10 ms, by quantile since the last scrape.",
  );

  /** Null when snapshots are off. */
  readonly snapshots: SnapshotManager | null;

  private constructor(private readonly opts: PlatformOptions) {
    this.store = cachingStore(opts.store, this.reads);
    this.snapshots =
      (opts.snapshots ?? process.env.ISOLA_SNAPSHOTS !== '0')
        ? new SnapshotManager(path.join(opts.dataDir, 'snapshots'), DEFAULT_SNAPSHOT_POLICY, (l) =>
            process.stderr.write(`isola: ${l}\n`),
          )
        : null;
    this.stopGc = observeGc(this.m.gc);
    this.metrics.add(this.loopDelay.gauge);
    this.box = SecretBox.load(opts.dataDir);
    this.logs = new LogSink(this.store);
    this.audit = new AuditLog(this.store);
    this.meterLog = new GroupCommit(
      (rs) => this.store.recordInvocations(rs),
      (r) => this.store.recordInvocation(r),
    );
    this.pool = new Pool({
      create: (spec) => this.createInstance(spec),
      tenantMemoryMiB: (tenantId) =>
        this.tenantCache.get(tenantId)?.maxMemoryMiB ?? TENANT_DEFAULTS.maxMemoryMiB,
      events: {
        onStart: (spec, inst) => {
          for (const [step, ms] of Object.entries(inst.startSteps)) {
            if (step.endsWith('Ms'))
              this.m.startSteps.observe(
                { kind: inst.startKind, step: step.slice(0, -2) },
                ms / 1000,
              );
          }
          this.systemLine(
            spec,
            `instance ${inst.id} (version ${spec.version}) ${inst.startKind} in ${Math.round(inst.startMs)} ms (${describeSteps(inst.startSteps)})`,
          );
        },
        onStop: (spec, inst, why) =>
          this.systemLine(spec, `instance ${inst.id} (version ${spec.version}) stopped: ${why}`),
        // At zero nothing of the function runs: its pre-spawned VMMs go too.
        onZero: (spec) => void this.snapshots?.park(spec.key),
      },
    });
    this.metrics.add(
      new Gauge('isola_instances', 'Function instances by state.', () => {
        const counts = new Map<string, number>();
        for (const { instance } of this.pool.instances())
          counts.set(instance.state, (counts.get(instance.state) ?? 0) + 1);
        return [...counts].map(([state, n]) => [{ state }, n]);
      }),
    );
    this.metrics.add(
      new Gauge('isola_snapshot_operations', 'Snapshot work since start, by operation.', () =>
        Object.entries(this.snapshots?.stats ?? {}).map(([op, n]) => [{ op }, n]),
      ),
    );
    this.metrics.add(
      new Gauge(
        'isola_prespawned_vmms',
        'VMMs pre-spawned (or spawning) for the next restore.',
        () => [[{}, this.snapshots?.spareCount ?? 0]],
      ),
    );
    this.metrics.add(
      new Gauge(
        'isola_tenant_concurrency_peak',
        'Most invocations a tenant had running at once since the server started (its quota bounds it).',
        () =>
          [...this.tenantCache.values()].map((t) => [
            { tenant: t.name },
            this.admission.peak(t.id),
          ]),
      ),
    );
    this.metrics.add(
      new Gauge('isola_inflight_invocations', 'Invocations running now.', () => [
        [{}, this.admission.totalRunning()],
      ]),
    );
  }

  static async open(opts: PlatformOptions): Promise<Platform> {
    mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
    for (const d of ['bundles', 'tmp', 'instances'])
      mkdirSync(path.join(opts.dataDir, d), { recursive: true });
    // Nothing in tmp/ or instances/ outlives the process that made it (crash leftovers).
    for (const d of ['tmp', 'instances']) {
      for (const e of readdirSync(path.join(opts.dataDir, d)))
        rmSync(path.join(opts.dataDir, d, e), { recursive: true, force: true });
    }
    const p = new Platform(opts);
    // Snapshots of other guest builds and half-built ones go; off the start-up path (it may
    // have to probe the accelerator first): snapshot work waits for it.
    p.snapshots
      ?.gc()
      .catch((err: unknown) => process.stderr.write(`isola: snapshot clean-up: ${String(err)}\n`));
    for (const t of await p.store.listTenants()) {
      p.tenantCache.set(t.id, t);
      // Warm pools come back after a restart (in the background: starting may take a while).
      // Snapshots are not built here: a restart after an upgrade would build every function's
      // at once; each is built when its version first starts (or on its next deploy).
      for (const f of await p.store.listFunctions(t.id)) p.prewarmSoon(f, { snapshots: false });
    }
    return p;
  }

  /** First start: an admin key, written to DATA_DIR/admin.key (0600). Returns it if made. */
  async bootstrapAdminKey(): Promise<string | null> {
    if ((await this.store.countKeys()) > 0) return null;
    const k = newKey();
    await this.store.createKey({
      id: k.id,
      role: 'admin',
      tenantId: null,
      secretHash: k.secretHash,
      description: 'bootstrap admin key',
      createdAt: Date.now(),
      revokedAt: null,
    });
    const file = path.join(this.opts.dataDir, 'admin.key');
    writeFileSync(`${file}.tmp`, `${k.text}\n`, { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
    return k.text;
  }

  /** A platform event in the function's log (and the server's output). */
  private systemLine(
    spec: { tenantId: string; functionId: string },
    line: string,
    requestId: string | null = null,
  ): void {
    this.logs.write({
      tenantId: spec.tenantId,
      functionId: spec.functionId,
      requestId,
      ts: Date.now(),
      stream: 'system',
      line,
    });
  }

  // --- auth -------------------------------------------------------------------------------

  async authenticate(header: string | undefined): Promise<Principal> {
    const m = /^Bearer\s+(\S+)$/i.exec(header ?? '');
    if (!m)
      throw new IsolaError('E_UNAUTHORIZED', 'missing API key: send Authorization: Bearer KEY');
    const parsed = parseKey(m[1]!);
    const rec = parsed
      ? await this.reads.get(`k\0${parsed.id}`, () => this.store.getKey(parsed.id))
      : null;
    // Same work whether or not the key exists, so timing does not tell ids apart.
    const ok = secretMatches(parsed?.secret ?? m[1]!, rec?.secretHash ?? DUMMY_HASH);
    if (!parsed || !rec || !ok || rec.revokedAt !== null) {
      throw new IsolaError('E_UNAUTHORIZED', 'invalid or revoked API key');
    }
    return { role: rec.role, keyId: rec.id, tenantId: rec.tenantId };
  }

  requireAdmin(p: Principal): void {
    if (p.role !== 'admin') throw new IsolaError('E_FORBIDDEN', 'this needs an admin key');
  }

  /** The tenant a call acts for: the key's own, or for admin keys the one named. */
  async tenantFor(p: Principal, name?: string): Promise<Tenant> {
    if (p.role === 'tenant') {
      const t = await this.getTenantById(p.tenantId!);
      if (name !== undefined && name !== t.name) throw notFound('tenant', name);
      return t;
    }
    if (!name) {
      throw new IsolaError(
        'E_INVALID_ARGUMENT',
        'an admin key must name the tenant (X-Isola-Tenant or ?tenant=)',
      );
    }
    const t = await this.store.getTenantByName(name);
    if (!t) throw notFound('tenant', name);
    return t;
  }

  private async getTenantById(id: string): Promise<Tenant> {
    const t = this.tenantCache.get(id) ?? (await this.store.getTenant(id));
    if (!t) throw new IsolaError('E_UNAUTHORIZED', 'the key belongs to a deleted tenant');
    this.tenantCache.set(id, t);
    return t;
  }

  // --- tenants and keys ------------------------------------------------------------------

  async createTenant(name: string, limits: Partial<TenantLimits>): Promise<Tenant> {
    const t: Tenant = {
      id: `t_${randomUUID().replace(/-/g, '').slice(0, 16)}`,
      name,
      createdAt: Date.now(),
      ...TENANT_DEFAULTS,
      ...stripUndefined(limits),
    };
    await this.store.createTenant(t);
    this.tenantCache.set(t.id, t);
    return t;
  }

  async updateTenant(name: string, limits: Partial<TenantLimits>): Promise<Tenant> {
    const t = await this.store.getTenantByName(name);
    if (!t) throw notFound('tenant', name);
    const u = await this.store.updateTenantLimits(t.id, stripUndefined(limits));
    if (!u) throw notFound('tenant', name);
    this.tenantCache.set(u.id, u);
    return u;
  }

  async deleteTenant(name: string): Promise<void> {
    const t = await this.store.getTenantByName(name);
    if (!t) throw notFound('tenant', name);
    await this.pool.drain((s) => s.tenantId === t.id);
    await this.snapshots?.retire((k) => k.tenantId === t.id);
    await this.store.deleteTenant(t.id);
    this.tenantCache.delete(t.id);
  }

  async createKey(
    tenant: Tenant | null,
    description: string,
  ): Promise<{ key: string; record: ApiKey }> {
    const k = newKey();
    const record: ApiKey = {
      id: k.id,
      role: tenant ? 'tenant' : 'admin',
      tenantId: tenant?.id ?? null,
      secretHash: k.secretHash,
      description,
      createdAt: Date.now(),
      revokedAt: null,
    };
    await this.store.createKey(record);
    return { key: k.text, record };
  }

  /** Revoke a key the principal may see (tenants: only their own); returns it. */
  async revokeKey(p: Principal, id: string): Promise<ApiKey> {
    const k = await this.store.getKey(id);
    if (!k || (p.role === 'tenant' && k.tenantId !== p.tenantId)) throw notFound('key', id);
    await this.store.revokeKey(id, Date.now());
    return k;
  }

  // --- functions --------------------------------------------------------------------------

  async getFunction(tenant: Tenant, name: string): Promise<FunctionRecord> {
    const f = await this.reads.get(`f\0${tenant.id}\0${name}`, () =>
      this.store.getFunction(tenant.id, name),
    );
    if (!f) throw notFound('function', name);
    return f;
  }

  async createFunction(tenant: Tenant, name: string, runtime: Runtime): Promise<FunctionRecord> {
    checkRuntime(runtime);
    const now = Date.now();
    const f: FunctionRecord = {
      id: `f_${randomUUID().replace(/-/g, '').slice(0, 16)}`,
      tenantId: tenant.id,
      name,
      runtime,
      createdAt: now,
      updatedAt: now,
      latestVersion: 0,
      secretsRev: 0,
    };
    await this.store.createFunction(f);
    return f;
  }

  async deleteFunction(tenant: Tenant, name: string): Promise<void> {
    const f = await this.getFunction(tenant, name);
    await this.pool.drain((s) => s.functionId === f.id);
    await this.snapshots?.retire((k) => k.functionId === f.id);
    await this.store.deleteFunction(f.id);
  }

  private async latest(f: FunctionRecord): Promise<VersionRecord | null> {
    return f.latestVersion > 0 ? this.store.getVersion(f.id, f.latestVersion) : null;
  }

  /**
   * Deploy a Node.js bundle (archive bytes or a directory path on the server) as a new version;
   * creates the function when missing. Moves `promote` aliases (default: live) to it.
   */
  async deployBundle(
    tenant: Tenant,
    name: string,
    input: { kind: 'archive'; data: Buffer } | { kind: 'dir'; path: string },
    patch: ConfigPatch,
    opts: { description?: string; promote?: string[] } = {},
  ): Promise<{ fn: FunctionRecord; version: VersionRecord }> {
    const f =
      (await this.store.getFunction(tenant.id, name)) ??
      (await this.createFunction(tenant, name, 'nodejs20'));
    if (f.runtime !== 'nodejs20') {
      throw new IsolaError(
        'E_FUNCTION_RUNTIME',
        `${name} is an ${f.runtime} function; deploy an image to it`,
      );
    }
    const tmp = path.join(this.opts.dataDir, 'tmp', `bundle-${randomBytes(6).toString('hex')}`);
    try {
      const b = await prepareBundle(input, tmp);
      const hex = b.digest.replace(/^sha256:/, '');
      const image = this.bundleImage(hex);
      if (!existsSync(image)) {
        const part = `${image}.${process.pid}.partial`;
        try {
          await mkfsFromDir(tmp, part, BUNDLE_IMAGE_HEADROOM);
          renameSync(part, image);
        } finally {
          rmSync(part, { force: true });
        }
      }
      const config = applyCfg((await this.latest(f))?.config ?? FUNCTION_DEFAULTS, patch);
      const version = await this.store.addVersion(
        f.id,
        {
          runtime: 'nodejs20',
          source: { kind: 'bundle', digest: b.digest, handler: b.handler, sizeBytes: b.bytes },
          config,
          description: opts.description ?? '',
          createdAt: Date.now(),
        },
        opts.promote ?? [DEFAULT_ALIAS],
      );
      this.prewarmSoon(f);
      return { fn: (await this.store.getFunctionById(f.id))!, version };
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  private bundleImage(hex: string): string {
    return path.join(this.opts.dataDir, 'bundles', `${hex}.ext4`);
  }

  imageStore(): ImageStore {
    this.images ??= ImageStore.open(this.opts.imageStoreDir);
    return this.images;
  }

  /** Deploy an OCI image that serves HTTP on :8080; pulls it when the store lacks it. */
  async deployImage(
    tenant: Tenant,
    name: string,
    image: string,
    patch: ConfigPatch,
    opts: { description?: string; promote?: string[] } = {},
  ): Promise<{ fn: FunctionRecord; version: VersionRecord }> {
    const f =
      (await this.store.getFunction(tenant.id, name)) ??
      (await this.createFunction(tenant, name, 'image'));
    if (f.runtime !== 'image') {
      throw new IsolaError(
        'E_FUNCTION_RUNTIME',
        `${name} is a ${f.runtime} function; deploy a code bundle to it`,
      );
    }
    const store = this.imageStore();
    let rec: ImageRecord;
    try {
      rec = resolveImage(store, image);
    } catch (err) {
      if (toIsolaError(err).code !== 'E_IMAGE_NOT_FOUND') throw err;
      rec = await pullImage(store, image, { insecure: this.opts.insecureRegistries });
    }
    await ensureRootfsImage(store, rec);
    const config = applyCfg((await this.latest(f))?.config ?? FUNCTION_DEFAULTS, patch);
    const version = await this.store.addVersion(
      f.id,
      {
        runtime: 'image',
        source: { kind: 'image', image: rec.name, manifestDigest: rec.manifestDigest },
        config,
        description: opts.description ?? '',
        createdAt: Date.now(),
      },
      opts.promote ?? [DEFAULT_ALIAS],
    );
    this.prewarmSoon(f);
    return { fn: (await this.store.getFunctionById(f.id))!, version };
  }

  /** New version with the latest code and a changed config (env, limits). */
  async updateConfig(tenant: Tenant, name: string, patch: ConfigPatch): Promise<VersionRecord> {
    const f = await this.getFunction(tenant, name);
    const last = await this.latest(f);
    if (!last) throw new IsolaError('E_NOT_FOUND', `${name} has no version yet: deploy code first`);
    const v = await this.store.addVersion(
      f.id,
      {
        runtime: last.runtime,
        source: last.source,
        config: applyCfg(last.config, patch),
        description: 'configuration change',
        createdAt: Date.now(),
      },
      [DEFAULT_ALIAS],
    );
    this.prewarmSoon(f);
    return v;
  }

  async getVersion(f: FunctionRecord, version: number): Promise<VersionRecord> {
    const v = await this.reads.get(`v\0${f.id}\0${version}`, () =>
      this.store.getVersion(f.id, version),
    );
    if (!v) throw notFound('version', `${f.name}:${version}`);
    return v;
  }

  async putAlias(
    tenant: Tenant,
    name: string,
    alias: string,
    body: { version: number; additionalVersion?: number | null; additionalWeight?: number },
  ): Promise<AliasRecord> {
    const f = await this.getFunction(tenant, name);
    await this.getVersion(f, body.version);
    if (body.additionalVersion != null) await this.getVersion(f, body.additionalVersion);
    const a: AliasRecord = {
      functionId: f.id,
      name: alias,
      version: body.version,
      additionalVersion: body.additionalVersion ?? null,
      additionalWeight: body.additionalVersion != null ? (body.additionalWeight ?? 0) : 0,
      updatedAt: Date.now(),
    };
    await this.store.putAlias(a);
    this.prewarmSoon(f);
    return a;
  }

  async putSecret(tenant: Tenant, name: string, secret: string, value: string): Promise<void> {
    const f = await this.getFunction(tenant, name);
    await this.store.putSecret({
      functionId: f.id,
      name: secret,
      ciphertext: this.box.seal(value, `${f.id}/${secret}`),
      updatedAt: Date.now(),
    });
    this.prewarmSoon(f);
  }

  /**
   * What the pool needs to start an instance of a group: the version and its environment with
   * the secrets decrypted. Once per group: the key names the version (immutable) and the
   * secrets revision, so warm invocations skip the secret reads and decryption.
   */
  private async prepareGroup(
    fn: FunctionRecord,
    version: VersionRecord,
    spec: GroupSpec,
  ): Promise<void> {
    if (this.pendingCreate.has(spec.key)) return;
    const secrets: Record<string, string> = {};
    for (const s of await this.store.listSecrets(fn.id))
      secrets[s.name] = this.box.open(s.ciphertext, `${fn.id}/${s.name}`);
    this.logs.setSecrets(fn.id, Object.values(secrets));
    this.pendingCreate.set(spec.key, {
      fn,
      version,
      env: { ...version.config.env, ...secrets },
      secrets,
    });
  }

  // --- invocation -------------------------------------------------------------------------

  /** Which function and version a target (`name`, `name:3`, `name:alias`) means for a tenant. */
  async resolveTarget(
    tenant: Tenant,
    target: string,
  ): Promise<{ fn: FunctionRecord; version: VersionRecord }> {
    const { name, qualifier } = parseTarget(target);
    const fn = await this.getFunction(tenant, name);
    let n: number;
    if (qualifier.kind === 'version') n = qualifier.version;
    else {
      const a = await this.reads.get(`a\0${fn.id}\0${qualifier.name}`, () =>
        this.store.getAlias(fn.id, qualifier.name),
      );
      if (!a) {
        throw qualifier.name === DEFAULT_ALIAS && fn.latestVersion === 0
          ? new IsolaError('E_NOT_FOUND', `function ${name} has no deployed version`)
          : notFound('alias', `${name}:${qualifier.name}`);
      }
      n = pickVersion(a, Math.random());
    }
    return { fn, version: await this.getVersion(fn, n) };
  }

  private groupSpec(fn: FunctionRecord, v: VersionRecord): GroupSpec {
    return {
      key: `${fn.id}:${v.version}:${fn.secretsRev}`,
      tenantId: fn.tenantId,
      functionId: fn.id,
      version: v.version,
      memoryMiB: v.config.memoryMiB,
      concurrency: v.config.concurrency,
      maxInstances: v.config.maxInstances,
      minInstances: v.config.minInstances,
      idleTimeoutS: v.config.idleTimeoutS,
    };
  }

  /**
   * Keep the function's warm pool (minInstances of each version its live alias serves) and let
   * groups it no longer serves scale to zero. Called after anything that changes what `live`
   * means: deploy, settings, alias moves, secrets.
   */
  async prewarm(fn: FunctionRecord, opts: { snapshots?: boolean } = {}): Promise<void> {
    const f = (await this.store.getFunctionById(fn.id)) ?? fn;
    const live = await this.store.getAlias(f.id, DEFAULT_ALIAS);
    const versions = live
      ? [live.version, ...(live.additionalVersion ? [live.additionalVersion] : [])]
      : [];
    const keep = new Set<string>();
    for (const n of versions) {
      const v = await this.store.getVersion(f.id, n);
      if (!v) continue;
      const spec = this.groupSpec(f, v);
      keep.add(spec.key);
      await this.prepareGroup(f, v, spec);
      // The snapshot is made ahead of the first start (as SnapStart does when a version is
      // published); the warm pool, if any, then starts from it.
      const image = this.functionImage(spec);
      if (image && opts.snapshots !== false) await this.snapshots?.prepare(image);
      if (spec.minInstances > 0) this.pool.prewarm(spec);
    }
    this.pool.retire(f.id, keep);
    await this.snapshots?.retire((k) => k.functionId === f.id && !keep.has(k.key));
  }

  /** prewarm() in the background; a failure is the operator's to see, not the caller's. */
  prewarmSoon(fn: FunctionRecord, opts: { snapshots?: boolean } = {}): void {
    this.prewarm(fn, opts).catch((err: unknown) =>
      process.stderr.write(`isola: warm pool of ${fn.name}: ${String(err)}\n`),
    );
  }

  /** Instance factory for the pool (the versions it needs are cached by the call that asks). */
  private readonly pendingCreate = new Map<
    string,
    {
      fn: FunctionRecord;
      version: VersionRecord;
      env: Record<string, string>;
      secrets: Record<string, string>;
    }
  >();

  /** What a Node.js version's snapshot is made of (null: an image function, or no context). */
  private functionImage(spec: GroupSpec): FunctionImage | null {
    const ctx = this.pendingCreate.get(spec.key);
    const src = ctx?.version.source;
    if (!ctx || src?.kind !== 'bundle') return null;
    const { fn, version } = ctx;
    return {
      group: { key: spec.key, tenantId: fn.tenantId, functionId: fn.id },
      functionName: fn.name,
      version: version.version,
      config: version.config,
      // Secrets never go into a snapshot (its memory is a file on disk): clones get them
      // when restored, before their first invocation.
      env: version.config.env,
      bundle: {
        image: this.bundleImage(src.digest.replace(/^sha256:/, '')),
        handler: src.handler,
      },
    };
  }

  /** Whether a version's snapshot is ready (for the API). */
  snapshotState(
    fn: FunctionRecord,
    version: VersionRecord,
  ): 'ready' | 'building' | 'failed' | 'none' | 'off' {
    if (!this.snapshots) return 'off';
    if (version.source.kind !== 'bundle') return 'none';
    return this.snapshots.status(this.groupSpec(fn, version).key);
  }

  private createInstance(spec: GroupSpec): Instance {
    const ctx = this.pendingCreate.get(spec.key);
    if (!ctx) throw new IsolaError('E_INTERNAL', `no context for instance group ${spec.key}`);
    const { fn, version, env } = ctx;
    const id = `i_${randomBytes(6).toString('hex')}`;
    const src = version.source;
    const image = this.functionImage(spec);
    const onOutput = (e: {
      requestId: string | null;
      stream: 'stdout' | 'stderr' | 'system';
      line: string;
    }) =>
      this.logs.write({
        tenantId: fn.tenantId,
        functionId: fn.id,
        requestId: e.requestId,
        ts: Date.now(),
        stream: e.stream,
        line: e.line,
      });
    return new Instance({
      id,
      functionName: fn.name,
      version: version.version,
      runtime: version.runtime,
      config: version.config,
      env,
      ...(src.kind === 'bundle'
        ? {
            bundle: {
              image: this.bundleImage(src.digest.replace(/^sha256:/, '')),
              handler: src.handler,
            },
          }
        : {
            image: {
              store: this.imageStore(),
              rec: resolveImage(this.imageStore(), src.manifestDigest),
            },
          }),
      workDir: path.join(this.opts.dataDir, 'instances', id),
      onOutput,
      ...(this.snapshots && image
        ? { restore: () => this.snapshots!.clone(image), restoreEnv: ctx.secrets }
        : {}),
    });
  }

  /** Admission, a pool slot, and the bookkeeping around `run`; always releases what it took. */
  async withInstance<T extends { status: InvocationStatus }>(
    tenant: Tenant,
    fn: FunctionRecord,
    version: VersionRecord,
    requestId: string,
    run: (lease: Lease) => Promise<T>,
  ): Promise<{ value: T; lease: Lease; durationMs: number }> {
    if (this.draining) throw new IsolaError('E_SHUTTING_DOWN', 'the server is shutting down');
    const limit = tenant.maxConcurrency;
    const admitted = this.admission.acquire(tenant.id, limit, TENANT_QUEUE_WAIT_MS, tenant.name);
    try {
      await admitted;
    } catch (err) {
      this.m.throttled.inc({ reason: 'tenant_concurrency' });
      throw err;
    }
    if (this.draining) {
      this.admission.release(tenant.id, limit);
      throw new IsolaError('E_SHUTTING_DOWN', 'the server is shutting down');
    }
    const work = (async () => {
      try {
        const spec = this.groupSpec(fn, version);
        await this.prepareGroup(fn, version, spec);
        let lease: Lease;
        try {
          lease = await this.pool.acquire(
            spec,
            Math.min(QUEUE_WAIT_MS, version.config.timeoutS * 1000),
          );
        } catch (err) {
          const e = toIsolaError(err);
          if (e.code === 'E_THROTTLED') this.m.throttled.inc({ reason: 'function_limit' });
          this.systemLine(spec, `no instance: ${e.code} ${e.message}`, requestId);
          throw e;
        }
        this.m.starts.inc({ kind: lease.startKind });
        this.m.startTime.observe({ kind: lease.startKind }, lease.startMs / 1000);
        if (lease.queuedMs > 0) this.m.queueWait.observe({}, lease.queuedMs / 1000);
        const startedAt = Date.now();
        const t0 = performance.now();
        let value: T;
        try {
          value = await run(lease);
        } finally {
          this.pool.release(lease);
        }
        const durationMs = performance.now() - t0;
        await this.meter(
          tenant,
          fn,
          version,
          requestId,
          startedAt,
          durationMs,
          value.status,
          lease,
        );
        return { value, lease, durationMs };
      } finally {
        this.admission.release(tenant.id, limit);
      }
    })();
    this.active.add(work);
    try {
      return await work;
    } finally {
      this.active.delete(work);
    }
  }

  private async meter(
    tenant: Tenant,
    fn: FunctionRecord,
    version: VersionRecord,
    requestId: string,
    startedAt: number,
    durationMs: number,
    status: InvocationStatus,
    lease: Lease,
  ): Promise<void> {
    const labels = { tenant: tenant.name, function: fn.name, status };
    this.m.invocations.inc(labels);
    this.m.duration.observe({ tenant: tenant.name, function: fn.name }, durationMs / 1000);
    if (status !== 'ok') this.m.errors.inc({ tenant: tenant.name, function: fn.name, status });
    const memoryMiB = version.config.memoryMiB;
    // Written before the response goes out: an answered invocation is always billed. Records
    // of invocations answered together share one transaction (util/group-commit.ts).
    await this.meterLog.write({
      requestId,
      tenantId: tenant.id,
      functionId: fn.id,
      functionName: fn.name,
      version: version.version,
      startedAt,
      durationMs: Math.round(durationMs * 1000) / 1000,
      memoryMiB,
      gbSeconds: (memoryMiB / 1024) * (durationMs / 1000),
      status,
      startKind: lease.startKind,
      startMs: Math.round(lease.startMs * 1000) / 1000,
    });
  }

  async invoke(
    tenant: Tenant,
    target: string,
    event: Buffer,
    requestId: string,
  ): Promise<InvokeResult> {
    const { fn, version } = await this.resolveTarget(tenant, target);
    return this.invokeVersion(tenant, fn, version, event, requestId);
  }

  /** One invocation of a resolved version with a JSON event (API invoke and HTTP routing). */
  async invokeVersion(
    tenant: Tenant,
    fn: FunctionRecord,
    version: VersionRecord,
    event: Buffer,
    requestId: string,
  ): Promise<InvokeResult> {
    const timeoutMs = version.config.timeoutS * 1000;
    const r = await this.withInstance(tenant, fn, version, requestId, (lease) =>
      lease.instance.invoke(event, requestId, timeoutMs),
    );
    return {
      requestId,
      functionName: fn.name,
      version: version.version,
      startKind: r.lease.startKind,
      startMs: r.lease.startMs,
      durationMs: r.durationMs,
      outcome: r.value,
    };
  }

  // --- lifecycle --------------------------------------------------------------------------

  /** Stop taking invocations, let running ones finish (up to graceMs), stop every instance. */
  async shutdown(graceMs: number): Promise<void> {
    this.draining = true;
    const all = Promise.allSettled([...this.active]);
    await Promise.race([all, new Promise((r) => setTimeout(r, graceMs).unref())]);
    await this.pool.close();
    await this.snapshots?.close();
    await this.logs.flush();
    await this.audit.flush();
    await this.store.close();
    this.images?.close?.();
    this.stopGc();
    this.loopDelay.stop();
  }

  get isDraining(): boolean {
    return this.draining;
  }
}

/** "pre-spawned VMM, spawn 0 ms, load 6 ms, ..." for the start line in the function's log. */
function describeSteps(steps: Record<string, number>): string {
  const parts: string[] = [];
  if (steps.prespawned !== undefined)
    parts.push(steps.prespawned ? 'pre-spawned VMM' : 'VMM spawned');
  if (steps.bootRetries) parts.push(`${steps.bootRetries} boot retries`);
  for (const [k, v] of Object.entries(steps)) {
    if (k.endsWith('Ms') && k !== 'totalMs') parts.push(`${k.slice(0, -2)} ${Math.round(v)} ms`);
  }
  return parts.join(', ');
}

function notFound(kind: string, name: string): IsolaError {
  return new IsolaError('E_NOT_FOUND', `no ${kind} named ${name}`);
}

function checkRuntime(runtime: string): asserts runtime is Runtime {
  if (runtime !== 'nodejs20' && runtime !== 'image') {
    throw new IsolaError(
      'E_FUNCTION_RUNTIME',
      // The value is not echoed: error bodies never repeat what a request body carried.
      'unknown runtime: use nodejs20 (a code bundle) or image (an OCI image serving HTTP on :8080)',
    );
  }
}

function applyCfg(base: Parameters<typeof applyConfig>[0], patch: ConfigPatch) {
  try {
    return applyConfig(base, patch);
  } catch (err) {
    throw new IsolaError('E_INVALID_ARGUMENT', (err as Error).message);
  }
}

export { checkRuntime };
