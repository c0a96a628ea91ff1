// Health, the OpenAPI document and Prometheus metrics.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../../assets/paths.js';
import { sendJson } from '../http.js';
import type { Route } from '../router.js';

const VERSION = (
  JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }
).version;
let openapi: Buffer | null = null;

export const systemRoutes: Route[] = [
  {
    method: 'GET',
    path: '/v1/health',
    access: 'public',
    handler: async (ctx) =>
      sendJson(ctx.res, 200, {
        ok: !ctx.platform.isDraining,
        version: VERSION,
        draining: ctx.platform.isDraining,
      }),
  },
  {
    method: 'GET',
    path: '/v1/openapi.json',
    access: 'public',
    handler: async (ctx) => {
      openapi ??= readFileSync(path.join(REPO_ROOT, 'src/gateway/openapi.json'));
      ctx.res.writeHead(200, { 'content-type': 'application/json' });
      ctx.res.end(openapi);
    },
  },
  {
    method: 'GET',
    path: '/metrics',
    access: 'admin',
    handler: async (ctx) => {
      const text = ctx.platform.metrics.render();
      ctx.res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      ctx.res.end(text);
    },
  },
];
