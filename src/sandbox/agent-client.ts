// Host side of the agent protocol: many concurrent requests and exec streams over one byte
// stream (the virtio-serial socket QEMU exposes). Responses are matched by request id; process
// output and exit events by exec id.

import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { IsolaError, isErrorCode } from '../errors.js';
import { FRAME_BODY_CHUNK, FrameDecoder, encodeFrame } from '../protocol/frame.js';
import {
  type Event,
  type ExecArgs,
  type ExitStatus,
  type GuestInfo,
  PROTOCOL_VERSION,
  type Signal,
  parseGuestMessage,
} from '../protocol/messages.js';
import { type ConnTransport, GuestConnection } from './guest-connection.js';

/** Default time a single agent request may take (not a process run time: `wait` has none). */
export const AGENT_REQUEST_TIMEOUT_MS = 30_000;
/** readFile collects the whole file in host memory; beyond this it is an error, not an OOM. */
export const READ_FILE_MAX_BYTES = 64 * 1024 * 1024;
/** Events for exec ids not yet known are kept (they can race the exec reply) up to this many. */
const MAX_EARLY_EVENTS = 10_000;
/** Connections whose early events are kept (ids the connect reply has not registered yet). */
const MAX_EARLY_CONNS = 64;

interface Pending {
  resolve: (v: { result: unknown; body: Buffer }) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout | null;
  op: string;
}

export interface ExecIo {
  onStdout?: (data: Buffer) => void;
  onStderr?: (data: Buffer) => void;
}

export interface ExecHandle {
  execId: number;
  pid: number;
  /** Resolves with the exit status (from the agent's exit event). */
  exited: Promise<ExitStatus>;
  writeStdin(data: Buffer | string): Promise<void>;
  closeStdin(): Promise<void>;
  signal(sig: Signal): Promise<boolean>;
}

interface ExecState {
  io: ExecIo;
  resolveExit: (s: ExitStatus) => void;
  rejectExit: (e: Error) => void;
}

export class AgentClient extends EventEmitter implements ConnTransport {
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private readonly execs = new Map<number, ExecState>();
  private readonly early = new Map<number, Array<{ ev: Event; body: Buffer }>>();
  private earlyCount = 0;
  private readonly conns = new Map<number, GuestConnection>();
  /** Connection events that beat the connect reply's continuation (same chunk), by conn id. */
  private readonly earlyConn = new Map<number, Array<{ ev: Event; body: Buffer }>>();
  private nextId = 1;
  private closed = false;
  /** Frames are ignored until the hello nonce comes back (replies from before a reconnect). */
  private handshakeNonce: string | null = null;
  readonly protocolErrors: string[] = [];

