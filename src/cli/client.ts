// The CLI's HTTP client for the isola server. It finds the server and key from --url/--key,
// then ISOLA_URL/ISOLA_API_KEY, then the local defaults (127.0.0.1:8787 and the admin key a
// local server wrote to its data directory). Error replies become IsolaErrors with the
// server's code, so the CLI exits with the same code the API reported.

import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IsolaError, isErrorCode } from '../errors.js';

export const DEFAULT_LISTEN = '127.0.0.1:8787';

export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_DATA_HOME ?? path.join(os.homedir(), '.local/share');
  return path.join(base, 'isola/server');
}

export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(s);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new IsolaError('E_INVALID_ARGUMENT', `--listen wants HOST:PORT, not "${s}"`);
  }
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

export interface ClientOptions {
  url?: string | undefined;
  key?: string | undefined;
  tenant?: string | undefined;
}

export class ApiClient {
  readonly url: string;
  private readonly key: string | undefined;
  private readonly tenant: string | undefined;

  constructor(opts: ClientOptions = {}, env: NodeJS.ProcessEnv = process.env) {
    this.url = (opts.url ?? env.ISOLA_URL ?? `http://${DEFAULT_LISTEN}`).replace(/\/+$/, '');
    let key = opts.key ?? env.ISOLA_API_KEY;
    if (!key) {
      const file = path.join(env.ISOLA_DATA_DIR ?? defaultDataDir(env), 'admin.key');
      if (existsSync(file)) {
        try {
          key = readFileSync(file, 'utf8').trim();
        } catch {
          // not readable by this user: go without
        }
      }
    }
    this.key = key;
    this.tenant = opts.tenant ?? env.ISOLA_TENANT;
  }

  /** One request; JSON in and out unless `raw` is given. Throws IsolaError on error replies. */
  async request(
    method: string,
    route: string,
    opts: { json?: unknown; body?: Buffer; headers?: Record<string, string> } = {},
  ): Promise<{ status: number; headers: Headers; data: unknown }> {
    const res = await this.fetch(method, route, opts);
    const text = await res.text();
    let data: unknown = text;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      // not JSON
    }
    if (!res.ok) throw toError(res.status, data);
    return { status: res.status, headers: res.headers, data };
  }

  async fetch(
    method: string,
    route: string,
    opts: { json?: unknown; body?: Buffer; headers?: Record<string, string> } = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { ...opts.headers };
    if (this.key) headers.authorization = `Bearer ${this.key}`;
    if (this.tenant) headers['x-isola-tenant'] = this.tenant;
    let body: string | Buffer | undefined;
    if (opts.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.json);
    } else if (opts.body) body = opts.body;
    try {
      return await fetch(`${this.url}${route}`, {
        method,
        headers,
        ...(body !== undefined ? { body } : {}),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new IsolaError(
        'E_SERVER_UNREACHABLE',
        `cannot reach the isola server at ${this.url}: ${cause?.code ?? cause?.message ?? (err as Error).message} (start it with \`isola serve\`, or set ISOLA_URL)`,
      );
    }
  }
}

export function toError(status: number, data: unknown): IsolaError {
  const e = (
    data as {
      error?: { code?: string; message?: string; details?: Record<string, unknown> };
    } | null
  )?.error;
  if (e?.code && isErrorCode(e.code)) {
    return new IsolaError(
      e.code,
      e.message ?? `HTTP ${status}`,
      e.details ? { details: e.details } : {},
    );
  }
  return new IsolaError(
    'E_INTERNAL',
    `server answered HTTP ${status}: ${String(typeof data === 'string' ? data : JSON.stringify(data)).slice(0, 500)}`,
  );
}

/** Path segment encoding for names that may carry a qualifier (fn:3). */
export const seg = (s: string) => encodeURIComponent(s).replace(/%3A/gi, ':');
