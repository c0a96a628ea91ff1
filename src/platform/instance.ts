// One function instance: a micro-VM of its own with the function loaded and serving, for one
// function version of one tenant (never shared). It boots the sandbox, mounts the code (a
// bundle's read-only ext4 image for Node.js; the image's root filesystem with a private
// copy-on-write layer for OCI images), starts the function process, waits until it answers,
// then carries invocations to it over HTTP through the agent's `connect` stream.
//
// It reports what happened to each invocation (ok, handler error, timeout, OOM, crash) and
// marks itself broken when its process died or an invocation ran past its timeout (a handler
// that never returns cannot be cancelled; the VM is replaced, as AWS Lambda does).

import { randomBytes, randomInt } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { type ErrorCode, IsolaError, toIsolaError } from '../errors.js';
import { createWritableLayer, ensureRootfsImage } from '../image/rootfs.js';
import { loadImage } from '../image/rootfs.js';
import { imageRunSpec } from '../image/runtime-spec.js';
import type { ImageRecord, ImageStore } from '../image/store/store.js';
import { sandboxNetwork } from '../net/attach.js';
import { parseConfig, translate } from '../oci/config.js';
import { encodePlan } from '../oci/plan-encode.js';
import {
  HEADER_REQUEST_ID,
  type HandlerError,
  IMAGE_PORT,
  RUNTIME_SCRIPT,
  RuntimeFrameDecoder,
  type RuntimeReply,
  TASK_DIR,
  WARMUP_REQUEST_ID,
  decodeOutputLine,
  encodeRuntimeFrame,
  heapLimitMiB,
} from '../protocol/function.js';
import type { ExitStatus } from '../protocol/messages.js';
import type { ExecIo } from '../sandbox/agent-client.js';
import { MicroVmDriver } from '../sandbox/drivers/microvm.js';
import type { ExecRequest, Sandbox, SandboxProcess } from '../sandbox/sandbox.js';
import type { Clone } from './snapshots.js';
import type { FunctionConfig, InvocationStatus, LogStream, Runtime } from './store/types.js';

/** Time the function process gets, after boot, to load and answer (Node start under TCG ~1 s). */
export const INIT_TIMEOUT_MS = 60_000;
/** Poll interval while the function's server is not listening yet. */
const INIT_POLL_MS = 25;
/** stderr kept to tell an out-of-memory death from another crash. */
const STDERR_TAIL_BYTES = 8 * 1024;
/** Output lines longer than this are cut (a flood of one huge line must not fill the store). */
export const MAX_LOG_LINE = 16 * 1024;
const CINIT = '/opt/isola/cinit';
/** How long a broken connection waits for the function process's exit status to arrive. */
const EXIT_AFTER_CLOSE_MS = 3000;
/** Bound on the look inside a guest whose invocation overran. */
const DIAGNOSE_MS = 2000;

export interface OutputEvent {
  requestId: string | null;
  stream: LogStream;
  line: string;
}

export interface InstanceSpec {
  id: string;
  functionName: string;
  version: number;
  runtime: Runtime;
  config: FunctionConfig;
  /** Environment of the function process: the version's env plus secrets. */
  env: Record<string, string>;
  /** Node.js: the bundle's ext4 image and the handler path inside it. */
  bundle?: { image: string; handler: string };
  /** OCI image: the store and record. */
  image?: { store: ImageStore; rec: ImageRecord };
  /** Per-instance scratch folder on the host (removed on destroy). */
  workDir: string;
  onOutput: (e: OutputEvent) => void;
  /** Called once when the instance can no longer serve (process died, timeout, VM gone). */
  onBroken?: (why: string) => void;
  /**
   * Node.js: a clone of the function's snapshot (snapshots.ts) instead of a boot. When it
   * fails the instance boots, and says why in the function's log.
   */
  restore?: () => Promise<Clone>;
  /** Environment a clone's runtime gets on restore (secrets, which snapshots never hold). */
  restoreEnv?: Record<string, string>;
}

export interface InvokeOutcome {
  status: InvocationStatus;
  /** ok: the handler's result (JSON value). */
  result?: unknown;
  error?: IsolaError;
  /** Handler time in the guest as the runtime measured it (ms), when known. */
  handlerMs?: number;
}

export interface HttpOutcome {
  status: InvocationStatus;
  error?: IsolaError;
}

/**
 * node:http over the agent's connect stream (image functions). A connection per request: node's
 * keep-alive reuse of these relayed streams was seen to leave a request unsent now and then.
 */
