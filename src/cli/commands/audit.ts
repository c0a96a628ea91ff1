import { CLIENT_OPTIONS, clientFrom, table, when } from '../common.js';
// isola audit [--tenant NAME] [--action A] [--key-id ID] [--since 24h] [--until T] [--limit N]
//             [--before SEQ] [--json]
// The audit log of state-changing calls (admin key), newest first. Secrets appear by name,
// keys by id. Example: isola audit --tenant acme --action secret.put --since 7d
import { parseCli, printJson, usageError } from '../output.js';

interface Entry {
  seq: number;
  ts: number;
  keyId: string;
  role: string;
  tenant: string | null;
  action: string;
  target: string;
  requestId: string;
  source: string;
  result: string;
  status: number;
  details: Record<string, unknown>;
}

export async function audit(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: {
      ...CLIENT_OPTIONS,
      action: { type: 'string' },
      'key-id': { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      limit: { type: 'string' },
      before: { type: 'string' },
    },
    allowPositionals: true,
  });
  if (positionals.length > 0)
    throw usageError(
      'usage: isola audit [--tenant NAME] [--action A] [--key-id ID] [--since 24h] [--until T] [--limit N] [--before SEQ] [--json]',
    );
  const q = new URLSearchParams();
  // --tenant filters the log here; it does not pick the acting tenant (nor does an admin key
  // need one). --key is the API key making the call, as everywhere; --key-id filters.
  if (values.tenant) q.set('tenant', values.tenant);
  if (values.action) q.set('action', values.action);
  if (values['key-id']) q.set('key', values['key-id']);
  if (values.since) q.set('since', values.since);
  if (values.until) q.set('until', values.until);
  if (values.limit) q.set('limit', values.limit);
  if (values.before) q.set('before', values.before);
  const c = clientFrom({ url: values.url, key: values.key });
  const out = (await c.request('GET', `/v1/audit?${q}`)).data as {
    entries: Entry[];
    next: number | null;
  };
  if (values.json) {
    printJson(out);
    return 0;
  }
  process.stdout.write(
    table(
      ['SEQ', 'TIME', 'KEY', 'TENANT', 'ACTION', 'TARGET', 'RESULT', 'SOURCE', 'REQUEST'],
      out.entries.map((e) => [
        e.seq,
        when(e.ts),
        `${e.keyId} (${e.role})`,
        e.tenant ?? '-',
        e.action,
        e.target,
        e.result === 'ok' ? 'ok' : `${e.result} (${e.status})`,
        e.source,
        e.requestId,
      ]),
    ),
  );
  if (out.next !== null) process.stdout.write(`# older: isola audit --before ${out.next}\n`);
  return 0;
}
