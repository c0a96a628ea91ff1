// Host side of the control port (CONTROL_PORT_NAME): one command per line, "ID CMD ARGS...",
// answered "ID STATUS" by guestctl in the guest. Answers with another ID are skipped: after a
// restore the port may still hold the answer the snapshot's source received last.

import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { IsolaError } from '../errors.js';

export class ControlChannel {
  private buf = '';
  private readonly waiting = new Map<string, (status: number) => void>();
  private closed = false;

  constructor(private readonly stream: Duplex) {
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => {
      this.buf += d;
      let nl = this.buf.indexOf('\n');
      while (nl >= 0) {
        const [id, status] = this.buf.slice(0, nl).trim().split(' ');
        this.buf = this.buf.slice(nl + 1);
        const w = id ? this.waiting.get(id) : undefined;
        if (w) {
          this.waiting.delete(id!);
          w(Number(status));
        }
        nl = this.buf.indexOf('\n');
      }
      if (this.buf.length > 64 * 1024) this.buf = '';
    });
    stream.on('error', () => undefined);
    stream.on('close', () => {
      this.closed = true;
      for (const w of this.waiting.values()) w(-1);
      this.waiting.clear();
    });
  }

  /** Run a guestctl command; resolves when it answered 0, else E_RESTORE with its status. */
  call(args: string[], timeoutMs: number): Promise<void> {
    if (this.closed) return Promise.reject(new IsolaError('E_RESTORE', 'control port closed'));
    if (args.some((a) => /[\s]/.test(a) || a === '')) {
      return Promise.reject(new IsolaError('E_INTERNAL', 'control arguments must be words'));
    }
    const id = randomBytes(8).toString('hex');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(
          new IsolaError('E_RESTORE', `guest did not answer ${args[0]} within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      this.waiting.set(id, (status) => {
        clearTimeout(timer);
        if (status === 0) resolve();
        else reject(new IsolaError('E_RESTORE', `guest ${args[0]} failed (status ${status})`));
      });
      this.stream.write(`${id} ${args.join(' ')}\n`);
    });
  }

  close(): void {
    this.stream.destroy();
  }
}