class GuestHttpAgent extends http.Agent {
  constructor(
    private readonly sb: Sandbox,
    private readonly port: number,
  ) {
    super({ keepAlive: false, maxSockets: 256 });
  }
  override createConnection(): Duplex {
    return this.sb.connect(this.port);
  }
}

export type InstanceState = 'starting' | 'ready' | 'broken' | 'destroyed';

export class Instance {
  state: InstanceState = 'starting';
  /** How it came up: restored from a snapshot, or booted (also when a snapshot was built). */
  startKind: 'booted' | 'restored' = 'booted';
  /** Steps of the start (ms), for the invocation record and the log. */
  startSteps: Record<string, number> = {};
  inflight = 0;
  lastUsed = Date.now();
  /** Boot + load time (ms), set when ready. */
  startMs = 0;
  /** Set when the handler failed to load; invocations answer it at once. */
  initError: IsolaError | null = null;
  private sandbox: Sandbox | null = null;
  private proc: SandboxProcess | null = null;
  private agent: GuestHttpAgent | null = null;
  /** Node.js functions: the one multiplexed connection to the runtime. */
  private rt: RuntimeChannel | null = null;
  private stderrTail = '';
  private readonly outBuf = { stdout: '', stderr: '' };
  private readonly current = new Set<string>();
  private exitStatus: ExitStatus | null = null;
  private resolveExit!: (s: ExitStatus) => void;
  /** Resolves when the function process exits (never, while it runs). */
  private readonly exitPromise = new Promise<ExitStatus>((r) => {
    this.resolveExit = r;
  });
  private readonly deathWaiters = new Set<(s: ExitStatus) => void>();
  private brokenWhy: string | null = null;

  constructor(readonly spec: InstanceSpec) {}

  get id(): string {
    return this.spec.id;
  }
  get vmmPid(): number | null {
    return this.sandbox?.vmmPid ?? null;
  }

  async start(): Promise<void> {
    const t0 = performance.now();
    const { spec } = this;
    mkdirSync(spec.workDir, { recursive: true, mode: 0o700 });
    try {
      if (spec.restore && (await this.startRestored())) {
        this.startMs = performance.now() - t0;
        this.startSteps.totalMs = this.startMs;
        if (this.state === 'starting') this.state = 'ready';
        return;
      }
      const drives =
        spec.runtime === 'image'
          ? [await this.imageDrive()]
          : [{ path: spec.bundle!.image, readonly: true, format: 'raw' as const }];
      const network = sandboxNetwork(spec.config.egress);
      this.sandbox = await new MicroVmDriver().create({
        memoryMiB: spec.config.memoryMiB,
        vcpus: spec.config.vcpus,
        drives,
        functionPort: spec.runtime === 'nodejs20',
        ...(network ? { network } : {}),
      });
      await this.sandbox.start();
      if (this.state === 'destroyed') throw new IsolaError('E_SHUTTING_DOWN', 'destroyed');
      if (spec.runtime === 'image') await this.startImage();
      else await this.startNode();
      if (spec.runtime === 'image') this.agent = new GuestHttpAgent(this.sandbox, IMAGE_PORT);
      await this.waitServing();
      this.startMs = performance.now() - t0;
      const boot = this.sandbox.boot;
      this.startSteps = {
        bootMs: boot?.totalMs ?? 0,
        bootRetries: boot?.retries ?? 0,
        loadMs: this.startMs - (boot?.wallMs ?? 0),
        totalMs: this.startMs,
      };
      if (this.state === 'starting') this.state = 'ready';
    } catch (err) {
      await this.destroy();
      const e = toIsolaError(err);
      if (e.code.startsWith('E_FUNCTION_')) throw e;
      throw new IsolaError('E_FUNCTION_UNAVAILABLE', `instance did not start: ${e.message}`, {
        cause: e,
      });
    }
  }

