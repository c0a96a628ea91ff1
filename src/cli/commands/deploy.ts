// isola deploy NAME PATH_OR_IMAGE [--memory MiB] [--timeout S] [--vcpus N] [--concurrency N]
//              [--min N] [--max N] [--idle-timeout S] [--env K=V]... [--public] [--no-promote]
//              [--egress public|allowlist|none] [--allow CIDR[:PORT]]...
//              [--description TEXT] [--json]
// PATH: a directory (packed as a tar), or a .zip / .tar / .tar.gz file, of a Node.js bundle.
// Anything else is an OCI image reference (the server's image store, pulled when missing),
// whose image serves HTTP on port 8080. Every deploy makes a new immutable version and moves
// the `live` alias to it (unless --no-promote).

import { existsSync, readFileSync, statSync } from 'node:fs';
import { packDirectory } from '../../platform/bundle/bundle.js';
import { CLIENT_OPTIONS, clientFrom } from '../common.js';
import { parseCli, printJson, usageError } from '../output.js';
import { humanBytes } from './image.js';

const USAGE = `usage: isola deploy NAME PATH_OR_IMAGE [--memory MiB] [--timeout S] [--vcpus N] [--concurrency N]
                    [--min N] [--max N] [--idle-timeout S] [--env K=V]... [--public]
                    [--egress public|allowlist|none] [--allow CIDR[:PORT]]... [--no-promote] [--json]
  --egress   where instances may connect: the public internet only (default), only --allow
             entries, or nowhere; --allow adds exceptions (a database on a private address)
`;

export const CONFIG_OPTIONS = {
  memory: { type: 'string' },
  timeout: { type: 'string' },
  vcpus: { type: 'string' },
  concurrency: { type: 'string' },
  min: { type: 'string' },
  max: { type: 'string' },
  'idle-timeout': { type: 'string' },
  env: { type: 'string', multiple: true },
  public: { type: 'boolean' },
  egress: { type: 'string' },
  allow: { type: 'string', multiple: true },
} as const;

type ConfigValues = {
  [K in keyof typeof CONFIG_OPTIONS]?: (typeof CONFIG_OPTIONS)[K] extends { multiple: true }
    ? string[]
    : string | boolean;
};

function num(v: unknown, flag: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) throw usageError(`--${flag} wants a number, not "${String(v)}"`);
  return n;
}

/** Flags to a config patch (only what was given). */
export function configPatch(values: ConfigValues): Record<string, unknown> {
  const p: Record<string, unknown> = {};
  const map: Array<[keyof ConfigValues, string]> = [
    ['memory', 'memoryMiB'],
    ['timeout', 'timeoutS'],
    ['vcpus', 'vcpus'],
    ['concurrency', 'concurrency'],
    ['min', 'minInstances'],
    ['max', 'maxInstances'],
    ['idle-timeout', 'idleTimeoutS'],
  ];
  for (const [flag, field] of map)
    if (values[flag] !== undefined) p[field] = num(values[flag], flag);
  if (values.public !== undefined) p.public = values.public;
  if (values.env) {
    const env: Record<string, string> = {};
    for (const kv of values.env as string[]) {
      const i = kv.indexOf('=');
      if (i <= 0) throw usageError(`--env wants K=V, not "${kv}"`);
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    p.env = env;
  }
  if (values.egress !== undefined || values.allow !== undefined) {
    const mode = values.egress ?? 'public';
    if (mode !== 'public' && mode !== 'allowlist' && mode !== 'none') {
      throw usageError(`--egress is public, allowlist or none, not "${String(mode)}"`);
    }
    p.egress = { mode, allow: (values.allow as string[] | undefined) ?? [] };
  }
  return p;
}

interface DeployOut {
  function: string;
  version: {
    version: number;
    runtime: string;
    source: { kind: string; digest?: string; image?: string; manifestDigest?: string };
  };
}

export async function deploy(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: {
      ...CLIENT_OPTIONS,
      ...CONFIG_OPTIONS,
      'no-promote': { type: 'boolean', default: false },
      description: { type: 'string' },
    },
    allowPositionals: true,
  });
  const [name, source] = positionals;
  if (!name || !source || positionals.length > 2) throw usageError(USAGE);
  const c = clientFrom(values);
  const patch = configPatch(values);
  const q = new URLSearchParams();
  if (values['no-promote']) q.set('promote', '');
  if (values.description) q.set('description', values.description);
  const route = `/v1/functions/${encodeURIComponent(name)}/versions${q.size ? `?${q}` : ''}`;
  const tty = process.stderr.isTTY && !values.json;
  let r: DeployOut;
  if (existsSync(source)) {
    const body = statSync(source).isDirectory() ? packDirectory(source) : readFileSync(source);
    if (tty) process.stderr.write(`uploading bundle (${humanBytes(body.length)})...\n`);
    r = (
      await c.request('POST', route, {
        body,
        headers: {
          'content-type': 'application/octet-stream',
          'x-isola-config': JSON.stringify(patch),
        },
      })
    ).data as DeployOut;
  } else {
    if (tty) process.stderr.write(`deploying image ${source} (the server pulls it if needed)...\n`);
    r = (
      await c.request('POST', route, {
        json: {
          image: source,
          ...patch,
          ...(values.description ? { description: values.description } : {}),
        },
      })
    ).data as DeployOut;
  }
  if (values.json) printJson(r);
  else {
    const s = r.version.source;
    process.stdout.write(
      `deployed ${r.function} version ${r.version.version} (${r.version.runtime}, ${s.kind === 'bundle' ? s.digest?.slice(0, 19) : `${s.image}@${s.manifestDigest?.slice(0, 19)}`})${values['no-promote'] ? '' : '; live -> ' + r.version.version}\n`,
    );
  }
  return 0;
}
