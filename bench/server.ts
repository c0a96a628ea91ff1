// A real `isola serve` for the benchmarks: a fresh data dir, a tenant `bench` with room for
// every request, its key, and helpers to deploy the benchmark function and stop it all.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../src/util/ports.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface BenchServer {
  url: string;
  dir: string;
  proc: ChildProcess;
  /** A key of the tenant `bench`. */
  key: string;
  /** The admin key (for /metrics). */
  admin: string;
}

export async function startServer(
  tag: string,
  env: Record<string, string> = {},
): Promise<BenchServer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), `isola-bench-${tag}-`));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = spawn(
    process.execPath,
    [
      path.join(ROOT, 'dist/src/cli/main.js'),
      'serve',
      '--listen',
      `127.0.0.1:${port}`,
      '--data-dir',
      path.join(dir, 'data'),
    ],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...env } },
  );
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/v1/health`)).ok) break;
    } catch {
      if (i > 300) throw new Error('server did not start');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const admin = readFileSync(path.join(dir, 'data/admin.key'), 'utf8').trim();
  const post = async (route: string, body: unknown) => {
    const r = await fetch(`${url}${route}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (!r.ok) throw new Error(`${route}: ${r.status} ${await r.text()}`);
    return r.json();
  };
  await post('/v1/tenants', { name: 'bench', maxConcurrency: 1000 });
  const { key } = (await post('/v1/keys', { tenant: 'bench' })) as { key: string };
  return { url, dir, proc, key, admin };
}

/** SIGTERM (the server drains and stops its instances), then remove its data dir. */
export async function stopServer(s: BenchServer): Promise<void> {
  if (s.proc.exitCode === null && s.proc.signalCode === null) {
    await new Promise<void>((r) => {
      s.proc.once('exit', () => r());
      s.proc.kill('SIGTERM');
    });
  }
  rmSync(s.dir, { recursive: true, force: true });
}

/**
 * Deploy bench/functions/<fn> (noop unless told) as `name` with the given settings
 * (x-isola-config).
 */
export async function deployNoop(
  s: BenchServer,
  name: string,
  config: Record<string, unknown>,
  fn = 'noop',
): Promise<void> {
  const tar = spawnSync('tar', ['-C', path.join(ROOT, 'bench/functions', fn), '-c', '.']).stdout;
  const r = await fetch(`${s.url}/v1/functions/${name}/versions`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${s.key}`,
      'content-type': 'application/x-tar',
      'x-isola-config': JSON.stringify(config),
    },
    body: tar,
  });
  if (!r.ok) throw new Error(`deploy ${name}: ${await r.text()}`);
}