  /**
   * Start from the function's snapshot: the runtime is already running in the clone with the
   * handler loaded. Its stale replies from before the snapshot carry ids this side never uses
   * (a random first id); the first frame reseeds what cannot reseed itself. False: not possible
   * (the snapshot could not be built or restored); the caller boots instead.
   */
  private async startRestored(): Promise<boolean> {
    let clone: Clone;
    try {
      clone = await this.spec.restore!();
    } catch (err) {
      const e = toIsolaError(err);
      if (e.code === 'E_SHUTTING_DOWN' || this.state === 'destroyed') throw e;
      this.spec.onOutput({
        requestId: null,
        stream: 'system',
        line: `no snapshot start (${e.message}); booting`,
      });
      return false;
    }
    this.sandbox = clone.sandbox;
    if (this.state === 'destroyed') throw new IsolaError('E_SHUTTING_DOWN', 'destroyed');
    const { execId, pid } = clone.meta.extra as { execId: number; pid: number };
    this.proc = clone.sandbox.attach(execId, pid, this.outputIo());
    this.watchExit();
    const rt = new RuntimeChannel(await clone.sandbox.functionChannel(), randomInt(1, 2 ** 30));
    rt.notify({
      t: 'restore',
      seed: randomBytes(32).toString('hex'),
      env: this.spec.restoreEnv ?? {},
    });
    this.rt = rt;
    this.startKind = clone.built ? 'booted' : 'restored';
    const r = clone.sandbox.restore;
    this.startSteps = {
      prespawned: r?.prespawned ? 1 : 0,
      spawnMs: r?.spawnMs ?? 0,
      loadMs: r?.loadMs ?? 0,
      resumeMs: r?.resumeMs ?? 0,
      restoreMs: r?.totalMs ?? 0,
    };
    return true;
  }

  private async imageDrive(): Promise<{ path: string; readonly: boolean; format: 'qcow2' }> {
    const { store, rec } = this.spec.image!;
    store.lease([rec.manifestDigest, rec.configDigest]);
    const base = await ensureRootfsImage(store, rec);
    const overlay = path.join(this.spec.workDir, 'rootfs.qcow2');
    await createWritableLayer(base.path, overlay);
    return { path: overlay, readonly: false, format: 'qcow2' };
  }

  private must(argv: string[]): Promise<void> {
    return runOrFail(this.sandbox!, argv, 'E_FUNCTION_UNAVAILABLE');
  }

  private async startNode(): Promise<void> {
    this.proc = await launchNodeRuntime(this.sandbox!, this.spec, this.outputIo());
    this.watchExit();
  }

  private async startImage(): Promise<void> {
    const { spec } = this;
    const { store, rec } = spec.image!;
    const guestDir = `/run/isola-fn/${spec.id}`;
    await this.must(['mkdir', '-p', `${guestDir}/rootfs`]);
    await this.must(['mount', '-t', 'ext4', '/dev/vdb', `${guestDir}/rootfs`]);
    const loaded = loadImage(store, rec);
    const oci = imageRunSpec(loaded.config, {
      image: rec.name,
      store: store.dir,
      env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      memoryMiB: spec.config.memoryMiB,
    }) as { linux: { namespaces?: Array<{ type: string }> } };
    // The VM is the isolation boundary; the container shares the guest's network stack so the
    // host reaches its server on the guest's loopback.
    oci.linux.namespaces = (oci.linux.namespaces ?? []).filter((n) => n.type !== 'network');
    const t = translate(parseConfig(oci), {
      id: spec.id,
      bundle: spec.workDir,
      guestDir,
      hostCpus: os.cpus().length,
    });
    await this.sandbox!.writeFile(`${guestDir}/plan`, encodePlan(t.plan));
    this.proc = await this.sandbox!.exec(
      { argv: [CINIT, 'create', `${guestDir}/plan`], stdin: true },
      this.outputIo(),
    );
    this.watchExit();
  }

  private outputIo() {
    return {
      onStdout: (d: Buffer) => this.onOutput('stdout', d),
      onStderr: (d: Buffer) => this.onOutput('stderr', d),
    };
  }

  private onOutput(stream: 'stdout' | 'stderr', data: Buffer): void {
    const text = data.toString('utf8');
    if (stream === 'stderr') {
      this.stderrTail = (this.stderrTail + text).slice(-STDERR_TAIL_BYTES);
    }
    const buf = this.outBuf[stream] + text;
    const lines = buf.split('\n');
    this.outBuf[stream] = lines.pop() ?? '';
    if (this.outBuf[stream].length > MAX_LOG_LINE) {
      lines.push(this.outBuf[stream]);
      this.outBuf[stream] = '';
    }
    for (const l of lines) this.emitLine(stream, l);
  }

