import { CLIENT_OPTIONS, clientFrom, table, when } from '../common.js';
// isola tenant create NAME [--max-concurrency N] [--max-memory MiB] | ls | get NAME | limits NAME ... | rm NAME
import { parseCli, printJson, usageError } from '../output.js';

const USAGE = `usage: isola tenant create NAME [--max-concurrency N] [--max-memory MiB] [--json]
       isola tenant ls | get NAME | limits NAME [--max-concurrency N] [--max-memory MiB] | rm NAME
`;

interface TenantOut {
  id: string;
  name: string;
  createdAt: number;
  maxConcurrency: number;
  maxMemoryMiB: number;
}

export async function tenant(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: {
      ...CLIENT_OPTIONS,
      'max-concurrency': { type: 'string' },
      'max-memory': { type: 'string' },
    },
    allowPositionals: true,
  });
  const [sub, name] = positionals;
  const c = clientFrom(values);
  const limits = {
    ...(values['max-concurrency'] ? { maxConcurrency: Number(values['max-concurrency']) } : {}),
    ...(values['max-memory'] ? { maxMemoryMiB: Number(values['max-memory']) } : {}),
  };
  const show = (t: TenantOut) => {
    if (values.json) printJson(t);
    else
      process.stdout.write(
        `tenant ${t.name} (${t.id}): max ${t.maxConcurrency} concurrent invocations, ${t.maxMemoryMiB} MiB\n`,
      );
  };
  switch (sub) {
    case 'create':
      if (!name) throw usageError(USAGE);
      show(
        (await c.request('POST', '/v1/tenants', { json: { name, ...limits } })).data as TenantOut,
      );
      return 0;
    case 'get':
      if (!name) throw usageError(USAGE);
      show((await c.request('GET', `/v1/tenants/${encodeURIComponent(name)}`)).data as TenantOut);
      return 0;
    case 'limits':
      if (!name) throw usageError(USAGE);
      show(
        (await c.request('PATCH', `/v1/tenants/${encodeURIComponent(name)}`, { json: limits }))
          .data as TenantOut,
      );
      return 0;
    case 'rm':
      if (!name) throw usageError(USAGE);
      await c.request('DELETE', `/v1/tenants/${encodeURIComponent(name)}`);
      if (values.json) printJson({ ok: true });
      else process.stdout.write(`tenant ${name} deleted\n`);
      return 0;
    case 'ls': {
      const { tenants } = (await c.request('GET', '/v1/tenants')).data as { tenants: TenantOut[] };
      if (values.json) printJson(tenants);
      else
        process.stdout.write(
          table(
            ['NAME', 'ID', 'MAX CONCURRENCY', 'MAX MEMORY', 'CREATED'],
            tenants.map((t) => [
              t.name,
              t.id,
              t.maxConcurrency,
              `${t.maxMemoryMiB} MiB`,
              when(t.createdAt),
            ]),
          ),
        );
      return 0;
    }
    default:
      process.stderr.write(USAGE);
      return 2;
  }
}
