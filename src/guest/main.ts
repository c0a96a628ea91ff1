// Entry point of the guest agent. Inside the VM it finds the virtio-serial port named
// `isola.agent` and serves the protocol on it; with `--stdio` it serves on stdin/stdout (used by
// the host-side fuzz tests, which run this same program as a child process).

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { AGENT_PORT_NAME, CONTROL_PORT_NAME } from '../protocol/messages.js';
import { Agent } from './agent.js';
import { findPort, openPort, portWriter, readPort } from './port.js';

/** Guest image script run once after ready (memory give-back; see guest-assets/post-boot.sh). */
const POST_BOOT = '/opt/isola/post-boot';
/** Serves the control port (clock, hostname, entropy after a restore): guest-assets/guestctl.c. */
const GUESTCTL = '/opt/isola/guestctl';
/** A guestctl that died is started again after this. */
const GUESTCTL_RESTART_MS = 1000;

/** Keep `guestctl serve` on the control port for the guest's life (started before any snapshot). */
function serveControlPort(): void {
  let port: string;
  try {
    port = findPort(CONTROL_PORT_NAME);
  } catch {
    return; // an older host without the port
  }
  const start = () => {
    const child = spawn(GUESTCTL, ['serve', port], { stdio: ['ignore', 'ignore', 'inherit'] });
    child.on('error', () => undefined);
    child.on('exit', () => setTimeout(start, GUESTCTL_RESTART_MS).unref());
  };
  start();
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
    fd = openPort(AGENT_PORT_NAME);
    write = portWriter(fd);
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
    serveControlPort();
  }
  agent.sendReady();
  if (!stdio && existsSync(POST_BOOT)) {
    setImmediate(() => spawn(POST_BOOT, [], { stdio: 'ignore' }).on('error', () => {}));
  }
}

main();