  private emitLine(stream: 'stdout' | 'stderr', l: string): void {
    // Output with no request id goes to the one invocation running, when there is just one.
    const sole = this.current.size === 1 ? [...this.current][0]! : null;
    const d = this.spec.runtime === 'nodejs20' ? decodeOutputLine(l) : { raw: l };
    if ('raw' in d) {
      if (d.raw.length === 0) return;
      this.spec.onOutput({ requestId: sole, stream, line: d.raw.slice(0, MAX_LOG_LINE) });
      return;
    }
    // A snapshot template's warm-up output, replayed by a clone's restored queues.
    if (d.r === WARMUP_REQUEST_ID) return;
    const s: LogStream = d.s === 'e' ? 'stderr' : 'stdout';
    for (const line of d.t.replace(/\n$/, '').split('\n')) {
      this.spec.onOutput({ requestId: d.r ?? sole, stream: s, line: line.slice(0, MAX_LOG_LINE) });
    }
  }

  private watchExit(): void {
    const proc = this.proc!;
    proc.exited.then(
      (s) => this.onExit(s),
      () => this.onExit({ exitCode: null, signal: 'SIGKILL' }),
    );
  }

  private onExit(s: ExitStatus): void {
    this.exitStatus = s;
    this.resolveExit(s);
    for (const w of this.deathWaiters) w(s);
    this.deathWaiters.clear();
    for (const k of ['stdout', 'stderr'] as const) {
      if (this.outBuf[k]) this.emitLine(k, this.outBuf[k]);
      this.outBuf[k] = '';
    }
    this.markBroken(`function process exited (${describeExit(s)})`);
  }

  private exited(): Promise<ExitStatus> {
    return this.exitPromise;
  }

  /** Calls fn once when the function process exits (soon, if it has); returns the cancel. */
  private onDeath(fn: (s: ExitStatus) => void): () => void {
    const s = this.exitStatus;
    if (s) {
      queueMicrotask(() => fn(s));
      return () => {};
    }
    this.deathWaiters.add(fn);
    return () => this.deathWaiters.delete(fn);
  }

  markBroken(why: string): void {
    if (this.state === 'broken' || this.state === 'destroyed') return;
    this.state = 'broken';
    this.brokenWhy = why;
    this.spec.onBroken?.(why);
  }

  /** Wait until the function's server answers (Node: its health route; image: a TCP accept). */
  private async waitServing(): Promise<void> {
    if (this.spec.runtime === 'nodejs20') return this.waitRuntime();
    const deadline = Date.now() + INIT_TIMEOUT_MS;
    for (;;) {
      if (this.exitStatus) throw this.initDeath(this.exitStatus);
      if (this.state === 'destroyed') throw new IsolaError('E_SHUTTING_DOWN', 'destroyed');
      try {
        const c = this.sandbox!.connect(IMAGE_PORT) as Duplex & { ready(): Promise<void> };
        c.on('error', () => undefined); // a refused probe is expected until the server listens
        await c.ready();
        c.destroy();
        return;
      } catch (err) {
        const e = toIsolaError(err);
        if (e.code !== 'E_GUEST_CONNECT') throw e;
      }
      if (Date.now() > deadline) {
        throw new IsolaError(
          'E_FUNCTION_INIT',
          `the image's server did not listen on port ${IMAGE_PORT} within ${INIT_TIMEOUT_MS} ms`,
        );
      }
      await new Promise((r) => setTimeout(r, INIT_POLL_MS));
    }
  }

  /**
   * Node.js: ask the runtime on the function port whether the handler loaded. The question
   * waits in the port until the runtime opens it, so there is nothing to poll.
   */
  private async waitRuntime(): Promise<void> {
    const rt = new RuntimeChannel(await this.sandbox!.functionChannel());
    this.rt = rt;
    const health = rt.call({ t: 'health' }, undefined, INIT_TIMEOUT_MS);
    const died = this.exited().then((s) => {
      throw this.initDeath(s);
    });
    health.catch(() => undefined);
    died.catch(() => undefined);
    const body = (await Promise.race([health, died])).header as Extract<
      RuntimeReply,
      { t: 'health' }
    >;
    if (!body.ready) {
      this.initError = new IsolaError(
        'E_FUNCTION_INIT',
        `function failed to load: ${body.error?.type ?? 'Error'}: ${body.error?.message ?? 'unknown'}`,
        { details: { error: body.error } },
      );
    }
  }

  private initDeath(s: ExitStatus): IsolaError {
    return new IsolaError(
      'E_FUNCTION_INIT',
      `function process exited during start (${describeExit(s)}): ${lastLines(this.stderrTail)}`,
    );
  }

