// Every route of the table says who may call it, public routes are an explicit short list, and
// every route that changes state is audited. test/82-api-security.test.ts walks the same table
// against a real server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ROUTES } from './server.js';

const id = (r: { method: string; path: string }) => `${r.method} ${r.path}`;

/** The only routes callable without a key. */
const PUBLIC = ['GET /v1/health', 'GET /v1/openapi.json'];

/** State-changing routes that are not audited, and why. */
const NOT_AUDITED: Record<string, string> = {
  'POST /v1/functions/{name}/invoke': 'an invocation: metered (invocations), not a change',
};

test('every route has an explicit access level', () => {
  for (const r of ROUTES) {
    assert.ok(
      ['public', 'admin', 'any'].includes(r.access as string),
      `${id(r)} has access ${String(r.access)}`,
    );
  }
});

test('public routes are exactly health and the OpenAPI document', () => {
  assert.deepEqual(
    ROUTES.filter((r) => r.access === 'public')
      .map(id)
      .sort(),
    PUBLIC.sort(),
  );
});

test('tenant management, metrics and the audit log are admin-only', () => {
  for (const r of ROUTES) {
    if (r.path.startsWith('/v1/tenants') || r.path === '/metrics' || r.path === '/v1/audit')
      assert.equal(r.access, 'admin', id(r));
  }
});

test('every route that changes state names its audit action; reads name none', () => {
  for (const r of ROUTES) {
    if (r.method === 'GET') {
      assert.equal(r.audit, undefined, `${id(r)} is a read`);
      continue;
    }
    if (NOT_AUDITED[id(r)]) continue;
    assert.match(r.audit ?? '', /^[a-z]+\.[a-z]+$/, `${id(r)} has no audit action`);
  }
  const actions = ROUTES.flatMap((r) => (r.audit ? [r.audit] : []));
  assert.equal(new Set(actions).size, actions.length, 'audit actions are unique');
});