  /**
   * `firstId`: a clone restored from a snapshot starts its request ids at a random number, so a
   * reply the snapshot's source was sent last (its queues come back with the guest) never
   * matches one of its requests; it needs no handshake before its first request.
   */
  constructor(
    private readonly stream: Duplex,
    opts: { firstId?: number } = {},
  ) {
    super();
    this.nextId = opts.firstId ?? 1;
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('close', () => this.onClose());
    stream.on('error', () => {}); // 'close' follows
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Wait for the agent's `ready` event (sent once when it starts). */
  waitReady(timeoutMs: number): Promise<Extract<Event, { ev: 'ready' }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('ready', onReady);
        reject(new IsolaError('E_AGENT_TIMEOUT', `agent not ready within ${timeoutMs} ms`));
      }, timeoutMs);
      const onReady = (ev: Extract<Event, { ev: 'ready' }>) => {
        clearTimeout(timer);
        resolve(ev);
      };
      this.once('ready', onReady);
    });
  }

  /** Version handshake with a fresh nonce; frames before its echo are dropped. */
  async hello(
    timeoutMs = AGENT_REQUEST_TIMEOUT_MS,
  ): Promise<{ version: number; agentVersion: string }> {
    const nonce = randomUUID();
    this.handshakeNonce = nonce;
    const { result } = await this.request(
      { op: 'hello', version: PROTOCOL_VERSION, nonce },
      undefined,
      timeoutMs,
    );
    const r = result as { nonce: string; version: number; agentVersion: string };
    if (r.nonce !== nonce) throw new IsolaError('E_AGENT_PROTOCOL', 'hello nonce mismatch');
    return { version: r.version, agentVersion: r.agentVersion };
  }

  async info(): Promise<GuestInfo> {
    return (await this.request({ op: 'info' })).result as GuestInfo;
  }

  async exec(args: ExecArgs, io: ExecIo = {}): Promise<ExecHandle> {
    const { result } = await this.request({ op: 'exec', ...args });
    const { execId, pid } = result as { execId: number; pid: number };
    return this.attach(execId, pid, io);
  }

  /**
   * A handle on a process the agent already runs (one started before a snapshot, in a clone
   * restored from it): its output and exit events from now on go to `io` and `exited`.
   */
  attach(execId: number, pid: number, io: ExecIo = {}): ExecHandle {
    let resolveExit!: (s: ExitStatus) => void;
    let rejectExit!: (e: Error) => void;
    const exited = new Promise<ExitStatus>((res, rej) => {
      resolveExit = res;
      rejectExit = rej;
    });
    exited.catch(() => {}); // callers that never await it must not crash the process
    this.execs.set(execId, { io, resolveExit, rejectExit });
    const early = this.early.get(execId);
    if (early) {
      this.early.delete(execId);
      this.earlyCount -= early.length;
      for (const e of early) this.dispatchExecEvent(e.ev, e.body);
    }
    const chunks = async (data: Buffer, eof: boolean) => {
      if (data.length === 0) {
        await this.request({ op: 'stdin', execId, eof });
        return;
      }
      for (let off = 0; off < data.length; off += FRAME_BODY_CHUNK) {
        const last = off + FRAME_BODY_CHUNK >= data.length;
        await this.request(
          { op: 'stdin', execId, eof: eof && last },
          data.subarray(off, off + FRAME_BODY_CHUNK),
        );
      }
    };
    return {
      execId,
      pid,
      exited,
      writeStdin: (data) => chunks(Buffer.from(data), false),
      closeStdin: () => chunks(Buffer.alloc(0), true),
      signal: async (sig) =>
        (
          (await this.request({ op: 'signal', execId, signal: sig })).result as {
            delivered: boolean;
          }
        ).delivered,
    };
  }

  /** Wait for an exec by id through the `wait` request (for processes started by another client). */
  async wait(execId: number): Promise<ExitStatus> {
    return (await this.request({ op: 'wait', execId }, undefined, 0)).result as ExitStatus;
  }

  async readFile(path: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    let offset = 0;
    for (;;) {
      const { result, body } = await this.request({
        op: 'readFile',
        path,
        offset,
        length: FRAME_BODY_CHUNK,
      });
      parts.push(body);
      offset += body.length;
      if ((result as { eof: boolean }).eof || body.length === 0) break;
      if (offset > READ_FILE_MAX_BYTES) {
        throw new IsolaError(
          'E_GUEST_IO',
          `${path} is larger than ${READ_FILE_MAX_BYTES} bytes (or a device that never ends)`,
        );
      }
    }
    return Buffer.concat(parts);
  }

  async writeFile(path: string, data: Buffer | string, mode?: number): Promise<void> {
    const buf = Buffer.from(data);
    let off = 0;
    do {
      const chunk = buf.subarray(off, off + FRAME_BODY_CHUNK);
      await this.request({ op: 'writeFile', path, mode, append: off > 0 }, chunk);
      off += FRAME_BODY_CHUNK;
    } while (off < buf.length);
  }

  /** A byte stream to a TCP port on the guest's loopback (see guest-connection.ts). */
  connect(port: number): GuestConnection {
    return new GuestConnection(this, port);
  }

  registerConn(connId: number, conn: GuestConnection): void {
    this.conns.set(connId, conn);
    const early = this.earlyConn.get(connId);
    if (early) {
      this.earlyConn.delete(connId);
      for (const e of early) this.dispatchConnEvent(e.ev, e.body);
    }
  }

  unregisterConn(connId: number): void {
    this.conns.delete(connId);
    this.earlyConn.delete(connId);
  }

  async shutdown(timeoutMs: number): Promise<void> {
    await this.request({ op: 'shutdown' }, undefined, timeoutMs);
  }

  /** Send one request; `timeoutMs` 0 means no timeout. */
  request(
    req: Record<string, unknown> & { op: string },
    body?: Buffer,
    timeoutMs = AGENT_REQUEST_TIMEOUT_MS,
  ): Promise<{ result: unknown; body: Buffer }> {
    if (this.closed) {
      return Promise.reject(
        new IsolaError('E_AGENT_DISCONNECTED', `agent channel closed; cannot ${req.op}`),
      );
    }
    const id = this.nextId++;
    const clean = Object.fromEntries(Object.entries(req).filter(([, v]) => v !== undefined));
    return new Promise((resolve, reject) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              this.pending.delete(id);
              reject(
                new IsolaError(
                  'E_AGENT_TIMEOUT',
                  `agent did not answer ${req.op} within ${timeoutMs} ms`,
                ),
              );
            }, timeoutMs)
          : null;
      this.pending.set(id, { resolve, reject, timer, op: req.op });
      this.stream.write(encodeFrame({ id, ...clean }, body));
    });
  }

  close(): void {
    this.stream.destroy();
    this.onClose();
  }

  private onData(chunk: Buffer): void {
    for (const ev of this.decoder.push(chunk)) {
      if (ev.kind === 'error') {
        this.protocolErrors.push(ev.message);
        continue;
      }
      const parsed = parseGuestMessage(ev.frame.header);
      if (!parsed.ok) {
        this.protocolErrors.push(parsed.error);
        continue;
      }
      const msg = parsed.msg;
      if ('ev' in msg) {
        if (msg.ev === 'ready') this.emit('ready', msg);
        else if (this.handshakeNonce !== null) continue;
        else if (msg.ev === 'data' || msg.ev === 'end' || msg.ev === 'closed')
          this.dispatchConnEvent(msg, ev.frame.body);
        else this.dispatchExecEvent(msg, ev.frame.body);
        continue;
      }
      if (msg.id === null) {
        // An error about a frame the agent could not attribute to a request.
        this.protocolErrors.push(
          `${msg.ok ? '' : msg.error.code}: ${msg.ok ? '' : msg.error.message}`,
        );
        continue;
      }
      const p = this.pending.get(msg.id);
      if (!p) continue;
      if (this.handshakeNonce !== null) {
        // Waiting for the hello echo: only the hello reply with our nonce ends the wait.
        const nonce = msg.ok ? (msg.result as { nonce?: string } | undefined)?.nonce : undefined;
        if (p.op !== 'hello' || (msg.ok && nonce !== this.handshakeNonce)) continue;
        this.handshakeNonce = null;
      }
      this.pending.delete(msg.id);
      if (p.timer) clearTimeout(p.timer);
      if (msg.ok) p.resolve({ result: msg.result, body: ev.frame.body });
      else
        p.reject(
          new IsolaError(
            isErrorCode(msg.error.code) ? msg.error.code : 'E_AGENT_PROTOCOL',
            msg.error.message,
          ),
        );
    }
  }

  private dispatchConnEvent(ev: Event, body: Buffer): void {
    if (ev.ev !== 'data' && ev.ev !== 'end' && ev.ev !== 'closed') return;
    const conn = this.conns.get(ev.connId);
    if (!conn) {
      // Events of a connection already closed here arrive late; keep only a bounded few.
      if (this.earlyConn.size >= MAX_EARLY_CONNS) {
        const oldest = this.earlyConn.keys().next().value;
        if (oldest !== undefined) this.earlyConn.delete(oldest);
      }
      const list = this.earlyConn.get(ev.connId) ?? [];
      if (list.length >= MAX_EARLY_EVENTS) return;
      list.push({ ev, body });
      this.earlyConn.set(ev.connId, list);
      return;
    }
    if (ev.ev === 'data') conn.onData(body);
    else if (ev.ev === 'end') conn.onEnd();
    else conn.onClosed(ev.error);
  }

  private dispatchExecEvent(ev: Event, body: Buffer): void {
    if (ev.ev === 'ready' || ev.ev === 'data' || ev.ev === 'end' || ev.ev === 'closed') return;
    const st = this.execs.get(ev.execId);
    if (!st) {
      if (this.earlyCount >= MAX_EARLY_EVENTS) return;
      const list = this.early.get(ev.execId) ?? [];
      list.push({ ev, body });
      this.early.set(ev.execId, list);
      this.earlyCount++;
      return;
    }
    if (ev.ev === 'stdout') st.io.onStdout?.(body);
    else if (ev.ev === 'stderr') st.io.onStderr?.(body);
    else if (ev.ev === 'exit') {
      this.execs.delete(ev.execId);
      st.resolveExit({ exitCode: ev.exitCode, signal: ev.signal });
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      if (p.timer) clearTimeout(p.timer);
      p.reject(new IsolaError('E_AGENT_DISCONNECTED', `agent channel closed during ${p.op}`));
    }
    for (const [id, st] of this.execs) {
      this.execs.delete(id);
      st.rejectExit(
        new IsolaError('E_AGENT_DISCONNECTED', `agent channel closed before exec ${id} exited`),
      );
    }
    for (const [id, conn] of this.conns) {
      this.conns.delete(id);
      conn.onClosed('agent channel closed');
    }
    this.emit('close');
  }
}