  /** One buffered HTTP exchange with the function's server. */
  private request(
    method: string,
    urlPath: string,
    headers: Record<string, string>,
    body: Buffer | null,
    timeoutMs: number,
  ): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const req = http.request(
        { agent: this.agent!, method, path: urlPath, headers, host: 'guest' },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(parts),
            }),
          );
          res.on('error', reject);
        },
      );
      const timer = setTimeout(
        () => req.destroy(new IsolaError('E_FUNCTION_TIMEOUT', 'request timed out')),
        timeoutMs,
      );
      req.on('close', () => clearTimeout(timer));
      req.on('error', (err) => reject(toIsolaError(err)));
      req.end(body ?? undefined);
    });
  }

  /**
   * Run one invocation with a JSON event. Never throws: the outcome says what happened.
   * `timeoutMs` is the function timeout; past it the instance is broken.
   */
  async invoke(event: Buffer, requestId: string, timeoutMs: number): Promise<InvokeOutcome> {
    if (this.initError) return { status: 'error', error: this.initError };
    const deadline = Date.now() + timeoutMs;
    this.begin(requestId);
    try {
      if (this.spec.runtime === 'image') {
        const exchange = this.request(
          'POST',
          '/',
          { 'content-type': 'application/json', [HEADER_REQUEST_ID]: requestId },
          event,
          timeoutMs + 1000,
        );
        const r = await this.race(exchange, timeoutMs);
        return 'outcome' in r ? r.outcome : imageOutcome(r.value);
      }
      const r = await this.race(
        this.rt!.call({ t: 'invoke', requestId, deadline }, event, 0),
        timeoutMs,
      );
      if ('outcome' in r) return r.outcome;
      const reply = r.value.header as Extract<RuntimeReply, { t: 'reply' }>;
      if (reply.ok) {
        return {
          status: 'ok',
          result: JSON.parse(r.value.body.toString('utf8')),
          handlerMs: reply.durationMs,
        };
      }
      return {
        status: 'error',
        handlerMs: reply.durationMs,
        error: new IsolaError('E_FUNCTION_ERROR', `${reply.error.type}: ${reply.error.message}`, {
          details: { error: reply.error },
        }),
      };
    } catch (err) {
      return this.failure(err);
    } finally {
      this.end(requestId);
    }
  }

  /**
   * Pass an HTTP request through to an image function's server and stream the answer back.
   * The caller gives the already-read request body (bounded by the gateway).
   */
  async proxy(
    req: { method: string; path: string; headers: Record<string, string | string[]>; body: Buffer },
    res: http.ServerResponse,
    requestId: string,
    timeoutMs: number,
  ): Promise<HttpOutcome> {
    this.begin(requestId);
    try {
      const exchange = new Promise<void>((resolve, reject) => {
        const up = http.request(
          {
            agent: this.agent!,
            method: req.method,
            path: req.path,
            headers: { ...req.headers, [HEADER_REQUEST_ID]: requestId },
          },
          (upRes) => {
            const headers = { ...upRes.headers };
            for (const h of HOP_BY_HOP) delete headers[h];
            res.writeHead(upRes.statusCode ?? 502, { ...headers, [HEADER_REQUEST_ID]: requestId });
            upRes.pipe(res);
            upRes.on('end', () => resolve());
            upRes.on('error', reject);
          },
        );
        up.on('error', (err) => reject(toIsolaError(err)));
        up.end(req.body);
      });
      const r = await this.race(exchange, timeoutMs);
      if ('outcome' in r) return r.outcome;
      return { status: 'ok' };
    } catch (err) {
      return this.failure(err);
    } finally {
      this.end(requestId);
    }
  }

  private begin(requestId: string): void {
    this.inflight++;
    this.current.add(requestId);
    this.lastUsed = Date.now();
  }

  private end(requestId: string): void {
    this.inflight--;
    this.current.delete(requestId);
    this.lastUsed = Date.now();
  }

  /**
   * The exchange against the timeout and the death of the function process. One promise per
   * invocation (this runs for every one, and each promise is garbage and async-hook work): no
   * then() on the instance's exit promise either, which would stay attached to it for the
   * instance's whole life, one per invocation served. The first of the three settles it.
   */
  private race<T>(
    p: Promise<T>,
    timeoutMs: number,
  ): Promise<{ value: T } | { outcome: InvokeOutcome }> {
    return new Promise((resolve, reject) => {
      let settled = false;
      let cancelDeath = () => {};
      const settle = () => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        cancelDeath();
        return true;
      };
      const timer = setTimeout(async () => {
        const diag = await this.diagnose();
        this.spec.onOutput({
          requestId: null,
          stream: 'system',
          line: `invocation timed out after ${timeoutMs} ms on instance ${this.id} (${this.inflight} in flight); replacing it. guest: ${diag}`,
        });
        this.markBroken('an invocation ran past its timeout');
        if (settle())
          resolve({
            outcome: {
              status: 'timeout',
              error: new IsolaError(
                'E_FUNCTION_TIMEOUT',
                `the function did not finish within its timeout of ${timeoutMs / 1000} s`,
              ),
            },
          });
      }, timeoutMs);
      cancelDeath = this.onDeath((s) => {
        if (settle()) resolve({ outcome: this.deathOutcome(s) });
      });
      p.then(
        (value) => {
          if (settle()) resolve({ value });
        },
        (err: unknown) => {
          if (settle()) reject(err);
        },
      );
    });
  }

  /** What the guest looks like when an invocation overran (for the operator's log). */
  private async diagnose(): Promise<string> {
    const sb = this.sandbox;
    if (!sb) return 'gone';
    const probe = sb
      .run([
        'sh',
        '-c',
        'cat /proc/loadavg; netstat -tn 2>/dev/null | tail -n +3; ps -o pid,stat,args 2>/dev/null | grep -v "ps -o"',
      ])
      .then((r) => r.stdout.replace(/\s+/g, ' ').trim().slice(0, 1500));
    const t = new Promise<string>((r) =>
      setTimeout(() => r('agent did not answer within 2 s'), DIAGNOSE_MS),
    );
    return Promise.race([probe, t]).catch((err: unknown) => `probe failed: ${String(err)}`);
  }

  private deathOutcome(s: ExitStatus): InvokeOutcome {
    const oom =
      /heap out of memory|Allocation failed|out of memory/i.test(this.stderrTail) ||
      s.signal === 'SIGKILL';
    if (oom) {
      return {
        status: 'oom',
        error: new IsolaError(
          'E_FUNCTION_OOM',
          `the function ran out of memory (limit ${this.spec.config.memoryMiB} MiB); its instance was replaced`,
        ),
      };
    }
    return {
      status: 'crash',
      error: new IsolaError(
        'E_FUNCTION_CRASHED',
        `the function process exited during the invocation (${describeExit(s)}); its instance was replaced`,
        { details: { exitCode: s.exitCode, signal: s.signal } },
      ),
    };
  }

  private async failure(err: unknown): Promise<InvokeOutcome> {
    // A broken exchange because the process died: report the death, not the socket error. The
    // connection's close reaches the host before the process's exit event, so wait a little.
    if (!this.exitStatus && this.proc) {
      await Promise.race([this.exited(), new Promise((r) => setTimeout(r, EXIT_AFTER_CLOSE_MS))]);
    }
    if (this.exitStatus) return this.deathOutcome(this.exitStatus);
    const e = toIsolaError(err);
    if (e.code === 'E_FUNCTION_TIMEOUT') {
      this.markBroken('an invocation ran past its timeout');
      return { status: 'timeout', error: e };
    }
    this.markBroken(`invocation failed: ${e.message}`);
    return {
      status: 'crash',
      error: new IsolaError('E_FUNCTION_CRASHED', `the function's instance failed: ${e.message}`, {
        cause: e,
      }),
    };
  }

  /**
   * Stop everything this instance holds; idempotent. Also after a destroy that came while it
   * was starting: the sandbox the start got afterwards goes too (else it would outlive the
   * server's shutdown, and keep the server from exiting).
   */
  async destroy(): Promise<void> {
    const first = this.state !== 'destroyed';
    this.state = 'destroyed';
    this.agent?.destroy();
    this.rt?.close();
    const sb = this.sandbox;
    this.sandbox = null;
    await sb?.destroy().catch(() => undefined);
    if (first) rmSync(this.spec.workDir, { recursive: true, force: true });
  }

  get brokenReason(): string | null {
    return this.brokenWhy;
  }
}

