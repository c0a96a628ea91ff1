// The platform tests' harness: a real `isola serve` child process on a free loopback port with
// its own data directory, an HTTP helper, and response validation against the committed
// OpenAPI document (the contract clients rely on).

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Ajv from 'ajv';
import { runDir } from '../src/assets/paths.js';
import { ISOLA_BIN, ROOT } from './helpers.js';
import { freePort } from './registry-helpers.js';

export interface TestServer {
  url: string;
  dataDir: string;
  adminKey: string;
  proc: ChildProcess;
  output(): string;
  /** Stop with a signal and wait for the exit; returns the exit code (or signal). */
  stop(signal?: NodeJS.Signals): Promise<number | string | null>;
}

/** Time a fresh server gets to open its store and listen. */
const SERVER_START_MS = 30_000;

export function tempDir(tag: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `isola-test-${tag}-`));
}

export async function startServer(opts: {
  dataDir: string;
  env?: Record<string, string>;
  args?: string[];
  /** Address to listen on (default loopback); the tests always call it on loopback. */
  host?: string;
}): Promise<TestServer> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = spawn(
    process.execPath,
    [
      path.join(ROOT, 'dist/src/cli/main.js'),
      'serve',
      '--listen',
      `${opts.host ?? '127.0.0.1'}:${port}`,
      '--data-dir',
      opts.dataDir,
      ...(opts.args ?? []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } },
  );
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  proc.stderr!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | string | null>((r) =>
    proc.once('exit', (code, sig) => r(code ?? sig)),
  );
  const deadline = Date.now() + SERVER_START_MS;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`server exited at start: ${out}`);
    try {
      const r = await fetch(`${url}/v1/health`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`server did not start: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const adminKey = readFileSync(path.join(opts.dataDir, 'admin.key'), 'utf8').trim();
  return {
    url,
    dataDir: opts.dataDir,
    adminKey,
    proc,
    output: () => out,
    stop: async (signal = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const code = await exited;
      // Kept for post-mortems of failed runs, in the suite's run dir (emptied by each run).
      const logs = path.join(runDir(), 'server-logs');
      mkdirSync(logs, { recursive: true });
      writeFileSync(path.join(logs, `${port}.log`), out);
      return code;
    },
  };
}

export interface ApiReply {
  status: number;
  headers: Headers;
  body: unknown;
  text: string;
}

export async function api(
  base: string,
  method: string,
  route: string,
  opts: {
    key?: string | undefined;
    json?: unknown;
    body?: Buffer | string;
    headers?: Record<string, string>;
  } = {},
): Promise<ApiReply> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.key) headers.authorization = `Bearer ${opts.key}`;
  let body: string | Buffer | undefined = opts.body;
  if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  const r = await fetch(`${base}${route}`, {
    method,
    headers,
    ...(body !== undefined ? { body } : {}),
  });
  const text = await r.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: r.status, headers: r.headers, body: parsed, text };
}

/** Run the CLI against a server; returns exit code and output. */
export function cli(
  args: string[],
  env: Record<string, string>,
  input?: string,
): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(ISOLA_BIN, args, {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    input,
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

// --- OpenAPI ---------------------------------------------------------------------------------

export type OpenApiDoc = {
  paths: Record<
    string,
    Record<
      string,
      {
        responses: Record<
          string,
          { $ref?: string; content?: { 'application/json'?: { schema: unknown } } }
        >;
        'x-isola-access': string;
      }
    >
  >;
  components: {
    schemas: Record<string, unknown>;
    responses: Record<string, { content: { 'application/json': { schema: unknown } } }>;
  };
};

export function loadOpenApi(): OpenApiDoc {
  return JSON.parse(
    readFileSync(path.join(ROOT, 'src/gateway/openapi.json'), 'utf8'),
  ) as OpenApiDoc;
}

const ajv = new Ajv.default({ strict: false, allErrors: true });

/**
 * Check a reply against the document: the status must be declared for the operation and the
 * body must match its schema. Throws with the validation errors.
 */
export function checkContract(
  doc: OpenApiDoc,
  method: string,
  pathTemplate: string,
  reply: ApiReply,
): void {
  const op = doc.paths[pathTemplate]?.[method.toLowerCase()];
  if (!op) throw new Error(`${method} ${pathTemplate} is not in the OpenAPI document`);
  const resp = op.responses[String(reply.status)];
  if (!resp) throw new Error(`${method} ${pathTemplate}: status ${reply.status} is not declared`);
  let schema: unknown = resp.content?.['application/json']?.schema;
  if (resp.$ref)
    schema =
      doc.components.responses[resp.$ref.split('/').pop()!]!.content['application/json'].schema;
  if (!schema) return;
  const resolved = JSON.parse(
    JSON.stringify(schema).replace(
      /\{"\$ref":"#\/components\/schemas\/Error"\}/g,
      JSON.stringify(doc.components.schemas.Error),
    ),
  );
  const validate = ajv.compile(resolved as object);
  if (!validate(reply.body)) {
    throw new Error(
      `${method} ${pathTemplate} ${reply.status}: body does not match the contract: ${ajv.errorsText(validate.errors)}\n${reply.text.slice(0, 500)}`,
    );
  }
}

export function cleanup(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Wait until the function's latest version has its start snapshot (built in the background
 * after a deploy); returns the final state (ready, failed, ...) or 'timeout'.
 */
export async function snapshotReady(
  call: (method: string, route: string, opts?: Parameters<typeof api>[3]) => Promise<ApiReply>,
  key: string,
  fn: string,
  timeoutMs = 120_000,
  extraHeaders: Record<string, string> = {},
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await call('GET', `/v1/functions/${fn}`, { key, headers: extraHeaders });
    const state = (r.body as { snapshot?: string }).snapshot ?? `HTTP ${r.status}`;
    if (state !== 'building' && state !== 'none') return state;
    if (Date.now() > deadline) return 'timeout';
    await new Promise((res) => setTimeout(res, 250));
  }
}
