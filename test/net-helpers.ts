// Hosts for network tests, each in a network namespace the test makes itself on this machine
// (no traffic leaves it): a veth pair routes the namespace's address from the host, and a tiny
// TCP server in the namespace answers "hello from NAME". Stand-ins for "the internet" (a
// documentation address), the cloud metadata address, a private database network.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';

export interface FakeHost {
  name: string;
  addr: string;
  port: number;
  close(): Promise<void>;
}

function ip(args: string[], ignoreErrors = false): void {
  try {
    execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    if (!ignoreErrors) throw err;
  }
}

/**
 * A host at `addr` (prefix `prefix`) behind `gw` on this machine, serving TCP on `port`. Names
 * are short (interface names have 15 bytes) and never start with `isv` (sandbox uplinks).
 */
export async function fakeHost(
  name: string,
  opts: { addr: string; gw: string; prefix: number; port: number; holdPort?: number },
): Promise<FakeHost> {
  const ns = `isola-t-${name}`;
  const hostIf = `t-${name}-h`;
  ip(['netns', 'del', ns], true);
  ip(['link', 'del', hostIf], true);
  ip(['netns', 'add', ns]);
  ip(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
  ip(['addr', 'add', `${opts.gw}/${opts.prefix}`, 'dev', hostIf]);
  ip(['link', 'set', hostIf, 'up']);
  ip(['-n', ns, 'addr', 'add', `${opts.addr}/${opts.prefix}`, 'dev', 'eth0']);
  ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
  ip(['-n', ns, 'link', 'set', 'lo', 'up']);
  ip(['-n', ns, 'route', 'add', 'default', 'via', opts.gw]);
  const server: ChildProcess = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      process.execPath,
      '-e',
      `const net = require('net');` +
        `net.createServer((s) => { s.on('error', () => {}); s.end('hello from ${name}\\n'); })` +
        `.listen(${opts.port}, '${opts.addr}', () => console.log('listening'));` +
        // A port that keeps every connection open (for connection floods).
        (opts.holdPort
          ? `net.createServer((s) => s.on('error', () => {})).listen({ port: ${opts.holdPort}, host: '${opts.addr}', backlog: 4096 });`
          : ''),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve, reject) => {
    server.stdout!.once('data', () => resolve());
    server.once('exit', (code) => reject(new Error(`fake host ${name} exited with ${code}`)));
  });
  return {
    name,
    addr: opts.addr,
    port: opts.port,
    async close() {
      const gone = new Promise((r) => server.once('exit', r));
      server.kill('SIGKILL');
      await gone;
      ip(['netns', 'del', ns], true);
      ip(['link', 'del', hostIf], true);
    },
  };
}

export interface Target {
  host: string;
  port: number;
}

export interface Reach {
  target: string;
  ok: boolean;
  /** The first line the server sent, when connected. */
  data?: string;
  /** The error code (ECONNREFUSED, ETIMEDOUT, ...) when not. */
  code?: string;
  ms: number;
}

/**
 * Node.js source that tries every target at once (TCP connect, read the greeting) and prints
 * one JSON array of Reach; run in a guest with `node -e SOURCE JSON_TARGETS`.
 */
export const PROBE_SOURCE = `
const net = require('net');
const targets = JSON.parse(process.argv[1]);
Promise.all(targets.map((t) => new Promise((resolve) => {
  const t0 = Date.now();
  const s = net.connect(t.port, t.host);
  let data = '';
  const done = (r) => { s.destroy(); resolve({ target: t.host + ':' + t.port, ms: Date.now() - t0, ...r }); };
  s.setTimeout(3000, () => done({ ok: false, code: 'ETIMEDOUT' }));
  s.on('data', (d) => { data += d; });
  s.on('end', () => done({ ok: true, data: data.trim() }));
  s.on('error', (e) => done({ ok: false, code: e.code }));
}))).then((r) => console.log(JSON.stringify(r)));
`;
