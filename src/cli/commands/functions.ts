import { type EgressPolicy, describeEgress } from '../../net/policy.js';
import { CLIENT_OPTIONS, clientFrom, table, when } from '../common.js';
// isola ls | rm NAME | versions NAME | info NAME   (functions of the acting tenant)
import { parseCli, printJson, usageError } from '../output.js';

interface FnOut {
  name: string;
  runtime: string;
  latestVersion: number;
  updatedAt: number;
  aliases: Array<{
    name: string;
    version: number;
    additionalVersion: number | null;
    additionalWeight: number;
  }>;
  config: { memoryMiB: number; timeoutS: number; egress: EgressPolicy } | null;
  secrets: string[];
  snapshot: string;
}

const aliasText = (a: FnOut['aliases'][number]) =>
  a.additionalVersion
    ? `${a.name}->${a.version}/${a.additionalVersion}@${a.additionalWeight}%`
    : `${a.name}->${a.version}`;

export async function ls(argv: string[]): Promise<number> {
  const { values } = parseCli({ args: argv, options: CLIENT_OPTIONS, allowPositionals: false });
  const { functions } = (await clientFrom(values).request('GET', '/v1/functions')).data as {
    functions: FnOut[];
  };
  if (values.json) printJson(functions);
  else
    process.stdout.write(
      table(
        [
          'NAME',
          'RUNTIME',
          'VERSION',
          'ALIASES',
          'MEMORY',
          'TIMEOUT',
          'EGRESS',
          'SNAPSHOT',
          'UPDATED',
        ],
        functions.map((f) => [
          f.name,
          f.runtime,
          f.latestVersion,
          f.aliases.map(aliasText).join(' ') || '-',
          f.config ? `${f.config.memoryMiB} MiB` : '-',
          f.config ? `${f.config.timeoutS} s` : '-',
          f.config ? describeEgress(f.config.egress) : '-',
          f.snapshot,
          when(f.updatedAt),
        ]),
      ),
    );
  return 0;
}

export async function info(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: CLIENT_OPTIONS,
    allowPositionals: true,
  });
  if (!positionals[0]) throw usageError('usage: isola info NAME');
  const f = (
    await clientFrom(values).request('GET', `/v1/functions/${encodeURIComponent(positionals[0])}`)
  ).data;
  printJson(f);
  return 0;
}

export async function rm(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: CLIENT_OPTIONS,
    allowPositionals: true,
  });
  if (positionals.length === 0) throw usageError('usage: isola rm NAME...');
  const c = clientFrom(values);
  for (const n of positionals) {
    await c.request('DELETE', `/v1/functions/${encodeURIComponent(n)}`);
    if (!values.json) process.stdout.write(`function ${n} deleted\n`);
  }
  if (values.json) printJson({ ok: true, deleted: positionals });
  return 0;
}

interface VersionOut {
  version: number;
  runtime: string;
  createdAt: number;
  description: string;
  source: { kind: string; digest?: string; image?: string };
  config: { memoryMiB: number; timeoutS: number };
}

export async function versions(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: CLIENT_OPTIONS,
    allowPositionals: true,
  });
  if (!positionals[0]) throw usageError('usage: isola versions NAME');
  const { versions: list } = (
    await clientFrom(values).request(
      'GET',
      `/v1/functions/${encodeURIComponent(positionals[0])}/versions`,
    )
  ).data as { versions: VersionOut[] };
  if (values.json) printJson(list);
  else
    process.stdout.write(
      table(
        ['VERSION', 'SOURCE', 'MEMORY', 'TIMEOUT', 'CREATED', 'DESCRIPTION'],
        list.map((v) => [
          v.version,
          v.source.kind === 'bundle'
            ? (v.source.digest ?? '').slice(0, 19)
            : (v.source.image ?? ''),
          `${v.config.memoryMiB} MiB`,
          `${v.config.timeoutS} s`,
          when(v.createdAt),
          v.description,
        ]),
      ),
    );
  return 0;
}
