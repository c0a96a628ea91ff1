import { CLIENT_OPTIONS, clientFrom, table, when } from '../common.js';
// isola key create [--tenant NAME] [--description TEXT] | ls [--tenant NAME] | revoke ID
import { parseCli, printJson, usageError } from '../output.js';

const USAGE = `usage: isola key create [--tenant NAME] [--description TEXT] [--json]   (the key is shown once)
       isola key ls [--tenant NAME] | revoke ID
`;

interface KeyOut {
  id: string;
  role: string;
  tenant: string | null;
  description: string;
  createdAt: number;
  revokedAt: number | null;
  key?: string;
}

export async function key(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: { ...CLIENT_OPTIONS, description: { type: 'string' } },
    allowPositionals: true,
  });
  const [sub, id] = positionals;
  // --tenant here names the key's tenant in the body, not the acting tenant.
  const c = clientFrom({ url: values.url, key: values.key });
  switch (sub) {
    case 'create': {
      const body = {
        ...(values.tenant ? { tenant: values.tenant } : {}),
        ...(values.description ? { description: values.description } : {}),
      };
      const k = (await c.request('POST', '/v1/keys', { json: body })).data as KeyOut;
      if (values.json) printJson(k);
      else
        process.stdout.write(
          `${k.key}\n# ${k.role} key ${k.id}${k.tenant ? ` for tenant ${k.tenant}` : ''}: shown once, keep it safe\n`,
        );
      return 0;
    }
    case 'ls': {
      const q = values.tenant ? `?tenant=${encodeURIComponent(values.tenant)}` : '';
      const { keys } = (await c.request('GET', `/v1/keys${q}`)).data as { keys: KeyOut[] };
      if (values.json) printJson(keys);
      else
        process.stdout.write(
          table(
            ['ID', 'ROLE', 'TENANT', 'CREATED', 'REVOKED', 'DESCRIPTION'],
            keys.map((k) => [
              k.id,
              k.role,
              k.tenant ?? '-',
              when(k.createdAt),
              when(k.revokedAt),
              k.description,
            ]),
          ),
        );
      return 0;
    }
    case 'revoke':
      if (!id) throw usageError(USAGE);
      await c.request('DELETE', `/v1/keys/${encodeURIComponent(id)}?self=1`);
      if (values.json) printJson({ ok: true });
      else process.stdout.write(`key ${id} revoked\n`);
      return 0;
    default:
      process.stderr.write(USAGE);
      return 2;
  }
}
