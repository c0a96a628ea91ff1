// The sandbox spec: one schema, unknown fields rejected, every default in one commented place.
// Validation happens before anything is started, so a bad spec costs nothing.

import { existsSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { z } from 'zod';
import { IsolaError } from '../errors.js';
import { egressSchema } from '../net/policy.js';

export const SPEC_DEFAULTS = {
  /** One vCPU: TCG runs one vCPU per host thread; most functions are single-threaded. */
  vcpus: 1,
  /** 256 MiB holds the guest kernel, Node.js and a typical handler with room for its heap. */
  memoryMiB: 256,
  /** Watchdog retries after a boot that did not reach the agent (microvm+TCG hangs sometimes). */
  bootRetries: 3,
  /** Resolvers a guest with a network uses (public, so the default egress policy allows them). */
  dns: ['1.1.1.1', '9.9.9.9'],
} as const;

const networkSchema = z
  .object({
    /** Where the guest may connect (net/policy.ts); default: the public internet only. */
    egress: egressSchema,
    dns: z
      .array(z.string().refine((a) => isIPv4(a), 'an IPv4 address'))
      .max(3)
      .default([...SPEC_DEFAULTS.dns]),
  })
  .strict();

const driveSchema = z
  .object({
    path: z.string().min(1),
    readonly: z.boolean().default(true),
    format: z.enum(['raw', 'qcow2']).default('raw'),
  })
  .strict();

export const sandboxSpecSchema = z
  .object({
    vcpus: z.number().int().min(1).max(32).default(SPEC_DEFAULTS.vcpus),
    memoryMiB: z
      .number()
      .int()
      .min(128)
      .max(64 * 1024)
      .default(SPEC_DEFAULTS.memoryMiB),
    /** Guest image (read-only block device with Node.js and the agent); default: built assets. */
    guestImage: z.string().min(1).optional(),
    kernel: z.string().min(1).optional(),
    initrd: z.string().min(1).optional(),
    /** Extra block devices, attached after the guest image as /dev/vdb, /dev/vdc, ... */
    drives: z.array(driveSchema).max(16).default([]),
    /** Environment every process in the sandbox starts with. */
    env: z.record(z.string().regex(/^[^=\0]+$/), z.string()).default({}),
    hostname: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i)
      .optional(),
    accel: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
    bootRetries: z.number().int().min(0).max(10).default(SPEC_DEFAULTS.bootRetries),
    timeouts: z
      .object({
        /** Boot watchdog per attempt; default depends on the accelerator (vmm/timeouts.ts). */
        bootMs: z.number().int().min(100).max(600_000).optional(),
        /** Graceful shutdown before the process is killed. */
        stopMs: z.number().int().min(0).max(600_000).optional(),
      })
      .strict()
      .default({}),
    /** Extra memory for the QEMU process above guest RAM in its cgroup (MiB). */
    overheadMiB: z.number().int().min(32).max(4096).optional(),
    pidsLimit: z.number().int().min(16).max(65536).optional(),
    /** A second virtio-serial port for a function runtime (Sandbox.functionChannel()). */
    functionPort: z.boolean().default(false),
    /**
     * Guest RAM in this file (created; must not exist) instead of an anonymous memfd, so that
     * the sandbox can be snapshotted into the file's folder (Sandbox.snapshot()).
     */
    memoryFile: z.string().min(1).optional(),
    /**
     * A network interface (virtio-net) in a network namespace of the sandbox's own, with NAT to
     * the outside under an egress policy. Absent: no interface at all.
     */
    network: networkSchema.optional(),
    /**
     * Join this existing network namespace (a container engine's pod namespace, its interface
     * configured by CNI) instead: the VM takes that interface's MAC and address (net/pod.ts).
     */
    podNetwork: z
      .object({ netns: z.string().min(1) })
      .strict()
      .optional(),
    /**
     * How to start: `auto` resumes a cached snapshot of a freshly booted guest of the same shape
     * (memory, vCPUs, ports, NIC) when the spec allows it (no drives, memory file, custom kernel,
     * initramfs or image) and boots otherwise; `boot` always boots.
     */
    start: z.enum(['auto', 'boot']).default('auto'),
  })
  .strict()
  .refine((s) => !(s.network && s.podNetwork), 'network and podNetwork exclude each other');

export type SandboxSpecInput = z.input<typeof sandboxSpecSchema>;
export type SandboxSpec = z.output<typeof sandboxSpecSchema>;

/** Validate a spec; throws E_INVALID_SPEC listing every problem. Files must exist. */
export function parseSandboxSpec(input: unknown): SandboxSpec {
  const r = sandboxSpecSchema.safeParse(input ?? {});
  if (!r.success) {
    const problems = r.error.issues.map((i) => `${i.path.join('.') || '(spec)'}: ${i.message}`);
    throw new IsolaError('E_INVALID_SPEC', `invalid sandbox spec: ${problems.join('; ')}`, {
      details: { problems },
    });
  }
  const spec = r.data;
  for (const [field, p] of [
    ['guestImage', spec.guestImage],
    ['kernel', spec.kernel],
    ['initrd', spec.initrd],
    ...spec.drives.map((d, i) => [`drives.${i}.path`, d.path] as const),
  ] as const) {
    if (p !== undefined && !existsSync(p)) {
      throw new IsolaError(
        'E_INVALID_SPEC',
        `invalid sandbox spec: ${field}: file ${p} does not exist`,
        {
          details: { problems: [`${field}: file does not exist`] },
        },
      );
    }
  }
  return spec;
}
