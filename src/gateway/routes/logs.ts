// Logs of a function (every line carries its request id) and its metering records.
// ?follow=1 streams new lines as NDJSON until the client goes away.

import { IsolaError } from '../../errors.js';
import type { LogRecord } from '../../platform/store/types.js';
import { sendJson } from '../http.js';
import type { Ctx, Route } from '../router.js';
import { tenantOf } from '../views.js';

/** How often a follower looks for new lines (the log sink flushes every 100 ms). */
const FOLLOW_POLL_MS = 200;

const lineView = (l: LogRecord) => ({
  seq: l.seq,
  ts: l.ts,
  requestId: l.requestId,
  stream: l.stream,
  line: l.line,
});

function intParam(ctx: Ctx, name: string, def: number, max: number): number {
  const v = ctx.query.get(name);
  if (v === null) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > max)
    throw new IsolaError('E_INVALID_ARGUMENT', `${name} must be an integer in [0, ${max}]`);
  return n;
}

export const logRoutes: Route[] = [
  {
    method: 'GET',
    path: '/v1/functions/{name}/logs',
    access: 'any',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const f = await ctx.platform.getFunction(t, ctx.params.name!);
      const requestId = ctx.query.get('request') ?? undefined;
      let after = intParam(ctx, 'after', 0, Number.MAX_SAFE_INTEGER);
      const limit = intParam(ctx, 'limit', 1000, 10_000);
      await ctx.platform.logs.flush();
      const read = () =>
        ctx.platform.store.readLogs({
          functionId: f.id,
          afterSeq: after,
          limit,
          ...(requestId ? { requestId } : {}),
        });
      if (ctx.query.get('follow') !== '1') {
        const lines = await read();
        sendJson(ctx.res, 200, { lines: lines.map(lineView), next: lines.at(-1)?.seq ?? after });
        return;
      }
      ctx.res.writeHead(200, {
        'content-type': 'application/x-ndjson',
        'cache-control': 'no-cache',
      });
      let open = true;
      ctx.res.on('close', () => {
        open = false;
      });
      while (open && !ctx.platform.isDraining) {
        const lines = await read();
        for (const l of lines) ctx.res.write(`${JSON.stringify(lineView(l))}\n`);
        if (lines.length > 0) after = lines.at(-1)!.seq;
        if (lines.length < limit) await new Promise((r) => setTimeout(r, FOLLOW_POLL_MS));
      }
      ctx.res.end();
    },
  },
  {
    method: 'GET',
    path: '/v1/functions/{name}/invocations',
    access: 'any',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const f = await ctx.platform.getFunction(t, ctx.params.name!);
      const limit = intParam(ctx, 'limit', 100, 10_000);
      const rows = await ctx.platform.store.listInvocations({ functionId: f.id, limit });
      sendJson(ctx.res, 200, {
        invocations: rows.map((r) => ({
          requestId: r.requestId,
          function: r.functionName,
          version: r.version,
          startedAt: r.startedAt,
          durationMs: r.durationMs,
          memoryMiB: r.memoryMiB,
          gbSeconds: r.gbSeconds,
          status: r.status,
          start: r.startKind,
          startMs: r.startMs,
        })),
      });
    },
  },
];
