// An image config becomes an OCI runtime config.json, the way containerd and Podman build one:
// process args = Entrypoint + (the caller's command, else Cmd), env = defaults + image Env +
// caller's env, cwd = WorkingDir, user = User (numeric, or root). The root filesystem is the
// image's shared root filesystem (bundle annotations; see src/oci/rootfs.ts), writable through a
// per-container layer. Pure.

import { IsolaError } from '../errors.js';
import { defaultSpec } from '../oci/commands/spec.js';
import { IMAGE_ANNOTATION, IMAGE_STORE_ANNOTATION } from '../oci/rootfs.js';
import type { ImageConfig } from './manifest.js';

export interface RunSpecOptions {
  /** Image name or digest as the store knows it. */
  image: string;
  store: string;
  /** Replaces the image's Cmd (Entrypoint stays). */
  command?: string[] | undefined;
  /** K=V, added after the image's Env (later wins). */
  env?: string[] | undefined;
  /** Memory limit for the container, MiB. */
  memoryMiB?: number | undefined;
  terminal?: boolean | undefined;
  hostname?: string | undefined;
}

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function parseUser(user: string | undefined): { uid: number; gid: number } {
  if (!user || user === 'root' || user === '0') return { uid: 0, gid: 0 };
  const m = /^(\d+)(?::(\d+))?$/.exec(user);
  if (!m) {
    throw new IsolaError(
      'E_OCI_UNSUPPORTED',
      `image user "${user}" is a name; only numeric uid[:gid] users are supported for now`,
    );
  }
  const uid = Number(m[1]);
  return { uid, gid: m[2] !== undefined ? Number(m[2]) : uid };
}

/** Merge K=V lists; a later key replaces an earlier one in place. */
export function mergeEnv(...lists: string[][]): string[] {
  const out = new Map<string, string>();
  for (const list of lists) {
    for (const kv of list) {
      const i = kv.indexOf('=');
      out.set(i < 0 ? kv : kv.slice(0, i), kv);
    }
  }
  return [...out.values()];
}

export function imageRunSpec(config: ImageConfig, opts: RunSpecOptions): Record<string, unknown> {
  const c = config.config ?? {};
  const entrypoint = c.Entrypoint ?? [];
  const cmd = opts.command && opts.command.length > 0 ? opts.command : (c.Cmd ?? []);
  const args = [...entrypoint, ...cmd];
  if (args.length === 0) {
    throw new IsolaError(
      'E_INVALID_ARGUMENT',
      `image ${opts.image} has no Entrypoint or Cmd; give a command`,
    );
  }
  const spec = defaultSpec() as {
    process: Record<string, unknown>;
    root: Record<string, unknown>;
    linux: Record<string, unknown>;
    hostname: string;
    annotations?: Record<string, string>;
  };
  spec.process.args = args;
  spec.process.env = mergeEnv([DEFAULT_PATH, 'HOSTNAME=isola'], c.Env ?? [], opts.env ?? []);
  spec.process.cwd = c.WorkingDir || '/';
  spec.process.user = parseUser(c.User);
  spec.process.terminal = opts.terminal === true;
  spec.root = { path: 'rootfs', readonly: false };
  if (opts.hostname) spec.hostname = opts.hostname;
  if (opts.memoryMiB !== undefined) {
    spec.linux.resources = {
      ...(spec.linux.resources as Record<string, unknown>),
      memory: { limit: opts.memoryMiB * 2 ** 20 },
    };
  }
  spec.annotations = { [IMAGE_ANNOTATION]: opts.image, [IMAGE_STORE_ANNOTATION]: opts.store };
  return spec;
}
