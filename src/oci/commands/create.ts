// isola-runtime create [--bundle DIR] [--pid-file FILE] [--console-socket SOCK] [--no-pivot]
//                      [--no-new-keyring] [--preserve-fds N] ID
// Validates the bundle, claims the id, starts the container's monitor (which builds the root
// filesystem image and boots the micro-VM), runs the create-time hooks and writes the pid file.
// The container process is not started: `start` does that.
// Example: isola-runtime --root /run/isola-runtime create --bundle ./bundle --pid-file pid c1
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runDir } from '../../assets/paths.js';
import { IsolaError } from '../../errors.js';
import { type Ctx, verbArgs } from '../cli.js';
import { OCI_VERSION_SUPPORTED, type OciConfig, parseConfig, translate } from '../config.js';
import { runHooks } from '../hooks.js';
import { awaitReady, detachReady } from '../ready.js';
import { type ContainerState, ociState, validateId } from '../state.js';

const MONITOR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'monitor.js');

export const CREATE_OPTIONS = {
  bundle: { type: 'string', short: 'b' },
  'pid-file': { type: 'string' },
  'console-socket': { type: 'string' },
  'no-pivot': { type: 'boolean' },
  'no-new-keyring': { type: 'boolean' },
  'preserve-fds': { type: 'string' },
} as const;

export function loadBundle(bundle: string): OciConfig {
  const file = path.join(bundle, 'config.json');
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new IsolaError('E_OCI_INVALID_CONFIG', `cannot read ${file}: ${(err as Error).message}`);
  }
  const config = parseConfig(json);
  const rootfs = path.resolve(bundle, config.root.path);
  if (!existsSync(rootfs) || !statSync(rootfs).isDirectory()) {
    throw new IsolaError('E_OCI_INVALID_CONFIG', `root.path ${rootfs} is not a directory`);
  }
  return config;
}

function writePidFile(file: string, pid: number): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, String(pid));
  renameSync(tmp, file);
}

/** Create a container; returns the monitor's pid. `foreground` keeps the monitor attached (run). */
export async function createContainer(
  ctx: Ctx,
  id: string,
  bundleArg: string | undefined,
  pidFile: string | undefined,
  foreground = false,
  consoleSocket?: string,
): Promise<{ pid: number; child: ReturnType<typeof spawn> }> {
  const bundle = path.resolve(bundleArg ?? process.cwd());
  const config = loadBundle(bundle);
  // Fail on unsupported fields before anything is started.
  translate(config, {
    id,
    bundle,
    guestDir: '/',
    hostCpus: os.cpus().length,
    consoleSocket: consoleSocket !== undefined,
  });
  ctx.store.claim(id);
  const control = path.join(
    runDir(),
    'oci',
    `${createHash('sha256').update(`${ctx.store.root}\0${id}`).digest('hex').slice(0, 16)}.sock`,
  );
  mkdirSync(path.dirname(control), { recursive: true });
  const state: ContainerState = {
    ociVersion: OCI_VERSION_SUPPORTED,
    id,
    status: 'creating',
    pid: 0,
    pidStartTime: null,
    bundle,
    annotations: config.annotations ?? {},
    created: new Date().toISOString(),
    control,
    ...(consoleSocket ? { consoleSocket: path.resolve(consoleSocket) } : {}),
  };
  ctx.store.write(state);
  const child = spawn(process.execPath, [MONITOR, ctx.store.root, id], {
    stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
  });
  try {
    await awaitReady(child, 'container monitor');
    const created = ctx.store.read(id);
    await runHooks(config.hooks, 'prestart', ociState(created));
    await runHooks(config.hooks, 'createRuntime', ociState(created));
    await runHooks(config.hooks, 'createContainer', ociState(created));
    if (pidFile) writePidFile(path.resolve(pidFile), child.pid!);
  } catch (err) {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    ctx.store.remove(id);
    throw err;
  }
  if (foreground) (child.stdio[3] as unknown as { destroy(): void }).destroy();
  else detachReady(child);
  return { pid: child.pid!, child };
}

export async function create(ctx: Ctx, argv: string[]): Promise<number> {
  const { values, positionals } = verbArgs(argv, CREATE_OPTIONS);
  const id = validateId(positionals[0]);
  if (Number(values['preserve-fds'] ?? 0) > 0) {
    throw new IsolaError(
      'E_OCI_UNSUPPORTED',
      'not supported by isola-runtime: --preserve-fds (extra file descriptors)',
    );
  }
  await createContainer(
    ctx,
    id,
    values.bundle as string | undefined,
    values['pid-file'] as string | undefined,
    false,
    values['console-socket'] as string | undefined,
  );
  return 0;
}