const HOP_BY_HOP = [
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
];

function imageOutcome(res: { status: number; headers: http.IncomingHttpHeaders; body: Buffer }) {
  const text = res.body.toString('utf8');
  const isJson = /json/.test(String(res.headers['content-type'] ?? ''));
  let value: unknown = text;
  if (isJson) {
    try {
      value = JSON.parse(text);
    } catch {
      // keep the text
    }
  }
  if (res.status >= 200 && res.status < 400) return { status: 'ok' as const, result: value };
  return {
    status: 'error' as const,
    error: new IsolaError('E_FUNCTION_ERROR', `the function answered HTTP ${res.status}`, {
      details: { status: res.status, body: text.slice(0, 4096) },
    }),
  };
}

/** Run a command in the sandbox; a non-zero exit is an error with `code` and its stderr. */
export async function runOrFail(sb: Sandbox, argv: string[], code: ErrorCode): Promise<void> {
  const r = await sb.run(argv);
  if (r.exitCode !== 0) throw new IsolaError(code, `${argv.join(' ')}: ${r.stderr.trim()}`);
}

/**
 * Mount the bundle (the drive after the guest image) read-only at TASK_DIR and start the
 * Node.js runtime: by an instance that booted, and by a snapshot template, which first drops
 * the blocks the guest cached of the slot's placeholder (`flushSlot`).
 */
