// A TCP connection to a port on the guest's loopback, relayed over the agent channel (the
// `connect`/`send`/`close` requests and `data`/`end`/`closed` events), exposed as a Node Duplex
// so that node:http can speak HTTP over it (as a socket from an http.Agent's createConnection).
// It exists at once: writes wait until the guest has opened the connection, and a refused
// connect destroys the stream with E_GUEST_CONNECT.

import { Duplex } from 'node:stream';
import { toIsolaError } from '../errors.js';
import { FRAME_BODY_CHUNK } from '../protocol/frame.js';

/** What the connection needs from the agent client. */
export interface ConnTransport {
  request(
    req: Record<string, unknown> & { op: string },
    body?: Buffer,
  ): Promise<{ result: unknown; body: Buffer }>;
  registerConn(connId: number, conn: GuestConnection): void;
  unregisterConn(connId: number): void;
}

export class GuestConnection extends Duplex {
  private connId: number | null = null;
  private readonly opened: Promise<number>;
  private remoteClosed = false;

  constructor(
    private readonly transport: ConnTransport,
    port: number,
  ) {
    super({ allowHalfOpen: true });
    this.opened = transport.request({ op: 'connect', port }).then(({ result }) => {
      const id = (result as { connId: number }).connId;
      this.connId = id;
      transport.registerConn(id, this);
      if (this.destroyed) void this.closeRemote();
      else this.emit('connect');
      return id;
    });
    this.opened.catch((err: unknown) => this.destroy(toIsolaError(err)));
  }

  /** Resolves once the guest has the connection open. */
  ready(): Promise<void> {
    return this.opened.then(() => undefined);
  }

  // Called by the agent client for connection events.
  onData(body: Buffer): void {
    if (!this.destroyed) this.push(body);
  }
  onEnd(): void {
    if (!this.destroyed) this.push(null);
  }
  onClosed(error?: string): void {
    this.remoteClosed = true;
    if (this.connId !== null) this.transport.unregisterConn(this.connId);
    if (this.destroyed) return;
    if (error) this.destroy(new Error(error));
    else {
      this.push(null);
      // The peer is gone: pending or later writes have nowhere to go.
      if (!this.writableFinished) this.destroy();
    }
  }

  override _read(): void {
    // Data is pushed as the guest sends it (no flow control on this direction yet).
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.send(chunk, false).then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.send(Buffer.alloc(0), true).then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.connId !== null && !this.remoteClosed) void this.closeRemote();
    cb(err);
  }

  // node:http calls these on sockets; a relayed stream has nothing to tune.
  setKeepAlive(): this {
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  setTimeout(_ms: number, cb?: () => void): this {
    if (cb) this.once('timeout', cb);
    return this;
  }
  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }

  private async send(data: Buffer, eof: boolean): Promise<void> {
    const connId = await this.opened;
    if (data.length === 0 && !eof) return; // an empty write carries nothing to the guest
    if (data.length === 0) {
      await this.transport.request({ op: 'send', connId, eof });
      return;
    }
    for (let off = 0; off < data.length; off += FRAME_BODY_CHUNK) {
      const last = off + FRAME_BODY_CHUNK >= data.length;
      await this.transport.request(
        { op: 'send', connId, eof: eof && last },
        data.subarray(off, off + FRAME_BODY_CHUNK),
      );
    }
  }

  private async closeRemote(): Promise<void> {
    const id = this.connId;
    if (id === null) return;
    this.transport.unregisterConn(id);
    await this.transport.request({ op: 'close', connId: id }).catch(() => undefined);
  }
}
