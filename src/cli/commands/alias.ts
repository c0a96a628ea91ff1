import { CLIENT_OPTIONS, clientFrom, table, when } from '../common.js';
// isola alias set NAME ALIAS VERSION [--split VERSION=PERCENT] | ls NAME | rm NAME ALIAS
// Rollback: `isola alias set fn live 3`.
import { parseCli, printJson, usageError } from '../output.js';

const USAGE = `usage: isola alias set NAME ALIAS VERSION [--split VERSION=PERCENT] [--json]
       isola alias ls NAME | rm NAME ALIAS
`;

interface AliasOut {
  name: string;
  version: number;
  additionalVersion: number | null;
  additionalWeight: number;
  updatedAt: number;
}

export async function alias(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: { ...CLIENT_OPTIONS, split: { type: 'string' } },
    allowPositionals: true,
  });
  const [sub, fn, name, version] = positionals;
  const c = clientFrom(values);
  if (!fn) throw usageError(USAGE);
  const base = `/v1/functions/${encodeURIComponent(fn)}/aliases`;
  switch (sub) {
    case 'set': {
      if (!name || !version) throw usageError(USAGE);
      const body: Record<string, unknown> = { version: Number(version) };
      if (values.split) {
        const m = /^(\d+)=(\d+)%?$/.exec(values.split);
        if (!m) throw usageError('--split wants VERSION=PERCENT, e.g. --split 4=10');
        body.additionalVersion = Number(m[1]);
        body.additionalWeight = Number(m[2]);
      }
      const a = (await c.request('PUT', `${base}/${encodeURIComponent(name)}`, { json: body }))
        .data as AliasOut;
      if (values.json) printJson(a);
      else
        process.stdout.write(
          `${fn}:${a.name} -> ${a.version}${a.additionalVersion ? ` (${100 - a.additionalWeight}%), ${a.additionalVersion} (${a.additionalWeight}%)` : ''}\n`,
        );
      return 0;
    }
    case 'ls': {
      const { aliases } = (await c.request('GET', base)).data as { aliases: AliasOut[] };
      if (values.json) printJson(aliases);
      else
        process.stdout.write(
          table(
            ['ALIAS', 'VERSION', 'SPLIT', 'UPDATED'],
            aliases.map((a) => [
              a.name,
              a.version,
              a.additionalVersion ? `${a.additionalVersion}@${a.additionalWeight}%` : '-',
              when(a.updatedAt),
            ]),
          ),
        );
      return 0;
    }
    case 'rm':
      if (!name) throw usageError(USAGE);
      await c.request('DELETE', `${base}/${encodeURIComponent(name)}`);
      if (values.json) printJson({ ok: true });
      return 0;
    default:
      process.stderr.write(USAGE);
      return 2;
  }
}
