// The container monitor: one host process per container, started by `isola-runtime create`.
// It is what the OCI state calls the container's pid: it owns the micro-VM, holds the
// container's stdio (the file descriptors the caller gave `create`), relays them to the process
// in the guest, and exits with the container process's exit status (or dies by its signal), so
// that containerd's shim, which reaps it as a subreaper, sees exactly what runc's init would give.
//
//   node monitor.js ROOT ID      (fd 3: readiness pipe back to `create`)
//
// It never writes logs to fd 1/2 (they are the container's); diagnostics go to <state>/monitor.log.

import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync, existsSync, lstatSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../assets/paths.js';
import { IsolaError, toIsolaError } from '../errors.js';
import { resolveImage } from '../image/images.js';
import { createWritableLayer, ensureRootfsImage } from '../image/rootfs.js';
import { ImageStore, defaultStoreDir } from '../image/store/store.js';
import { type ExitStatus, SIGNALS as PROTOCOL_SIGNALS, type Signal } from '../protocol/messages.js';
import { MicroVmDriver } from '../sandbox/drivers/microvm.js';
import type { Sandbox, SandboxProcess } from '../sandbox/sandbox.js';
import { forwardStdin } from '../sandbox/stdin.js';
import { processStartTime } from '../vmm/qemu-process.js';
import {
  MAX_BIND_COPY_BYTES,
  parseConfig,
  parseProcess,
  planProcess,
  translate,
} from './config.js';
import { type ControlConnection, type ControlRequest, serveControl } from './control.js';
import { FORWARDED_SIGNALS, exitLike } from './exit-like.js';
import { encodePlan } from './plan-encode.js';
import type { Plan } from './plan.js';
import { reportReady } from './ready.js';
import { IMAGE_ANNOTATION, IMAGE_STORE_ANNOTATION, buildRootfsImage } from './rootfs.js';
import { StateStore, checkTransition } from './state.js';

/** Host half of terminal mode; Debian's python3 (not whatever `python3` is first on PATH). */
const PTY_BRIDGE = path.join(REPO_ROOT, 'src/oci/pty-bridge.py');
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
/** The in-guest container init (guest-assets/cinit.c), installed in the guest image. */
const CINIT = '/opt/isola/cinit';
const SIGNALS = new Set<string>(PROTOCOL_SIGNALS);

const [root, id] = process.argv.slice(2) as [string, string];
const store = new StateStore(root);
const logFile = path.join(store.dir(id), 'monitor.log');
const log = (msg: string) => {
  try {
    appendFileSync(logFile, `${new Date().toISOString()} ${msg}\n`);
  } catch {
    // the state folder may be gone (delete --force)
  }
};

let sandbox: Sandbox | null = null;
let init: SandboxProcess | null = null;
let exitStatus: ExitStatus | null = null;
let execCount = 0;
/** Terminal mode: the host pty bridge (its stdin gets the output, its stdout is the input). */
let bridge: ChildProcess | null = null;
/** Where create/start time goes (appended as a JSON line to $ISOLA_RUNTIME_TIMINGS if set). */
const timings: Record<string, number> = {};
const tMonitor = performance.now();
const guestDir = `/run/isola-oci/${id}`;

/** Copy a host file or small directory tree into the guest for a bind mount. */
async function copyIn(
  sb: Sandbox,
  hostPath: string,
  guestPath: string,
  budget: { left: number },
): Promise<void> {
  const st = lstatSync(hostPath);
  if (st.isDirectory()) {
    await sb.run(['mkdir', '-p', guestPath]);
    for (const e of readdirSync(hostPath))
      await copyIn(sb, path.join(hostPath, e), path.posix.join(guestPath, e), budget);
  } else if (st.isFile()) {
    budget.left -= st.size;
    if (budget.left < 0) {
      throw new IsolaError(
        'E_OCI_UNSUPPORTED',
        `bind mount sources above ${MAX_BIND_COPY_BYTES} bytes (${hostPath})`,
      );
    }
    await sb.run(['mkdir', '-p', path.posix.dirname(guestPath)]);
    await sb.writeFile(guestPath, readFileSync(hostPath), st.mode & 0o7777);
  } else if (st.isSymbolicLink()) {
    // Links inside copied trees are skipped: their targets are host paths.
  } else {
    throw new IsolaError(
      'E_OCI_UNSUPPORTED',
      `bind mount of a device, socket or fifo (${hostPath})`,
    );
  }
}