export async function launchNodeRuntime(
  sb: Sandbox,
  spec: RuntimeSpec,
  io: ExecIo,
  opts: { flushSlot?: boolean; errorCode?: ErrorCode } = {},
): Promise<SandboxProcess> {
  const code = opts.errorCode ?? 'E_FUNCTION_UNAVAILABLE';
  if (opts.flushSlot) await runOrFail(sb, ['/opt/isola/guestctl', 'flushbufs', '/dev/vdb'], code);
  await runOrFail(sb, ['mount', '-t', 'ext4', '-o', 'ro', '/dev/vdb', TASK_DIR], code);
  return sb.exec(nodeRuntimeExec(spec), io);
}

type RuntimeSpec = Pick<InstanceSpec, 'env' | 'config' | 'bundle' | 'functionName' | 'version'>;

/** How the Node.js runtime is started in the guest. */
function nodeRuntimeExec(spec: RuntimeSpec): ExecRequest {
  return {
    argv: [
      '/usr/bin/node',
      `--max-old-space-size=${heapLimitMiB(spec.config.memoryMiB)}`,
      // No idle-time full GC (V8's memory reducer fires seconds after activity stops): in a
      // clone it would rewrite the whole heap, copying every page of it out of the snapshot
      // (measured: +11 MiB of unique memory per idle clone within 10 s of its restore).
      '--no-memory-reducer',
      RUNTIME_SCRIPT,
    ],
    cwd: TASK_DIR,
    env: {
      ...spec.env,
      NODE_ENV: spec.env.NODE_ENV ?? 'production',
      ISOLA_FN_DIR: TASK_DIR,
      ISOLA_FN_HANDLER: spec.bundle!.handler,
      ISOLA_FN_NAME: spec.functionName,
      ISOLA_FN_VERSION: String(spec.version),
      ISOLA_FN_MEMORY_MIB: String(spec.config.memoryMiB),
    },
  };
}

export function describeExit(s: ExitStatus): string {
  return s.signal ? `killed by ${s.signal}` : `exit code ${s.exitCode}`;
}

function lastLines(text: string, n = 5): string {
  return text.trim().split('\n').slice(-n).join(' | ').slice(0, 2000);
}

/**
 * Invokes that come while the runtime is in the middle of a batch wait for its next reply:
 * see RuntimeChannel.call. The defaults: a reply within the last millisecond means mid-batch,
 * and nothing waits longer than a millisecond.
 */
export interface Coalescing {
  windowMs: number;
  maxHoldMs: number;
}
export const DEFAULT_COALESCING: Coalescing = { windowMs: 1, maxHoldMs: 1 };

/** Invocations multiplexed on one connection to the in-guest runtime (protocol/function.ts). */
export class RuntimeChannel {
  private readonly decoder = new RuntimeFrameDecoder();
  private readonly pending = new Map<
    number,
    { resolve: (r: { header: RuntimeReply; body: Buffer }) => void; reject: (e: Error) => void }
  >();
  private nextId: number;
  private closedWith: Error | null = null;
  private corked = false;
  /** Invokes held back (call), and since when the runtime's last reply came. */
  private held: Buffer[] = [];
  private holdTimer: NodeJS.Timeout | null = null;
  private lastReplyAt = Number.NEGATIVE_INFINITY;

