// A virtio-serial port inside the guest, as the agent and the function runtime use it: found by
// name, read in a loop that survives the host side coming and going, written synchronously
// (readPort/portWriter, the agent), or served on the event loop (servePort, the function runtime).

import { closeSync, openSync, read, readFileSync, readdirSync, writeSync } from 'node:fs';
import net from 'node:net';

/** Read buffer for the port; frames larger than this arrive in several reads. */
const READ_CHUNK = 256 * 1024;
/**
 * While no host is connected, a read of the port returns 0 at once (EOF) instead of blocking, so
 * the reader polls with a short, growing delay until a host (re)connects: the agent must outlive
 * its host-side client (host process restarts, reaper, snapshot restore).
 */
const RECONNECT_POLL_MIN_MS = 2;
const RECONNECT_POLL_MAX_MS = 100;
/** servePort: how long a host may be gone with replies waiting for it before they are dropped. */
const HOST_GONE_MS = 2000;

export function findPort(name: string): string {
  const base = '/sys/class/virtio-ports';
  for (const dev of readdirSync(base)) {
    if (readFileSync(`${base}/${dev}/name`, 'utf8').trim() === name) return `/dev/${dev}`;
  }
  throw new Error(`no virtio-serial port named ${name}`);
}

export function openPort(name: string): number {
  return openSync(findPort(name), 'r+');
}

export function readPort(fd: number, onData: (b: Buffer) => void): void {
  let delay = RECONNECT_POLL_MIN_MS;
  const loop = () => {
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    read(fd, buf, 0, buf.length, null, (err, n) => {
      if (err || n === 0) {
        setTimeout(loop, delay);
        delay = Math.min(delay * 2, RECONNECT_POLL_MAX_MS);
        return;
      }
      delay = RECONNECT_POLL_MIN_MS;
      onData(buf.subarray(0, n));
      loop();
    });
  };
  loop();
}

/**
 * Synchronous writes: a virtio-serial write only queues the buffer for the host, and skipping
 * the thread-pool hop per frame saves milliseconds under TCG. With no host connected the write
 * blocks until one connects; nothing useful can happen before that anyway.
 */
export function portWriter(fd: number): (frame: Buffer) => void {
  return (frame) => {
    let off = 0;
    while (off < frame.length) off += writeSync(fd, frame, off, frame.length - off);
  };
}

type PipeHandle = {
  open(fd: number): number;
  readStart(): number;
  onread: (buf: unknown) => unknown;
};
type PipeCtor = new (type: number) => PipeHandle;

interface Binding {
  Pipe: PipeCtor;
  SOCKET: number;
  /** Where libuv puts the byte count (or error) of the read it is reporting. */
  state: Int32Array;
  nread: number;
  eof: number;
}

/**
 * libuv's pipe handle, which polls any file descriptor with epoll. Node's public API refuses a
 * character device (net.Socket wants a socket or a FIFO, tty.ReadStream a terminal), so the
 * handle is taken from the bindings; null where a future Node.js no longer offers them.
 */
function pipeBinding(): Binding | null {
  try {
    const binding = (process as unknown as { binding(n: string): Record<string, unknown> }).binding;
    const pipe = binding('pipe_wrap') as { Pipe: PipeCtor; constants: { SOCKET: number } };
    const stream = binding('stream_wrap') as {
      streamBaseState: Int32Array;
      kReadBytesOrError: number;
    };
    const eof = (binding('uv') as { UV_EOF: number }).UV_EOF;
    if (
      typeof pipe.Pipe !== 'function' ||
      !(stream.streamBaseState instanceof Int32Array) ||
      typeof stream.kReadBytesOrError !== 'number' ||
      typeof eof !== 'number'
    )
      return null;
    return {
      Pipe: pipe.Pipe,
      SOCKET: pipe.constants.SOCKET,
      state: stream.streamBaseState,
      nread: stream.kReadBytesOrError,
      eof,
    };
  } catch {
    return null;
  }
}

