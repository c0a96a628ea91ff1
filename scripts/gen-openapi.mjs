#!/usr/bin/env node
// Regenerates src/gateway/openapi.json from the route table and schemas (compiled);
// src/gateway/openapi.test.ts fails when the committed file is stale.  node scripts/gen-openapi.mjs
import { writeFileSync } from 'node:fs';
import path from 'node:path';
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const { buildOpenApi } = await import(path.join(root, 'dist/src/gateway/openapi.js'));
const { ROUTES } = await import(path.join(root, 'dist/src/gateway/server.js'));
writeFileSync(
  path.join(root, 'src/gateway/openapi.json'),
  `${JSON.stringify(buildOpenApi(ROUTES), null, 2)}\n`,
);
