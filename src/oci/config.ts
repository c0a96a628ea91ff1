// OCI runtime-spec config.json: the subset isola reads, validated, and its translation into
// (a) the micro-VM's size and (b) the container plan the in-guest init executes (plan.ts).
// Pure: no I/O except what the caller passes in. Unknown properties are ignored, as the runtime
// spec requires ("MUST ignore unknown properties"); properties we cannot honour are rejected
// with E_OCI_UNSUPPORTED rather than silently dropped (docs/spec-conformance.md lists them).

import path from 'node:path';
import { z } from 'zod';
import { IsolaError } from '../errors.js';
import type { Namespace, Plan, PlanMount } from './plan.js';

export const OCI_VERSION_SUPPORTED = '1.1.0';

const hookSchema = z.object({
  path: z.string().min(1),
  args: z.array(z.string()).optional(),
  env: z.array(z.string()).optional(),
  timeout: z.number().int().positive().optional(),
});

const mountSchema = z.object({
  destination: z.string().min(1),
  type: z.string().optional(),
  source: z.string().optional(),
  options: z.array(z.string()).optional(),
});

const rlimitSchema = z.object({
  type: z.string().regex(/^RLIMIT_[A-Z]+$/),
  hard: z.number(),
  soft: z.number(),
});

const capsSchema = z
  .object({
    bounding: z.array(z.string()).optional(),
    effective: z.array(z.string()).optional(),
    inheritable: z.array(z.string()).optional(),
    permitted: z.array(z.string()).optional(),
    ambient: z.array(z.string()).optional(),
  })
  .optional();

export const processSchema = z.object({
  terminal: z.boolean().optional(),
  consoleSize: z
    .object({ height: z.number().int().min(0), width: z.number().int().min(0) })
    .optional(),
  user: z
    .object({
      uid: z.number().int().min(0),
      gid: z.number().int().min(0),
      umask: z.number().int().min(0).max(0o777).optional(),
      additionalGids: z.array(z.number().int().min(0)).optional(),
    })
    .default({ uid: 0, gid: 0 }),
  args: z.array(z.string()).min(1, 'process.args must name a program'),
  env: z.array(z.string()).optional(),
  cwd: z.string().startsWith('/', 'process.cwd must be absolute').default('/'),
  capabilities: capsSchema,
  rlimits: z.array(rlimitSchema).optional(),
  noNewPrivileges: z.boolean().optional(),
});
export type OciProcess = z.infer<typeof processSchema>;

export const configSchema = z.object({
  ociVersion: z.string().regex(/^1\.\d+\.\d+/, 'ociVersion must be 1.x.y'),
  root: z.object({ path: z.string().min(1), readonly: z.boolean().optional() }),
  process: processSchema,
  hostname: z.string().optional(),
  mounts: z.array(mountSchema).optional(),
  hooks: z
    .object({
      prestart: z.array(hookSchema).optional(),
      createRuntime: z.array(hookSchema).optional(),
      createContainer: z.array(hookSchema).optional(),
      startContainer: z.array(hookSchema).optional(),
      poststart: z.array(hookSchema).optional(),
      poststop: z.array(hookSchema).optional(),
    })
    .optional(),
  annotations: z.record(z.string()).optional(),
  linux: z
    .object({
      namespaces: z.array(z.object({ type: z.string(), path: z.string().optional() })).optional(),
      uidMappings: z.array(z.unknown()).optional(),
      gidMappings: z.array(z.unknown()).optional(),
      resources: z
        .object({
          memory: z.object({ limit: z.number().optional() }).passthrough().optional(),
          cpu: z
            .object({
              quota: z.number().optional(),
              period: z.number().optional(),
              shares: z.number().optional(),
            })
            .passthrough()
            .optional(),
          pids: z.object({ limit: z.number().optional() }).optional(),
        })
        .passthrough()
        .optional(),
      cgroupsPath: z.string().optional(),
      sysctl: z.record(z.string()).optional(),
      maskedPaths: z.array(z.string()).optional(),
      readonlyPaths: z.array(z.string()).optional(),
    })
    .passthrough()
    .optional(),
});
export type OciConfig = z.infer<typeof configSchema>;
export type OciHooks = NonNullable<OciConfig['hooks']>;

function invalid(problems: string[]): IsolaError {
  return new IsolaError('E_OCI_INVALID_CONFIG', `invalid config.json: ${problems.join('; ')}`, {
    details: { problems },
  });
}

