// The control channel between isola-runtime verbs and a container's monitor process: framed
// messages (the agent protocol's framing, src/protocol/frame.ts) over a unix socket. A verb opens
// a connection, sends one request and reads the reply; `exec` keeps its connection open for the
// process's output events, its stdin and its exit.

import net from 'node:net';
import { IsolaError, isErrorCode } from '../errors.js';
import { FRAME_BODY_CHUNK, FrameDecoder, encodeFrame } from '../protocol/frame.js';

/** Control requests answer within this time, except `exec` streams which last the process. */
export const CONTROL_TIMEOUT_MS = 60_000;

export interface ControlRequest {
  op: 'start' | 'kill' | 'exec' | 'stdin' | 'ps' | 'pause' | 'resume' | 'ping';
  [k: string]: unknown;
}

export type ControlEvent =
  | { ev: 'stdout' | 'stderr'; body: Buffer }
  | { ev: 'exit'; exitCode: number | null; signal: string | null };

/** One connection from the monitor's side. */
export class ControlConnection {
  private readonly decoder = new FrameDecoder();
  /** Set while an exec streams on this connection: `stdin` frames go here. */
  streamHandler: ((req: ControlRequest, body: Buffer) => void) | null = null;

  constructor(
    readonly sock: net.Socket,
    onRequest: (req: ControlRequest, body: Buffer, conn: ControlConnection) => void,
  ) {
    sock.on('data', (chunk: Buffer) => {
      for (const ev of this.decoder.push(chunk)) {
        if (ev.kind === 'error') {
          this.reply({ ok: false, error: { code: 'E_AGENT_PROTOCOL', message: ev.message } });
          continue;
        }
        const h = ev.frame.header as ControlRequest | null;
        if (!h || typeof h !== 'object' || typeof h.op !== 'string') {
          this.reply({
            ok: false,
            error: { code: 'E_AGENT_PROTOCOL', message: 'bad control request' },
          });
          continue;
        }
        if (this.streamHandler && h.op === 'stdin') this.streamHandler(h, ev.frame.body);
        else onRequest(h, ev.frame.body, this);
      }
    });
    sock.on('error', () => {});
  }

  reply(msg: { ok: boolean; result?: unknown; error?: { code: string; message: string } }): void {
    if (!this.sock.destroyed) this.sock.write(encodeFrame({ reply: true, ...msg }));
  }

  event(ev: Record<string, unknown>, body?: Buffer): void {
    if (this.sock.destroyed) return;
    if (body && body.length > FRAME_BODY_CHUNK) {
      for (let off = 0; off < body.length; off += FRAME_BODY_CHUNK) {
        this.sock.write(encodeFrame(ev, body.subarray(off, off + FRAME_BODY_CHUNK)));
      }
      return;
    }
    this.sock.write(encodeFrame(ev, body));
  }
}

export function serveControl(
  socketPath: string,
  onRequest: (req: ControlRequest, body: Buffer, conn: ControlConnection) => void,
): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((sock) => new ControlConnection(sock, onRequest));
    server.once('error', reject);
    server.listen(socketPath, () => resolve(server));
  });
}

/** Client side: a request with one reply; for `exec`, events follow on the same connection. */
export class ControlClient {
  private readonly decoder = new FrameDecoder();
  private waiting: { resolve: (v: unknown) => void; reject: (e: Error) => void } | null = null;
  private closed = false;
  onEvent: ((ev: ControlEvent) => void) | null = null;
  onClose: (() => void) | null = null;

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (chunk: Buffer) => {
      for (const ev of this.decoder.push(chunk)) {
        if (ev.kind !== 'frame') continue;
        const h = ev.frame.header as Record<string, unknown>;
        if (h.reply) {
          const w = this.waiting;
          this.waiting = null;
          if (!w) continue;
          if (h.ok) w.resolve(h.result);
          else {
            const e = h.error as { code: string; message: string };
            w.reject(new IsolaError(isErrorCode(e.code) ? e.code : 'E_INTERNAL', e.message));
          }
        } else if (h.ev === 'stdout' || h.ev === 'stderr') {
          this.onEvent?.({ ev: h.ev, body: ev.frame.body });
        } else if (h.ev === 'exit') {
          this.onEvent?.({
            ev: 'exit',
            exitCode: (h.exitCode as number | null) ?? null,
            signal: (h.signal as string | null) ?? null,
          });
        }
      }
    });
    sock.on('close', () => {
      this.closed = true;
      this.waiting?.reject(
        new IsolaError('E_OCI_STATE', 'the container monitor closed the connection'),
      );
      this.waiting = null;
      this.onClose?.();
    });
    sock.on('error', () => {});
  }

  static connect(socketPath: string): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(socketPath);
      sock.once('connect', () => resolve(new ControlClient(sock)));
      sock.once('error', (err) =>
        reject(
          new IsolaError(
            'E_OCI_STATE',
            `container monitor not reachable (${(err as Error).message})`,
            { cause: err },
          ),
        ),
      );
    });
  }

  call(req: ControlRequest, body?: Buffer, timeoutMs = CONTROL_TIMEOUT_MS): Promise<unknown> {
    if (this.closed)
      return Promise.reject(new IsolaError('E_OCI_STATE', 'control connection closed'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = null;
        reject(new IsolaError('E_OCI_STATE', `container monitor did not answer ${req.op}`));
      }, timeoutMs);
      this.waiting = {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.sock.write(encodeFrame(req, body));
    });
  }

  /** Send without waiting for a reply (stdin data for exec). */
  send(req: ControlRequest, body?: Buffer): void {
    if (!this.closed) this.sock.write(encodeFrame(req, body));
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Convenience: connect, call once, close. */
export async function controlCall(socketPath: string, req: ControlRequest): Promise<unknown> {
  const c = await ControlClient.connect(socketPath);
  try {
    return await c.call(req);
  } finally {
    c.close();
  }
}