async function must(sb: Sandbox, argv: string[]): Promise<void> {
  const r = await sb.run(argv);
  if (r.exitCode !== 0)
    throw new IsolaError('E_INTERNAL', `${argv.join(' ')} failed in the guest: ${r.stderr.trim()}`);
}

/**
 * The container's root disk. With the annotation org.isola.image (a name or digest in the image
 * store; org.isola.image.store names the store), the image's shared root filesystem image with a
 * private copy-on-write layer; otherwise an ext4 image built from the bundle's rootfs directory.
 */
async function rootDrive(
  config: ReturnType<typeof parseConfig>,
  bundle: string,
): Promise<{ path: string; readonly: boolean; format: 'raw' | 'qcow2' }> {
  const t0 = performance.now();
  const ref = config.annotations?.[IMAGE_ANNOTATION];
  if (ref) {
    const images = ImageStore.open(
      config.annotations?.[IMAGE_STORE_ANNOTATION] ?? defaultStoreDir(),
    );
    const rec = resolveImage(images, ref);
    // Held until this monitor exits, so prune keeps the base image while the container lives.
    images.lease([rec.manifestDigest, rec.configDigest]);
    const base = await ensureRootfsImage(images, rec);
    const overlay = path.join(store.dir(id), 'rootfs.qcow2');
    await createWritableLayer(base.path, overlay);
    timings.rootfsImageMs = performance.now() - t0;
    log(
      `image ${rec.name}: base ${base.path} (${base.built ? 'built' : 'cached'}), overlay in ${Math.round(timings.rootfsImageMs)} ms`,
    );
    return { path: overlay, readonly: config.root.readonly === true, format: 'qcow2' };
  }
  const image = path.join(store.dir(id), 'rootfs.ext4');
  const img = await buildRootfsImage(path.resolve(bundle, config.root.path), image);
  timings.rootfsImageMs = img.ms;
  log(`rootfs image ${img.bytes} bytes in ${Math.round(img.ms)} ms`);
  return { path: image, readonly: config.root.readonly === true, format: 'raw' };
}

async function prepare(): Promise<void> {
  const state = store.read(id);
  const config = parseConfig(
    JSON.parse(readFileSync(path.join(state.bundle, 'config.json'), 'utf8')),
  );
  const t = translate(config, {
    id,
    bundle: state.bundle,
    guestDir,
    hostCpus: os.cpus().length,
    consoleSocket: state.consoleSocket !== undefined,
  });
  if (config.process.terminal && state.consoleSocket)
    bridge = await startPtyBridge(state.consoleSocket);
  const drive = await rootDrive(config, state.bundle);
  sandbox = await new MicroVmDriver().create({
    memoryMiB: t.vm.memoryMiB,
    vcpus: t.vm.vcpus,
    drives: [drive],
    // The engine's network namespace (CNI): the VM takes its interface.
    ...(t.netnsPath ? { podNetwork: { netns: t.netnsPath } } : {}),
  });
  store.update(id, { sandboxId: sandbox.id });
  await sandbox.start();
  timings.vmBootMs = sandbox.boot?.wallMs ?? 0;
  const tPrep = performance.now();
  log(`sandbox ${sandbox.id} booted in ${Math.round(sandbox.boot?.totalMs ?? 0)} ms`);
  await must(sandbox, ['mkdir', '-p', `${guestDir}/rootfs`]);
  await must(sandbox, [
    'mount',
    '-t',
    'ext4',
    '-o',
    config.root.readonly ? 'ro' : 'rw',
    '/dev/vdb',
    `${guestDir}/rootfs`,
  ]);
  const budget = { left: MAX_BIND_COPY_BYTES };
  for (const b of t.binds) {
    try {
      await copyIn(sandbox, b.hostPath, b.guestPath, budget);
    } catch (err) {
      const e = toIsolaError(err);
      if (e.code === 'E_INTERNAL') {
        throw new IsolaError(
          'E_OCI_INVALID_CONFIG',
          `bind mount source ${b.hostPath}: ${e.message}`,
        );
      }
      throw e;
    }
  }
  await sandbox.writeFile(`${guestDir}/plan`, encodePlan(t.plan));
  timings.guestPrepareMs = performance.now() - tPrep;
  timings.createMs = performance.now() - tMonitor;
}

