// Entry point of the guest agent. Inside the VM it finds the virtio-serial port named
// `isola.agent` and serves the protocol on it; with `--stdio` it serves on stdin/stdout (used by
// the host-side fuzz tests, which run this same program as a child process).

import { execFileSync, spawn } from 'node:child_process';
import {
  existsSync,
  openSync,
  read,
  readFileSync,
  readdirSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { AGENT_PORT_NAME } from '../protocol/messages.js';
import { Agent } from './agent.js';

function findPort(): string {
  const base = '/sys/class/virtio-ports';
  for (const dev of readdirSync(base)) {
    const name = readFileSync(`${base}/${dev}/name`, 'utf8').trim();
    if (name === AGENT_PORT_NAME) return `/dev/${dev}`;
  }
  throw new Error(`no virtio-serial port named ${AGENT_PORT_NAME}`);
}

/** Guest image script run once after ready (memory give-back; see guest-assets/post-boot.sh). */
const POST_BOOT = '/opt/isola/post-boot';

/** Read buffer for the port; frames larger than this arrive in several reads. */
const READ_CHUNK = 256 * 1024;
/**
 * While no host is connected, a read of the port returns 0 at once (EOF) instead of blocking, so
 * the reader polls with a short, growing delay until a host (re)connects: the agent must outlive
 * its host-side client (host process restarts, reaper, snapshot restore).
 */
const RECONNECT_POLL_MIN_MS = 2;
const RECONNECT_POLL_MAX_MS = 100;

function readPort(fd: number, onData: (b: Buffer) => void): void {
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

function main(): void {
  const stdio = process.argv.includes('--stdio');
  let write: (frame: Buffer) => void;
  let fd = -1;
  if (stdio) {
    write = (frame) => process.stdout.write(frame);
  } else {
    // A function that exhausts the guest's memory must lose its own process, never the agent.
    try {
      writeFileSync('/proc/self/oom_score_adj', '-1000');
    } catch {
      // not fatal: an older kernel or a read-only /proc
    }
    fd = openSync(findPort(), 'r+');
    const port = fd;
    // Synchronous writes: a virtio-serial write only queues the buffer for the host, and skipping
    // the thread-pool hop per frame saves milliseconds under TCG. With no host connected the
    // write blocks until one connects; nothing useful can happen before that anyway.
    write = (frame) => {
      let off = 0;
      while (off < frame.length) off += writeSync(port, frame, off, frame.length - off);
    };
  }
  const agent = new Agent({
    write,
    // Inside the VM the agent has -1000; what it starts gets the kernel's default back.
    ...(stdio ? {} : { childOomScoreAdj: 0 }),
    onShutdown: () => {
      agent.killAll();
      if (stdio) process.exit(0);
      // Flush the page cache of the writable overlay, then power off; QEMU exits with the guest.
      try {
        execFileSync('/bin/busybox', ['sync']);
      } finally {
        execFileSync('/bin/busybox', ['poweroff', '-f']);
      }
    },
  });
  if (stdio) {
    process.stdin.on('data', (chunk) => agent.onData(chunk as Buffer));
    process.stdin.on('end', () => {
      agent.killAll();
      process.exit(0);
    });
  } else {
    readPort(fd, (chunk) => agent.onData(chunk));
  }
  agent.sendReady();
  if (!stdio && existsSync(POST_BOOT)) {
    setImmediate(() => spawn(POST_BOOT, [], { stdio: 'ignore' }).on('error', () => {}));
  }
}

main();
