// isola env ls NAME | set NAME K=V... | unset NAME K...   (each change makes a new version)
// isola secret ls NAME | set NAME KEY [VALUE | --from-stdin] | rm NAME KEY
import { readFileSync } from 'node:fs';
import { CLIENT_OPTIONS, clientFrom, table, when } from '../common.js';
import { parseCli, printJson, usageError } from '../output.js';

export async function env(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: CLIENT_OPTIONS,
    allowPositionals: true,
  });
  const [sub, fn, ...rest] = positionals;
  if (!fn || !['ls', 'set', 'unset'].includes(sub ?? ''))
    throw usageError('usage: isola env ls NAME | set NAME K=V... | unset NAME K...');
  const c = clientFrom(values);
  const path = `/v1/functions/${encodeURIComponent(fn)}`;
  const f = (await c.request('GET', path)).data as {
    config: { env: Record<string, string> } | null;
  };
  const cur = { ...(f.config?.env ?? {}) };
  if (sub === 'ls') {
    if (values.json) printJson(cur);
    else for (const [k, v] of Object.entries(cur)) process.stdout.write(`${k}=${v}\n`);
    return 0;
  }
  for (const a of rest) {
    if (sub === 'set') {
      const i = a.indexOf('=');
      if (i <= 0) throw usageError(`env set wants K=V, not "${a}"`);
      cur[a.slice(0, i)] = a.slice(i + 1);
    } else delete cur[a];
  }
  const r = (await c.request('PATCH', path, { json: { env: cur } })).data as {
    version: { version: number };
  };
  if (values.json) printJson(r);
  else process.stdout.write(`${fn} version ${r.version.version} (live) has the new environment\n`);
  return 0;
}

export async function secret(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: { ...CLIENT_OPTIONS, 'from-stdin': { type: 'boolean', default: false } },
    allowPositionals: true,
  });
  const [sub, fn, name, value] = positionals;
  const usage = 'usage: isola secret ls NAME | set NAME KEY [VALUE|--from-stdin] | rm NAME KEY';
  if (!fn) throw usageError(usage);
  const c = clientFrom(values);
  const base = `/v1/functions/${encodeURIComponent(fn)}/secrets`;
  switch (sub) {
    case 'ls': {
      const { secrets } = (await c.request('GET', base)).data as {
        secrets: Array<{ name: string; updatedAt: number }>;
      };
      if (values.json) printJson(secrets);
      else
        process.stdout.write(
          table(
            ['SECRET', 'UPDATED'],
            secrets.map((s) => [s.name, when(s.updatedAt)]),
          ),
        );
      return 0;
    }
    case 'set': {
      if (!name) throw usageError(usage);
      const v = values['from-stdin'] ? readFileSync(0, 'utf8').replace(/\n$/, '') : value;
      if (v === undefined)
        throw usageError('give the value, or --from-stdin (keeps it out of shell history)');
      await c.request('PUT', `${base}/${encodeURIComponent(name)}`, { json: { value: v } });
      if (values.json) printJson({ ok: true });
      else process.stdout.write(`secret ${name} set on ${fn} (new instances get it)\n`);
      return 0;
    }
    case 'rm':
      if (!name) throw usageError(usage);
      await c.request('DELETE', `${base}/${encodeURIComponent(name)}`);
      if (values.json) printJson({ ok: true });
      return 0;
    default:
      throw usageError(usage);
  }
}