function finish(status: ExitStatus): void {
  if (exitStatus) return;
  exitStatus = status;
  log(`container exited: ${JSON.stringify(status)}`);
  const done = async () => {
    try {
      store.update(id, { status: 'stopped', exitCode: status.exitCode, exitSignal: status.signal });
    } catch {
      // deleted meanwhile
    }
    await sandbox?.destroy().catch(() => undefined);
    if (bridge) {
      // Let the pty bridge pass the last output on before we go.
      const b = bridge;
      await new Promise<void>((r) => {
        b.once('exit', () => r());
        b.stdin!.end();
        setTimeout(r, 2000).unref();
      });
    }
    await exitLike(status);
  };
  void done();
}

/** Start the pty bridge (src/oci/pty-bridge.py) and wait until it has handed the master over. */
async function startPtyBridge(consoleSocket: string): Promise<ChildProcess> {
  const child = spawn(PYTHON, [PTY_BRIDGE, consoleSocket], { stdio: ['pipe', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('READY\n')) resolve();
    });
    child.once('error', (e) =>
      reject(new IsolaError('E_OCI_UNSUPPORTED', `terminal mode needs ${PYTHON}: ${e.message}`)),
    );
    child.once('exit', (code) =>
      reject(
        new IsolaError(
          'E_OCI_INVALID_CONFIG',
          `console socket ${consoleSocket}: ${err.trim() || `bridge exited ${code}`}`,
        ),
      ),
    );
  });
  child.removeAllListeners('exit');
  // The bridge gone (console closed) must not take the monitor down with an EPIPE on its stdin.
  child.stdin!.on('error', () => {});
  return child;
}

async function startContainer(): Promise<void> {
  const sb = sandbox!;
  const tStart = performance.now();
  const out = bridge
    ? (d: Buffer) => bridge!.stdin!.write(d)
    : (d: Buffer) => process.stdout.write(d);
  const err = bridge ? out : (d: Buffer) => process.stderr.write(d);
  init = await sb.exec(
    { argv: [CINIT, 'create', `${guestDir}/plan`], stdin: true },
    { onStdout: out, onStderr: err },
  );
  store.update(id, { status: 'running' });
  timings.containerStartMs = performance.now() - tStart;
  if (process.env.ISOLA_RUNTIME_TIMINGS) {
    try {
      appendFileSync(process.env.ISOLA_RUNTIME_TIMINGS, `${JSON.stringify({ id, ...timings })}\n`);
    } catch {
      // timings are best effort
    }
  }
  const proc = init;
  // Relay our stdin (the caller's) to the container; /dev/null ends at once.
  // process.stdin, not an fs stream on fd 0: a blocking read of a pipe in libuv's thread pool
  // would keep the process from exiting (Node joins those threads at exit) until the pipe ends.
  forwardStdin(bridge ? bridge.stdout! : process.stdin, proc);
  proc.exited.then(
    (s) => finish(s),
    () => finish({ exitCode: null, signal: 'SIGKILL' }),
  );
}

async function guestInitPid(): Promise<number> {
  const pid = init!.pid;
  const children = (await sandbox!.readFile(`/proc/${pid}/task/${pid}/children`)).toString().trim();
  const first = Number(children.split(/\s+/)[0]);
  if (!first) throw new IsolaError('E_OCI_STATE', `container ${id} has no running process`);
  return first;
}

