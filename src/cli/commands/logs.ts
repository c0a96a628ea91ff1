import { toError } from '../client.js';
import { CLIENT_OPTIONS, clientFrom } from '../common.js';
// isola logs NAME [--follow] [--request ID] [--json]
// Every line carries the request id of the invocation that wrote it.
import { parseCli, printJson, usageError } from '../output.js';

interface Line {
  seq: number;
  ts: number;
  requestId: string | null;
  stream: string;
  line: string;
}

const fmt = (l: Line) =>
  `${new Date(l.ts).toISOString()} ${l.requestId ?? '-'} ${l.stream.padEnd(6)} ${l.line}\n`;

export async function logs(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: {
      ...CLIENT_OPTIONS,
      follow: { type: 'boolean', short: 'f', default: false },
      request: { type: 'string' },
      limit: { type: 'string' },
    },
    allowPositionals: true,
  });
  const [fn] = positionals;
  if (!fn) throw usageError('usage: isola logs NAME [--follow] [--request ID] [--json]');
  const c = clientFrom(values);
  const q = new URLSearchParams();
  if (values.request) q.set('request', values.request);
  if (values.limit) q.set('limit', values.limit);
  const route = `/v1/functions/${encodeURIComponent(fn)}/logs`;
  if (!values.follow) {
    const { lines } = (await c.request('GET', `${route}?${q}`)).data as { lines: Line[] };
    if (values.json) printJson(lines);
    else for (const l of lines) process.stdout.write(fmt(l));
    return 0;
  }
  q.set('follow', '1');
  const res = await c.fetch('GET', `${route}?${q}`);
  if (!res.ok) throw toError(res.status, await res.json().catch(() => null));
  let buf = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    for (const p of parts) {
      if (!p) continue;
      const l = JSON.parse(p) as Line;
      process.stdout.write(values.json ? `${p}\n` : fmt(l));
    }
  }
  return 0;
}
