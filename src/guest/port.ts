// A virtio-serial port inside the guest, as the agent and the function runtime use it: found by
// name, read in a loop that survives the host side coming and going, written synchronously.

import { openSync, read, readFileSync, readdirSync, writeSync } from 'node:fs';

/** Read buffer for the port; frames larger than this arrive in several reads. */
const READ_CHUNK = 256 * 1024;
/**
 * While no host is connected, a read of the port returns 0 at once (EOF) instead of blocking, so
 * the reader polls with a short, growing delay until a host (re)connects: the agent must outlive
 * its host-side client (host process restarts, reaper, snapshot restore).
 */
const RECONNECT_POLL_MIN_MS = 2;
const RECONNECT_POLL_MAX_MS = 100;

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
