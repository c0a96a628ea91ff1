// isola invoke NAME[:VERSION|:ALIAS] [--data JSON | --data @FILE | --data -] [--json]
// Prints the handler's result as JSON; --json prints the whole reply (request id, version,
// start kind and time). A failed invocation exits with its error code's exit status.

import { readFileSync } from 'node:fs';
import { seg, toError } from '../client.js';
import { CLIENT_OPTIONS, clientFrom } from '../common.js';
import { parseCli, printJson, usageError } from '../output.js';

/** After this long without an answer, a terminal user is told a cold start may be running. */
const COLD_HINT_MS = 1000;

export async function invoke(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: { ...CLIENT_OPTIONS, data: { type: 'string', short: 'd' } },
    allowPositionals: true,
  });
  const [name] = positionals;
  if (!name || positionals.length > 1)
    throw usageError('usage: isola invoke NAME [--data JSON|@FILE|-] [--json]');
  let data = values.data ?? '';
  if (data === '-') data = readFileSync(0, 'utf8');
  else if (data.startsWith('@')) data = readFileSync(data.slice(1), 'utf8');
  const c = clientFrom(values);
  // On a terminal, say why a call takes long: the first one boots the function's micro-VM.
  const hint =
    process.stderr.isTTY && !values.json
      ? setTimeout(
          () =>
            process.stderr.write('waiting for an instance (a cold start boots a micro-VM)...\n'),
          COLD_HINT_MS,
        )
      : null;
  let res: Response;
  try {
    res = await c.fetch('POST', `/v1/functions/${seg(name)}/invoke`, {
      body: Buffer.from(data),
      headers: { 'content-type': 'application/json' },
    });
  } finally {
    if (hint) clearTimeout(hint);
  }
  if (hint && res.headers.get('x-isola-start') === 'booted') {
    process.stderr.write(
      `cold start: ${res.headers.get('x-isola-start-ms')} ms to boot and load\n`,
    );
  }
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // keep text
  }
  if (!res.ok) {
    const e = toError(res.status, body);
    if (values.json) process.stderr.write(`${JSON.stringify(body)}\n`);
    else {
      process.stderr.write(`isola: ${e.code}: ${e.message}\n`);
      const stack = (e.details?.error as { stack?: string } | undefined)?.stack;
      if (stack) process.stderr.write(`${stack}\n`);
      process.stderr.write(`request ${res.headers.get('x-isola-request-id')}\n`);
    }
    return e.exitCode;
  }
  if (values.json) printJson(body);
  else printJson((body as { result: unknown }).result);
  return 0;
}
