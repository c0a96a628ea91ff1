// POST /v1/functions/{name}/invoke: a JSON event in, the handler's result out (or its error as
// a structured error with the matching status). `name` may carry a qualifier: fn:3, fn:beta.

import type http from 'node:http';
import { IsolaError } from '../../errors.js';
import type { InvokeResult } from '../../platform/platform.js';
import { MAX_INVOKE_BYTES, parseJsonText, readBody, sendJson } from '../http.js';
import type { Route } from '../router.js';
import { tenantOf } from '../views.js';

export function startHeaders(r: InvokeResult): Record<string, string> {
  return {
    'x-isola-start': r.startKind,
    'x-isola-start-ms': r.startMs.toFixed(1),
    'x-isola-version': String(r.version),
    'x-isola-duration-ms': r.durationMs.toFixed(1),
    // The handler's own time as the runtime in the guest measured it (Node.js functions).
    ...(r.outcome.handlerMs !== undefined
      ? { 'x-isola-handler-ms': r.outcome.handlerMs.toFixed(3) }
      : {}),
  };
}

export const invokeRoutes: Route[] = [
  {
    method: 'POST',
    path: '/v1/functions/{name}/invoke',
    access: 'any',
    handler: async (ctx) => {
      const t = await tenantOf(ctx);
      const body = await readBody(ctx.req, MAX_INVOKE_BYTES);
      if (body.length > 0) parseJsonText(body, 'JSON event');
      const r = await ctx.platform.invoke(t, ctx.params.name!, body, ctx.requestId);
      sendOutcome(ctx.res, r, ctx.t0);
    },
  },
];

function sendOutcome(res: http.ServerResponse, r: InvokeResult, t0: number): void {
  const headers = startHeaders(r);
  // Where the time went, as the gateway saw it: total (request in to response out), getting an
  // instance, the handler in the guest. total - handler is the platform's own overhead.
  const timing = [
    `total;dur=${(performance.now() - t0).toFixed(3)}`,
    `start;dur=${r.startMs.toFixed(3)}`,
    // the exchange with the instance: host -> agent -> runtime -> handler and back
    `instance;dur=${r.durationMs.toFixed(3)}`,
  ];
  if (r.outcome.handlerMs !== undefined)
    timing.push(`handler;dur=${r.outcome.handlerMs.toFixed(3)}`);
  headers['server-timing'] = timing.join(', ');
  const o = r.outcome;
  if (o.status === 'ok') {
    sendJson(
      res,
      200,
      {
        requestId: r.requestId,
        function: r.functionName,
        version: r.version,
        start: r.startKind,
        startMs: round(r.startMs),
        durationMs: round(r.durationMs),
        result: o.result ?? null,
      },
      headers,
    );
    return;
  }
  const e = o.error ?? new IsolaError('E_INTERNAL', 'invocation failed without an error');
  sendJson(res, e.httpStatus, { error: e.toJSON(), requestId: r.requestId }, headers);
}

const round = (n: number) => Math.round(n * 10) / 10;
