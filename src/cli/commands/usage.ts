import { CLIENT_OPTIONS, clientFrom, table } from '../common.js';
// isola usage [--tenant NAME] [--since 24h|ISO|ms] [--json]
import { parseCli, printJson } from '../output.js';

interface UsageOut {
  since: number | null;
  rows: Array<{
    tenant: string;
    function: string;
    invocations: number;
    errors: number;
    durationMs: number;
    gbSeconds: number;
  }>;
  totals: { invocations: number; gbSeconds: number; durationMs: number };
}

export async function usage(argv: string[]): Promise<number> {
  const { values } = parseCli({
    args: argv,
    options: { ...CLIENT_OPTIONS, since: { type: 'string' } },
    allowPositionals: false,
  });
  const q = new URLSearchParams();
  if (values.tenant) q.set('tenant', values.tenant);
  if (values.since) q.set('since', values.since);
  const u = (
    await clientFrom({ url: values.url, key: values.key }).request('GET', `/v1/usage?${q}`)
  ).data as UsageOut;
  if (values.json) {
    printJson(u);
    return 0;
  }
  process.stdout.write(
    table(
      ['TENANT', 'FUNCTION', 'INVOCATIONS', 'ERRORS', 'DURATION', 'GB-SECONDS'],
      [
        ...u.rows.map((r) => [
          r.tenant,
          r.function,
          r.invocations,
          r.errors,
          `${(r.durationMs / 1000).toFixed(3)} s`,
          r.gbSeconds.toFixed(6),
        ]),
        [
          'total',
          '',
          u.totals.invocations,
          '',
          `${(u.totals.durationMs / 1000).toFixed(3)} s`,
          u.totals.gbSeconds.toFixed(6),
        ],
      ],
    ),
  );
  return 0;
}