  /**
   * `firstId`: a restored runtime may resend replies from before its snapshot (ids from 1).
   * `coalescing`: null sends every invoke at once.
   */
  constructor(
    private readonly conn: Duplex,
    firstId = 1,
    private readonly coalescing: Coalescing | null = DEFAULT_COALESCING,
  ) {
    this.nextId = firstId;
    conn.on('data', (chunk: Buffer) => {
      this.lastReplyAt = performance.now();
      // The runtime is writing replies, so it is awake: what waited for that goes now.
      if (this.held.length > 0) this.release();
      let frames: ReturnType<RuntimeFrameDecoder['push']>;
      try {
        frames = this.decoder.push(chunk);
      } catch (err) {
        this.fail(
          new IsolaError('E_AGENT_PROTOCOL', `runtime sent a bad frame: ${(err as Error).message}`),
        );
        return;
      }
      for (const f of frames) {
        const id = Number(f.header.id);
        const p = this.pending.get(id);
        if (!p) continue;
        this.pending.delete(id);
        p.resolve({ header: f.header as unknown as RuntimeReply, body: f.body });
      }
    });
    const gone = (err?: Error) =>
      this.fail(
        toIsolaError(err ?? new IsolaError('E_GUEST_CONNECT', 'the runtime closed its connection')),
      );
    conn.on('error', gone);
    conn.on('close', () => gone());
    conn.on('end', () => gone());
  }

  call(
    req: { t: 'health' } | { t: 'warm' } | { t: 'invoke'; requestId: string; deadline: number },
    body: Buffer | undefined,
    timeoutMs: number,
  ): Promise<{ header: RuntimeReply; body: Buffer }> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              this.pending.delete(id);
              reject(
                new IsolaError(
                  'E_FUNCTION_TIMEOUT',
                  `the runtime did not answer within ${timeoutMs} ms`,
                ),
              );
            }, timeoutMs)
          : null;
      this.pending.set(id, {
        resolve: (r) => {
          if (timer) clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          if (timer) clearTimeout(timer);
          reject(e);
        },
      });
      // The id second, as the frames' field order has it (an invoke in that order takes the
      // binary header, protocol/function.ts).
      const { t, ...fields } = req;
      const frame = encodeRuntimeFrame({ t, id, ...fields }, body);
      if (t === 'invoke' && this.midBatch()) this.hold(frame);
      else this.send(frame);
    });
  }

  /**
   * Whether the runtime is in the middle of a batch: invocations of its in flight (sent, not
   * this one, not held) and a reply from it within the coalescing window. An invoke sent then
   * may reach a runtime that has just gone idle and wake it for itself alone. Sent at once,
   * under load, an instance could settle (by chance, for its life) in a steady state of single
   * frames with three quarters of the throughput and 1.5 times the overhead of the one where
   * invocations travel in groups (README: the hold toggled at run time in three such servers).
   * Held until the next reply, the invokes leave together while the runtime is still writing
   * replies. A lone request, or one behind slow handlers only, is never held: nothing in
   * flight, or no recent reply.
   */
  private midBatch(): boolean {
    const c = this.coalescing;
    if (c === null) return false;
    const inFlight = this.pending.size - 1 - this.held.length;
    return inFlight > 0 && performance.now() - this.lastReplyAt < c.windowMs;
  }

  private hold(frame: Buffer): void {
    this.held.push(frame);
    this.holdTimer ??= setTimeout(() => this.release(), this.coalescing!.maxHoldMs);
  }

  private release(): void {
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = null;
    const held = this.held;
    this.held = [];
    for (const f of held) this.send(f);
  }

  /**
   * Frames of one turn of the event loop leave in one write: one wake-up of the VMM and of the
   * runtime for all the invocations that arrived together, not one each.
   */
  private send(frame: Buffer): void {
    if (!this.corked) {
      this.corked = true;
      this.conn.cork();
      setImmediate(() => {
        this.corked = false;
        this.conn.uncork();
      });
    }
    this.conn.write(frame);
  }

  /** A frame that has no reply. */
  notify(req: { t: 'restore'; seed: string; env: Record<string, string> }): void {
    if (!this.closedWith) this.send(encodeRuntimeFrame({ ...req, id: 0 }));
  }

  close(): void {
    this.conn.destroy();
  }

  private fail(err: Error): void {
    if (this.closedWith) return;
    this.closedWith = err;
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = null;
    this.held = [];
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.conn.destroy();
  }
}