function unsupported(what: string): IsolaError {
  return new IsolaError('E_OCI_UNSUPPORTED', `not supported by isola-runtime: ${what}`);
}

export function parseConfig(json: unknown): OciConfig {
  const r = configSchema.safeParse(json);
  if (!r.success) {
    throw invalid(r.error.issues.map((i) => `${i.path.join('.') || '(config)'}: ${i.message}`));
  }
  return r.data;
}

export function parseProcess(json: unknown): OciProcess {
  const r = processSchema.safeParse(json);
  if (!r.success) {
    throw invalid(r.error.issues.map((i) => `process.${i.path.join('.')}: ${i.message}`));
  }
  return r.data;
}

/** Guest RAM above the container's memory limit: kernel, agent and page cache. */
export const GUEST_OVERHEAD_MIB = 160;
/** Guest size when the config sets no memory limit. */
export const DEFAULT_GUEST_MIB = 256;
/** Host file or directory bind-mounted into a container is copied in; above this it is refused. */
export const MAX_BIND_COPY_BYTES = 16 * 1024 * 1024;

export interface VmSize {
  memoryMiB: number;
  vcpus: number;
}

/** memory.limit -> guest RAM (plus overhead); cpu quota/period -> vCPUs (rounded up). */
export function vmSize(config: OciConfig, hostCpus: number): VmSize {
  const res = config.linux?.resources;
  const limit = res?.memory?.limit;
  const memoryMiB =
    limit !== undefined && limit > 0
      ? Math.max(128, Math.ceil(limit / 2 ** 20) + GUEST_OVERHEAD_MIB)
      : DEFAULT_GUEST_MIB;
  const quota = res?.cpu?.quota;
  const period = res?.cpu?.period ?? 100_000;
  const vcpus =
    quota !== undefined && quota > 0 && period > 0
      ? Math.min(hostCpus, Math.max(1, Math.ceil(quota / period)))
      : 1;
  return { memoryMiB, vcpus };
}

const NS_MAP: Record<string, Namespace | null> = {
  pid: 'pid',
  mount: 'mount',
  ipc: 'ipc',
  uts: 'uts',
  cgroup: 'cgroup',
  network: 'net',
  user: null,
  time: null,
};

/** Devices every Linux container gets (runtime-spec config-linux.md, "Default Devices"). */
export const DEFAULT_DEVICES = [
  '/dev/null',
  '/dev/zero',
  '/dev/full',
  '/dev/random',
  '/dev/urandom',
  '/dev/tty',
];

/** A host path that must be copied into the guest for a bind mount. */
export interface HostBind {
  hostPath: string;
  /** Where the copy lands inside the guest (outside the container rootfs). */
  guestPath: string;
}

export interface Translation {
  plan: Plan;
  vm: VmSize;
  binds: HostBind[];
  /**
   * The container's network namespace made by its engine (CNI), when the config joins one: the
   * VM is wired into it (its NIC takes the namespace's interface) and the container runs in the
   * guest's own network namespace, as Kata does.
   */
  netnsPath?: string;
}

function isBind(m: { type?: string | undefined; options?: string[] | undefined }): boolean {
  return m.type === 'bind' || (m.options ?? []).some((o) => o === 'bind' || o === 'rbind');
}

/** The process part of a plan (also used for `exec`). */
export function planProcess(p: OciProcess): Plan['process'] {
  const caps: Plan['process']['capabilities'] = {};
  for (const set of ['bounding', 'effective', 'permitted', 'inheritable', 'ambient'] as const) {
    const list = p.capabilities?.[set];
    if (list) caps[set] = list;
  }
  return {
    args: p.args,
    env: p.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
    cwd: p.cwd,
    uid: p.user.uid,
    gid: p.user.gid,
    additionalGids: p.user.additionalGids ?? [],
    ...(p.user.umask !== undefined ? { umask: p.user.umask } : {}),
    rlimits: (p.rlimits ?? []).map((r) => ({
      type: r.type,
      soft: r.soft < 0 || r.soft >= 2 ** 63 ? 'unlimited' : r.soft,
      hard: r.hard < 0 || r.hard >= 2 ** 63 ? 'unlimited' : r.hard,
    })),
    capabilities: caps,
    noNewPrivileges: p.noNewPrivileges === true,
    ...(p.terminal
      ? { terminal: { rows: p.consoleSize?.height || 24, cols: p.consoleSize?.width || 80 } }
      : {}),
  };
}

