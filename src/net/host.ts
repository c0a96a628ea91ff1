// Node-level network set-up, once per process (idempotent, safe with several isola processes on
// one node): IPv4 forwarding on, and the host's own table `inet isola-host`:
//   - nothing that arrives from a sandbox uplink (`isv*`) is delivered to the host itself: not
//     its loopback services, not the control plane, not any of its addresses;
//   - nothing is forwarded from one sandbox uplink to another;
//   - what leaves the node from a sandbox uplink is masqueraded behind the node's address.
// These rules hold whatever a sandbox's own egress policy says (policy.ts is enforced inside the
// sandbox's namespace); they name no sandbox, so there is nothing per sandbox to clean up here.

import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { IsolaError } from '../errors.js';
import { HOST_IF_PREFIX } from './pool.js';

export const HOST_TABLE = 'isola-host';

export function hostRuleset(): string {
  const sv = JSON.stringify(`${HOST_IF_PREFIX}*`);
  return [
    // Declaring then deleting makes the load a replace, atomically, whether or not it existed.
    `table inet ${HOST_TABLE} {}`,
    `delete table inet ${HOST_TABLE}`,
    `table inet ${HOST_TABLE} {`,
    '  chain input {',
    '    type filter hook input priority filter - 10; policy accept;',
    `    iifname ${sv} counter drop`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter - 10; policy accept;',
    `    iifname ${sv} oifname ${sv} counter drop`,
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    iifname ${sv} oifname != ${sv} masquerade`,
    '  }',
    '}',
    '',
  ].join('\n');
}

let ready: Promise<void> | null = null;

/** Forwarding and the host table; once per process, retried after a failure. */
export function ensureHostNetwork(): Promise<void> {
  ready ??= setUp().catch((err: unknown) => {
    ready = null;
    throw err;
  });
  return ready;
}

async function setUp(): Promise<void> {
  try {
    if (readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() !== '1') {
      writeFileSync('/proc/sys/net/ipv4/ip_forward', '1\n');
    }
  } catch (err) {
    throw new IsolaError('E_NETWORK', `cannot turn on IPv4 forwarding: ${String(err)}`);
  }
  await nft(hostRuleset());
}

/** Load a ruleset with `nft -f -` (in the namespace of `pid` when given). */
export async function nft(ruleset: string, pid?: number): Promise<void> {
  const [cmd, args] =
    pid === undefined
      ? ['nft', ['-f', '-']]
      : ['nsenter', [`--net=/proc/${pid}/ns/net`, '--', 'nft', '-f', '-']];
  await feed(cmd, args as string[], ruleset, 'nft');
}

/** Run a command with `input` on its stdin; E_NETWORK with its stderr when it fails. */
export function feed(cmd: string, args: string[], input: string, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: 10_000 }, (err, _out, stderr) => {
      if (err) {
        reject(
          new IsolaError('E_NETWORK', `${what} failed: ${String(stderr).trim() || err.message}`),
        );
      } else resolve();
    });
    // A command that exits before reading all of its input (a failing `sh -s` script, or one
    // that never reads stdin) makes this write fail with EPIPE: its exit status and stderr,
    // reported above, say what happened; an unhandled 'error' here would take the process down.
    child.stdin?.on('error', () => {});
    child.stdin?.end(input);
  });
}

/** The node's own IPv4 addresses (every interface), denied to guests in every mode. */
export function nodeAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4') out.push(a.address);
  }
  return out;
}
