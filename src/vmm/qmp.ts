// A QMP (QEMU Machine Protocol) client: JSON lines over a unix socket. Connect, read the
// greeting, negotiate capabilities, then `execute` commands (one at a time on the wire, queued
// here) and receive asynchronous events.

import { EventEmitter } from 'node:events';
import net from 'node:net';
import { IsolaError } from '../errors.js';

/** A QMP command answers in milliseconds; 10 s covers a loaded host and TCG stalls. */
export const QMP_COMMAND_TIMEOUT_MS = 10_000;

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  command: string;
}

export class QmpClient extends EventEmitter {
  private buf = '';
  private readonly queue: Pending[] = [];
  private closed = false;

  private constructor(private readonly sock: net.Socket) {
    super();
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('close', () => this.onClose());
    sock.on('error', () => {}); // 'close' follows and fails pending commands
  }

  /** Connect to a QMP socket, wait for the greeting and enter command mode. */
  static async connect(path: string, timeoutMs: number): Promise<QmpClient> {
    const sock = await connectUnix(path, timeoutMs);
    const client = new QmpClient(sock);
    await client.greeting(timeoutMs);
    await client.execute('qmp_capabilities');
    return client;
  }

  private greetingWaiter: ((v: unknown) => void) | null = null;

  private greeting(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new IsolaError('E_QMP', `no QMP greeting within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.greetingWaiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closed)
      return Promise.reject(new IsolaError('E_QMP', `QMP closed; cannot run ${command}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.queue.findIndex((p) => p.timer === timer);
        if (i >= 0) this.queue.splice(i, 1);
        reject(
          new IsolaError('E_QMP', `QMP ${command} timed out after ${QMP_COMMAND_TIMEOUT_MS} ms`),
        );
      }, QMP_COMMAND_TIMEOUT_MS);
      this.queue.push({ resolve, reject, timer, command });
      this.sock.write(
        `${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`,
      );
    });
  }

  close(): void {
    this.closed = true;
    this.sock.destroy();
  }

  private onData(d: string): void {
    this.buf += d;
    let nl = this.buf.indexOf('\n');
    while (nl >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      nl = this.buf.indexOf('\n');
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greetingWaiter?.(msg);
        this.greetingWaiter = null;
      } else if ('event' in msg) {
        this.emit('event', msg);
      } else if ('return' in msg || 'error' in msg) {
        const p = this.queue.shift();
        if (!p) continue;
        clearTimeout(p.timer);
        if ('error' in msg) {
          const e = msg.error as { class?: string; desc?: string };
          p.reject(
            new IsolaError('E_QMP', `QMP ${p.command}: ${e.class ?? 'Error'}: ${e.desc ?? ''}`),
          );
        } else {
          p.resolve(msg.return);
        }
      }
    }
  }

  private onClose(): void {
    this.closed = true;
    for (const p of this.queue.splice(0)) {
      clearTimeout(p.timer);
      p.reject(new IsolaError('E_QMP', `QMP connection closed during ${p.command}`));
    }
    this.emit('close');
  }
}

/**
 * Connect to a unix socket that a just-started process is about to create: retry on ENOENT and
 * ECONNREFUSED until the deadline.
 */
export function connectUnix(path: string, timeoutMs: number): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const sock = net.createConnection(path);
      sock.once('connect', () => {
        sock.removeAllListeners('error');
        resolve(sock);
      });
      sock.once('error', (err: NodeJS.ErrnoException) => {
        sock.destroy();
        if ((err.code === 'ENOENT' || err.code === 'ECONNREFUSED') && Date.now() < deadline) {
          setTimeout(attempt, 5);
        } else {
          reject(
            new IsolaError('E_QMP', `cannot connect to ${path}: ${err.message}`, { cause: err }),
          );
        }
      });
    };
    attempt();
  });
}