/**
 * Translate a validated config into the VM size and the container plan. `guestDir` is the
 * container's folder inside the guest (the rootfs is mounted at <guestDir>/rootfs, host files
 * for bind mounts are copied under <guestDir>/binds/).
 */
export function translate(
  config: OciConfig,
  opts: { id: string; bundle: string; guestDir: string; hostCpus: number; consoleSocket?: boolean },
): Translation {
  if (config.process.terminal && !opts.consoleSocket) {
    throw invalid(['process.terminal is true but no --console-socket was given']);
  }
  const linux = config.linux ?? {};
  if ((linux.uidMappings?.length ?? 0) > 0 || (linux.gidMappings?.length ?? 0) > 0) {
    throw unsupported('linux.uidMappings/gidMappings (user namespaces)');
  }
  const namespaces: Namespace[] = [];
  let netnsPath: string | undefined;
  for (const ns of linux.namespaces ?? []) {
    if (!(ns.type in NS_MAP)) throw invalid([`linux.namespaces: unknown type ${ns.type}`]);
    const mapped = NS_MAP[ns.type];
    if (mapped === null || mapped === undefined)
      throw unsupported(`linux.namespaces type ${ns.type}`);
    if (ns.path && mapped === 'net') {
      netnsPath = ns.path;
      continue;
    }
    if (ns.path)
      throw unsupported(`joining an existing ${ns.type} namespace (linux.namespaces path)`);
    namespaces.push(mapped);
  }
  if (config.hostname && !namespaces.includes('uts')) {
    throw invalid(['hostname is set but there is no uts namespace']);
  }

  const binds: HostBind[] = [];
  const mounts: PlanMount[] = [];
  for (const m of config.mounts ?? []) {
    if (!m.destination.startsWith('/'))
      throw invalid([`mount destination ${m.destination} must be absolute`]);
    const options = m.options ?? [];
    if (isBind(m)) {
      if (!m.source) throw invalid([`bind mount of ${m.destination} has no source`]);
      const hostPath = path.resolve(opts.bundle, m.source);
      const guestPath = path.posix.join(opts.guestDir, 'binds', String(binds.length));
      binds.push({ hostPath, guestPath });
      mounts.push({ source: guestPath, destination: m.destination, type: 'bind', options });
    } else {
      // The guest runs cgroup v2 only: a `cgroup` mount is the container's cgroup2 view.
      const type = m.type === 'cgroup' ? 'cgroup2' : (m.type ?? 'none');
      mounts.push({ source: m.source ?? type, destination: m.destination, type, options });
    }
  }
  // A fresh /dev gets the default devices of the runtime spec, bound from the guest's /dev
  // (the guest is the container's own machine; these are its virtual devices).
  if (mounts.some((m) => m.destination === '/dev')) {
    const have = new Set(mounts.map((m) => m.destination));
    for (const dev of DEFAULT_DEVICES) {
      if (!have.has(dev))
        mounts.push({ source: dev, destination: dev, type: 'bind', options: ['bind'] });
    }
  }

  const res = linux.resources;
  const limits: Array<[string, string]> = [];
  if (res?.memory?.limit !== undefined && res.memory.limit > 0)
    limits.push(['memory.max', String(res.memory.limit)]);
  if (res?.pids?.limit !== undefined && res.pids.limit > 0)
    limits.push(['pids.max', String(res.pids.limit)]);
  if (res?.cpu?.quota !== undefined && res.cpu.quota > 0) {
    limits.push(['cpu.max', `${res.cpu.quota} ${res.cpu.period ?? 100_000}`]);
  }

  const plan: Plan = {
    rootfs: path.posix.join(opts.guestDir, 'rootfs'),
    readonlyRoot: config.root.readonly === true,
    ...(config.hostname ? { hostname: config.hostname } : {}),
    namespaces,
    mounts,
    maskedPaths: linux.maskedPaths ?? [],
    readonlyPaths: linux.readonlyPaths ?? [],
    cgroup: { dir: `/sys/fs/cgroup/isola/${opts.id}`, limits },
    sysctls: Object.entries(linux.sysctl ?? {}),
    process: planProcess(config.process),
  };
  return { plan, vm: vmSize(config, opts.hostCpus), binds, ...(netnsPath ? { netnsPath } : {}) };
}