/**
 * Serve a port on the event loop, for the hot path of invocations: reads wake the loop straight
 * from epoll (readPort's fs.read costs a thread-pool hand-off per read, a quarter of the runtime's
 * time per invocation under TCG), and frames written in one turn of the loop leave in one write
 * (one virtio notification and one wake-up of the host instead of one each). Falls back to
 * readPort and portWriter where the event-loop handle is unavailable. Returns the writer.
 *
 * The port is never closed while it works: closing it would discard what a host has already
 * sent (the kernel drops a port's unread data on close). A port reports end of stream while no
 * host is connected, which happens for real (the host went away) and for a moment in every
 * snapshot clone: QEMU tells the guest the host is gone when the state is loaded, and back when
 * it connects, sometimes only after the host's first frames arrived. So end of stream never
 * reaches the stream: the handle is told to read again after a short, growing delay, and what
 * is written meanwhile waits in the stream for the host to be back (libuv retries it). A host
 * gone for longer than HOST_GONE_MS with replies still waiting for it is gone for good: the
 * stream is destroyed (dropping them, and what libuv would otherwise retry without pause) and
 * the port opened again. Tests pass `open` (a FIFO of their own) and `signal` (to stop serving).
 */
export function servePort(
  name: string,
  onData: (b: Buffer) => void,
  opts: { open?: () => number; signal?: AbortSignal } = {},
): (frame: Buffer) => void {
  const openFile = opts.open ?? (() => openPort(name));
  const b = pipeBinding();
  if (!b) {
    const fd = openFile();
    readPort(fd, onData);
    return portWriter(fd);
  }
  let sock: net.Socket | null = null;
  let waiting: Buffer[] = [];
  let batch: Buffer[] = [];
  let delay = RECONNECT_POLL_MIN_MS;
  let goneSince: number | null = null;

  const later = (fn: () => void) => {
    setTimeout(fn, delay);
    delay = Math.min(delay * 2, RECONNECT_POLL_MAX_MS);
  };
  const flush = () => {
    const out = batch.length === 1 ? batch[0]! : Buffer.concat(batch);
    batch = [];
    if (sock) sock.write(out);
    else waiting.push(out);
  };
  const open = () => {
    let fd: number;
    let handle: PipeHandle;
    try {
      fd = openFile();
      handle = new b.Pipe(b.SOCKET);
      const err = handle.open(fd);
      if (err) {
        closeSync(fd);
        throw new Error(`cannot poll it (${err})`);
      }
    } catch (err) {
      process.stderr.write(`port ${name}: ${(err as Error).message}\n`);
      later(open);
      return;
    }
    const s = new net.Socket({
      handle,
      readable: true,
      writable: true,
      allowHalfOpen: true,
    } as net.SocketConstructorOpts);
    sock = s;
    const w = waiting;
    waiting = [];
    for (const x of w) s.write(x);
    // net.Socket has set the handle's read callback; an end of stream stops here instead.
    const deliver = handle.onread;
    handle.onread = function (this: unknown, buf: unknown) {
      if (b.state[b.nread] !== b.eof) return deliver.call(this, buf);
      goneSince ??= performance.now();
      // libuv stopped reading at the end of stream; ask again shortly.
      later(() => {
        if (sock !== s) return;
        if (s.writableLength > 0 && performance.now() - goneSince! > HOST_GONE_MS) s.destroy();
        else handle.readStart();
      });
      return undefined;
    };
    s.on('data', (chunk: Buffer) => {
      goneSince = null;
      delay = RECONNECT_POLL_MIN_MS;
      onData(chunk);
    });
    s.on('error', (err) => process.stderr.write(`port ${name}: ${err.message}\n`));
    s.once('close', () => {
      if (sock === s) sock = null;
      if (!opts.signal?.aborted) later(open);
    });
  };
  opts.signal?.addEventListener('abort', () => sock?.destroy());
  open();
  return (frame) => {
    if (batch.length === 0) setImmediate(flush);
    batch.push(frame);
  };
}
