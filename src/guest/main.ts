// Entry point of the guest agent. Inside the VM it finds the virtio-serial port named
// `isola.agent` and serves the protocol on it; with `--stdio` it serves on stdin/stdout (used by
// the host-side fuzz tests, which run this same program as a child process).

import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream, openSync, readFileSync, readdirSync } from 'node:fs';
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

function main(): void {
  const stdio = process.argv.includes('--stdio');
  let input: NodeJS.ReadableStream;
  let output: NodeJS.WritableStream;
  if (stdio) {
    input = process.stdin;
    output = process.stdout;
  } else {
    const fd = openSync(findPort(), 'r+');
    input = createReadStream('', { fd, autoClose: false, highWaterMark: 256 * 1024 });
    output = createWriteStream('', { fd, autoClose: false });
  }
  const agent = new Agent({
    write: (frame) => output.write(frame),
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
  input.on('data', (chunk) => agent.onData(chunk as Buffer));
  input.on('end', () => {
    if (stdio) {
      agent.killAll();
      process.exit(0);
    }
  });
  agent.sendReady();
}

main();
