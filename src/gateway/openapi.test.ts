import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT } from '../assets/paths.js';
import { ROUTE_DOCS, buildOpenApi } from './openapi.js';
import { ROUTES } from './server.js';

test('the committed openapi.json is what the routes and schemas generate', () => {
  const committed = JSON.parse(
    readFileSync(path.join(REPO_ROOT, 'src/gateway/openapi.json'), 'utf8'),
  );
  assert.deepEqual(committed, buildOpenApi(ROUTES), 'run: node scripts/gen-openapi.mjs');
});

test('every route has docs and every doc entry has a route', () => {
  const ids = new Set(ROUTES.map((r) => `${r.method} ${r.path}`));
  assert.equal(ids.size, ROUTES.length, 'duplicate route');
  assert.deepEqual([...ids].sort(), Object.keys(ROUTE_DOCS).sort());
});