async function handle(req: ControlRequest, conn: ControlConnection): Promise<void> {
  const state = store.read(id);
  switch (req.op) {
    case 'ping':
      conn.reply({ ok: true, result: { status: state.status } });
      return;
    case 'start':
      checkTransition(id, state.status, 'start');
      await startContainer();
      conn.reply({ ok: true });
      return;
    case 'kill': {
      const sig = String(req.signal ?? 'SIGTERM') as Signal;
      if (!SIGNALS.has(sig))
        throw new IsolaError('E_INVALID_ARGUMENT', `unsupported signal ${sig}`);
      checkTransition(id, state.status, 'kill');
      if (init) {
        if (req.all)
          await sandbox!.run([
            'sh',
            '-c',
            `kill -${sig.slice(3)} $(cat /sys/fs/cgroup/isola/${id}/cgroup.procs) 2>/dev/null; true`,
          ]);
        else await init.signal(sig);
      } else {
        finish({ exitCode: null, signal: sig });
      }
      conn.reply({ ok: true });
      return;
    }
    case 'pause':
      checkTransition(id, state.status, 'pause');
      await sandbox!.pause();
      store.update(id, { status: 'paused' });
      conn.reply({ ok: true });
      return;
    case 'resume':
      checkTransition(id, state.status, 'resume');
      await sandbox!.resume();
      store.update(id, { status: 'running' });
      conn.reply({ ok: true });
      return;
    case 'ps': {
      const r = await sandbox!.run(['cat', `/sys/fs/cgroup/isola/${id}/cgroup.procs`]);
      conn.reply({ ok: true, result: r.stdout.split('\n').filter(Boolean).map(Number) });
      return;
    }
    case 'exec': {
      checkTransition(id, state.status, 'exec');
      const p = parseProcess(req.process);
      if (p.terminal) throw new IsolaError('E_OCI_UNSUPPORTED', 'exec with a terminal');
      const n = ++execCount;
      const planPath = `${guestDir}/exec-${n}.plan`;
      // `cinit exec` only reads the process part; the container part is already in place.
      const plan: Plan = {
        rootfs: `${guestDir}/rootfs`,
        readonlyRoot: false,
        namespaces: [],
        mounts: [],
        maskedPaths: [],
        readonlyPaths: [],
        sysctls: [],
        process: planProcess(p),
      };
      await sandbox!.writeFile(planPath, encodePlan(plan));
      const target = await guestInitPid();
      const proc = await sandbox!.exec(
        { argv: [CINIT, 'exec', String(target), planPath], stdin: req.stdin === true },
        {
          onStdout: (d) => conn.event({ ev: 'stdout' }, d),
          onStderr: (d) => conn.event({ ev: 'stderr' }, d),
        },
      );
      conn.reply({ ok: true, result: { execId: n } });
      conn.sock.on('close', () => void proc.signal('SIGKILL').catch(() => undefined));
      // Further frames on this connection are stdin for the process.
      conn.streamHandler = (r, b) => {
        if (b.length > 0) void proc.writeStdin(b).catch(() => undefined);
        if (r.eof) void proc.closeStdin().catch(() => undefined);
        if (typeof r.signal === 'string' && SIGNALS.has(r.signal))
          void proc.signal(r.signal as Signal).catch(() => undefined);
      };
      const st = await proc.exited.catch(
        () => ({ exitCode: null, signal: 'SIGKILL' }) as ExitStatus,
      );
      conn.event({ ev: 'exit', exitCode: st.exitCode, signal: st.signal });
      return;
    }
    default:
      throw new IsolaError('E_INVALID_ARGUMENT', `unknown control op ${req.op}`);
  }
}

async function main(): Promise<void> {
  // Signals sent straight to the monitor (the container's pid to the outside) go to the container.
  for (const s of FORWARDED_SIGNALS) {
    process.on(s, () => {
      if (init) void init.signal(s).catch(() => undefined);
      else finish({ exitCode: null, signal: s });
    });
  }
  const state = store.read(id);
  try {
    await serveControl(state.control, (req, body, conn) => {
      void body;
      handle(req, conn).catch((err: unknown) => {
        const e = toIsolaError(err);
        log(`control ${req.op} failed: ${e.code} ${e.message}`);
        conn.reply({ ok: false, error: { code: e.code, message: e.message } });
      });
    });
    await prepare();
    store.update(id, {
      status: 'created',
      pid: process.pid,
      pidStartTime: processStartTime(process.pid),
    });
    reportReady();
  } catch (err) {
    const e = toIsolaError(err);
    log(`create failed: ${e.code} ${e.message}`);
    reportReady(e);
    bridge?.kill('SIGKILL');
    await sandbox?.destroy().catch(() => undefined);
    process.exit(1);
  }
}

void main();
