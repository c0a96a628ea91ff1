// API hardening against a real `isola serve` (SQLite) that never starts a VM: snapshots are off,
// functions keep no warm instances, and no invocation gets past authentication and tenancy.
//   - every operation of the served OpenAPI document is walked with no key, bad keys and a
//     revoked key (401), tenant keys on admin operations (403), and tenant A's key on tenant
//     B's resources (404, the same answer as for something that does not exist); the route
//     table and the document list the same operations, and each has its tenancy probe;
//   - request size limits (URL, headers, body, JSON depth): typed errors, the server serves on;
//   - per-key and per-address rate limits (429 E_RATE_LIMITED with Retry-After);
//   - a secret value and an API key never appear in logs, errors, metrics or the database;
//   - the audit log of state-changing calls, its filters and paging, and `isola audit`.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ROUTES } from '../src/gateway/server.js';
import { ROOT, sleep } from './helpers.js';
import {
  type ApiReply,
  type OpenApiDoc,
  type TestServer,
  api,
  checkContract,
  cleanup,
  cli,
  startServer,
  tempDir,
} from './platform-helpers.js';

const HELLO = path.join(ROOT, 'examples/hello');
/** No VM in this file: nothing is snapshotted, and no function keeps warm instances. */
const NO_VM = { ISOLA_SNAPSHOTS: '0' };

const opId = (method: string, p: string) => `${method.toUpperCase()} ${p}`;
const errCode = (r: ApiReply) => (r.body as { error?: { code?: string } }).error?.code;
const errMessage = (r: ApiReply) => (r.body as { error?: { message?: string } }).error?.message;

function bundleTar(): Buffer {
  return spawnSync('tar', ['-C', HELLO, '-c', '.']).stdout;
}

async function served(srv: TestServer): Promise<OpenApiDoc> {
  const r = await api(srv.url, 'GET', '/v1/openapi.json');
  assert.equal(r.status, 200);
  return r.body as OpenApiDoc;
}

function operations(doc: OpenApiDoc): Array<{ method: string; path: string; access: string }> {
  const out: Array<{ method: string; path: string; access: string }> = [];
  for (const [p, ops] of Object.entries(doc.paths))
    for (const [m, op] of Object.entries(ops))
      out.push({ method: m.toUpperCase(), path: p, access: op['x-isola-access'] });
  return out;
}

/** Bytes on a fresh connection; resolves with what came back when the server closes it. */
function rawExchange(url: string, text: string | Buffer): Promise<{ head: string; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(port), hostname);
    const parts: Buffer[] = [];
    s.on('data', (d) => parts.push(d));
    s.on('error', reject);
    s.on('close', () => {
      const all = Buffer.concat(parts).toString('latin1');
      const i = all.indexOf('\r\n\r\n');
      resolve({ head: all.slice(0, i), body: all.slice(i + 4) });
    });
    // Not end(): the server answers and closes; a half-closed client may be dropped first.
    s.write(text);
  });
}

describe('API security: every operation needs a key, and tenants cannot see each other', () => {
  let dir: string;
  let srv: TestServer;
  let doc: OpenApiDoc;
  let acmeKey: string;
  let acmeKeyId: string;
  let globexKey: string;
  let globexKeyId: string;
  let revokedKey: string;
  const call = (method: string, route: string, opts: Parameters<typeof api>[3] = {}) =>
    api(srv.url, method, route, opts);

  before(async () => {
    dir = tempDir('api-security');
    srv = await startServer({
      dataDir: path.join(dir, 'data'),
      // The walk fails authentication some 400 times from one address.
      env: { ...NO_VM, ISOLA_AUTH_FAILURE_RPS: '1000', ISOLA_AUTH_FAILURE_BURST: '100000' },
    });
    const admin = srv.adminKey;
    for (const name of ['acme', 'globex'])
      assert.equal((await call('POST', '/v1/tenants', { key: admin, json: { name } })).status, 201);
    const key = async (tenant: string) => {
      const r = await call('POST', '/v1/keys', { key: admin, json: { tenant } });
      assert.equal(r.status, 201, r.text);
      return r.body as { key: string; id: string };
    };
    ({ key: acmeKey, id: acmeKeyId } = await key('acme'));
    ({ key: globexKey, id: globexKeyId } = await key('globex'));
    const revoked = await key('acme');
    revokedKey = revoked.key;
    assert.equal((await call('DELETE', `/v1/keys/${revoked.id}`, { key: admin })).status, 200);
    // globex owns a deployed function with a version, aliases and a secret.
    const d = await call('POST', '/v1/functions/fb/versions', {
      key: globexKey,
      body: bundleTar(),
      headers: { 'content-type': 'application/x-tar' },
    });
    assert.equal(d.status, 201, d.text);
    const a = await call('PUT', '/v1/functions/fb/aliases/beta', {
      key: globexKey,
      json: { version: 1 },
    });
    assert.equal(a.status, 200, a.text);
    const s = await call('PUT', '/v1/functions/fb/secrets/TOKEN', {
      key: globexKey,
      json: { value: 'globex-token-value' },
    });
    assert.equal(s.status, 200, s.text);
    doc = await served(srv);
  });

  after(async () => {
    await srv.stop();
    cleanup(dir);
  });

  /** Path parameters filled with globex's real resources. */
  const fill = (p: string, over: Record<string, string> = {}) =>
    p.replace(/\{(\w+)\}/g, (_m, n: string) => {
      const v: Record<string, string> = {
        tenant: 'globex',
        name: 'fb',
        version: '1',
        alias: 'beta',
        secret: 'TOKEN',
        id: globexKeyId,
        ...over,
      };
      return v[n] ?? `unknown-param-${n}`;
    });
  const bodyFor = (m: string) => (m === 'GET' || m === 'DELETE' ? {} : { json: {} });

  test('the route table and the served OpenAPI document list exactly the same operations', async () => {
    const inDoc = operations(doc)
      .map((o) => opId(o.method, o.path))
      .sort();
    const inTable = ROUTES.map((r) => opId(r.method, r.path)).sort();
    assert.deepEqual(inDoc, inTable);
    assert.equal(new Set(inTable).size, inTable.length);
    // Access levels agree too, and the served document is the committed one.
    for (const r of ROUTES)
      assert.equal(
        doc.paths[r.path]?.[r.method.toLowerCase()]?.['x-isola-access'],
        r.access,
        opId(r.method, r.path),
      );
    const committed = JSON.parse(
      readFileSync(path.join(ROOT, 'src/gateway/openapi.json'), 'utf8'),
    ) as unknown;
    assert.deepEqual(doc, committed);
  });

  test('every operation refuses a missing, malformed, unknown, wrong or revoked key with 401', async () => {
    const adminId = /^isola_([a-z0-9]{12})_/.exec(srv.adminKey)![1]!;
    const bad: Array<[string, string | undefined]> = [
      ['no Authorization header', undefined],
      ['another scheme', `Basic ${Buffer.from('admin:admin').toString('base64')}`],
      ['an empty bearer', 'Bearer '],
      ['a malformed key', 'Bearer not-a-key'],
      ['an unknown key id', `Bearer isola_zzzzzzzzzzzz_${'A'.repeat(43)}`],
      ["a tenant key's id with a wrong secret", `Bearer isola_${acmeKeyId}_${'B'.repeat(43)}`],
      ["the admin key's id with a wrong secret", `Bearer isola_${adminId}_${'C'.repeat(43)}`],
      ['a key with a character added', `Bearer ${acmeKey}x`],
      ['a revoked key', `Bearer ${revokedKey}`],
    ];
    let walked = 0;
    for (const { method, path: p, access } of operations(doc)) {
      if (access === 'public') {
        const r = await call(method, fill(p));
        assert.equal(r.status, 200, `${opId(method, p)} is public`);
        continue;
      }
      for (const [what, authorization] of bad) {
        const r = await call(method, fill(p), {
          ...bodyFor(method),
          headers: authorization === undefined ? {} : { authorization },
        });
        assert.equal(r.status, 401, `${opId(method, p)} with ${what}: ${r.text}`);
        assert.equal(errCode(r), 'E_UNAUTHORIZED');
        assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="isola"');
        checkContract(doc, method, p, r);
        // The same answer whatever was wrong: nothing tells ids, secrets or revocation apart.
        assert.ok(
          [
            'missing API key: send Authorization: Bearer KEY',
            'invalid or revoked API key',
          ].includes(errMessage(r) ?? ''),
          `${opId(method, p)} with ${what}: ${errMessage(r)}`,
        );
      }
      walked++;
    }
    assert.equal(walked, ROUTES.filter((r) => r.access !== 'public').length);
    // Nothing the refused calls named was touched.
    const fb = await call('GET', '/v1/functions/fb', { key: globexKey });
    assert.equal(fb.status, 200);
    assert.deepEqual((fb.body as { secrets: string[] }).secrets, ['TOKEN']);
    assert.equal((await call('GET', '/v1/tenants/globex', { key: srv.adminKey })).status, 200);
  });

  test('tenant keys get 403 on every admin operation; admin keys pass', async () => {
    const adminOps = operations(doc).filter((o) => o.access === 'admin');
    assert.ok(adminOps.length >= 7);
    for (const { method, path: p } of adminOps) {
      for (const key of [acmeKey, globexKey]) {
        const r = await call(method, fill(p), { key, ...bodyFor(method) });
        assert.equal(r.status, 403, `${opId(method, p)} with a tenant key: ${r.text}`);
        assert.equal(errCode(r), 'E_FORBIDDEN');
        checkContract(doc, method, p, r);
      }
    }
    assert.equal((await call('GET', '/v1/tenants/globex', { key: srv.adminKey })).status, 200);
    assert.equal((await call('GET', '/metrics', { key: srv.adminKey })).status, 200);
  });

  test("another tenant's functions, versions, aliases, secrets, logs, invocations, keys and usage are 404, like missing ones", async () => {
    const own = { key: acmeKey };
    /**
     * One probe per 'any' operation: tenant A (acme) reaches for tenant B's (globex) resource,
     * then for one that does not exist; both must get the same 404 (names aside).
     */
    type Probe = (target: 'globex' | 'missing') => Promise<ApiReply>;
    const byName =
      (method: string, p: string, body: Parameters<typeof api>[3] = {}): Probe =>
      (target) =>
        call(
          method,
          fill(
            p,
            target === 'globex'
              ? {}
              : { name: 'nx-fn', alias: 'nx-alias', secret: 'NX_SECRET', id: 'nxkey0000000' },
          ),
          { ...own, ...body },
        );
    /** Acting for another tenant by naming it (X-Isola-Tenant or ?tenant=). */
    const asTenant =
      (method: string, route: string, body: Parameters<typeof api>[3] = {}): Probe =>
      (target) =>
        call(method, route, {
          ...own,
          ...body,
          headers: { 'x-isola-tenant': target === 'globex' ? 'globex' : 'nx-tenant' },
        });
    const withQuery =
      (method: string, route: string, body: Parameters<typeof api>[3] = {}): Probe =>
      (target) =>
        call(method, `${route}?tenant=${target === 'globex' ? 'globex' : 'nx-tenant'}`, {
          ...own,
          ...body,
        });
    const PROBES: Record<string, Probe[]> = {
      'GET /v1/functions': [asTenant('GET', '/v1/functions'), withQuery('GET', '/v1/functions')],
      'POST /v1/functions': [
        asTenant('POST', '/v1/functions', { json: { name: 'planted', runtime: 'nodejs20' } }),
      ],
      'GET /v1/functions/{name}': [byName('GET', '/v1/functions/{name}')],
      'PATCH /v1/functions/{name}': [
        byName('PATCH', '/v1/functions/{name}', { json: { memoryMiB: 512 } }),
        byName('PATCH', '/v1/functions/{name}', { json: { nonsense: true } }),
      ],
      'DELETE /v1/functions/{name}': [byName('DELETE', '/v1/functions/{name}')],
      'GET /v1/functions/{name}/versions': [byName('GET', '/v1/functions/{name}/versions')],
      'GET /v1/functions/{name}/versions/{version}': [
        byName('GET', '/v1/functions/{name}/versions/{version}'),
      ],
      'POST /v1/functions/{name}/versions': [
        asTenant('POST', '/v1/functions/fb/versions', {
          body: bundleTar(),
          headers: { 'content-type': 'application/x-tar' },
        }),
        withQuery('POST', '/v1/functions/fb/versions', {
          body: bundleTar(),
          headers: { 'content-type': 'application/x-tar' },
        }),
      ],
      'GET /v1/functions/{name}/aliases': [byName('GET', '/v1/functions/{name}/aliases')],
      'GET /v1/functions/{name}/aliases/{alias}': [
        byName('GET', '/v1/functions/{name}/aliases/{alias}'),
      ],
      'PUT /v1/functions/{name}/aliases/{alias}': [
        byName('PUT', '/v1/functions/{name}/aliases/{alias}', { json: { version: 1 } }),
        byName('PUT', '/v1/functions/{name}/aliases/{alias}', { json: { bad: 1 } }),
      ],
      'DELETE /v1/functions/{name}/aliases/{alias}': [
        byName('DELETE', '/v1/functions/{name}/aliases/{alias}'),
      ],
      'GET /v1/functions/{name}/secrets': [byName('GET', '/v1/functions/{name}/secrets')],
      'PUT /v1/functions/{name}/secrets/{secret}': [
        byName('PUT', '/v1/functions/{name}/secrets/{secret}', {
          json: { value: 'overwritten-by-acme' },
        }),
      ],
      'DELETE /v1/functions/{name}/secrets/{secret}': [
        byName('DELETE', '/v1/functions/{name}/secrets/{secret}'),
      ],
      'POST /v1/functions/{name}/invoke': [
        byName('POST', '/v1/functions/{name}/invoke', { json: { x: 1 } }),
        (t) =>
          call('POST', `/v1/functions/${t === 'globex' ? 'fb:1' : 'nx-fn:1'}/invoke`, {
            ...own,
            json: {},
          }),
        (t) =>
          call('POST', `/v1/functions/${t === 'globex' ? 'fb:beta' : 'nx-fn:beta'}/invoke`, {
            ...own,
            json: {},
          }),
        asTenant('POST', '/v1/functions/fb/invoke', { json: {} }),
      ],
      'GET /v1/functions/{name}/logs': [
        byName('GET', '/v1/functions/{name}/logs'),
        asTenant('GET', '/v1/functions/fb/logs'),
      ],
      'GET /v1/functions/{name}/invocations': [byName('GET', '/v1/functions/{name}/invocations')],
      'POST /v1/keys': [
        (t) =>
          call('POST', '/v1/keys', {
            ...own,
            json: { tenant: t === 'globex' ? 'globex' : 'nx-tenant' },
          }),
      ],
      'GET /v1/keys': [withQuery('GET', '/v1/keys')],
      'DELETE /v1/keys/{id}': [byName('DELETE', '/v1/keys/{id}')],
      'GET /v1/usage': [withQuery('GET', '/v1/usage')],
    };
    /** Operations scoped to the caller by construction (nothing of another tenant to name). */
    const OWN_ONLY: Record<string, () => Promise<void>> = {
      'GET /v1/instances': async () => {
        const r = await call('GET', '/v1/instances', own);
        assert.equal(r.status, 200);
        assert.deepEqual((r.body as { instances: unknown[] }).instances, []);
      },
    };
    const anyOps = operations(doc).filter((o) => o.access === 'any');
    for (const { method, path: p } of anyOps) {
      const id = opId(method, p);
      if (OWN_ONLY[id]) {
        await OWN_ONLY[id]!();
        continue;
      }
      const probes = PROBES[id];
      assert.ok(probes, `${id} has no cross-tenant probe: add one`);
      for (const [i, probe] of probes.entries()) {
        const theirs = await probe('globex');
        const missing = await probe('missing');
        assert.equal(theirs.status, 404, `${id} probe ${i} on globex's: ${theirs.text}`);
        assert.equal(errCode(theirs), 'E_NOT_FOUND');
        checkContract(doc, method, p, theirs);
        assert.equal(missing.status, 404, `${id} probe ${i} on a missing one: ${missing.text}`);
        const norm = (r: ApiReply) =>
          (errMessage(r) ?? '')
            .replace(/globex|nx-tenant/g, 'T')
            .replace(/fb|nx-fn/g, 'F')
            .replace(/beta|nx-alias/g, 'A')
            .replace(/TOKEN|NX_SECRET/g, 'S')
            .replace(new RegExp(`${globexKeyId}|nxkey0000000`, 'g'), 'K');
        assert.equal(norm(theirs), norm(missing), `${id} probe ${i}: existence leaks`);
      }
    }
    assert.deepEqual(
      Object.keys(PROBES).filter((k) => !anyOps.some((o) => opId(o.method, o.path) === k)),
      [],
      'probes of operations that no longer exist',
    );

    // Nothing of globex changed; acme's listings show nothing of globex.
    const fb = await call('GET', '/v1/functions/fb', { key: globexKey });
    assert.equal(fb.status, 200);
    const f = fb.body as { latestVersion: number; secrets: string[]; aliases: unknown[] };
    assert.equal(f.latestVersion, 1);
    assert.deepEqual(f.secrets, ['TOKEN']);
    assert.equal(f.aliases.length, 2);
    assert.equal(
      (await call('GET', '/v1/functions', { key: globexKey })).text.includes('planted'),
      false,
    );
    const mine = await call('GET', '/v1/functions', own);
    assert.deepEqual((mine.body as { functions: unknown[] }).functions, []);
    const keys = await call('GET', '/v1/keys', own);
    assert.ok(!keys.text.includes(globexKeyId));
    assert.equal((await call('GET', '/v1/functions/fb', { key: globexKey })).status, 200);
    const usage = await call('GET', '/v1/usage', own);
    assert.ok(!usage.text.includes('globex'));
  });

  test('HTTP routing to functions: without a key, private and missing functions look alike (401); other tenants get 404', async () => {
    for (const route of ['/globex/fb', '/globex/fb/a/b?x=1', '/globex/nx-fn', '/nx-tenant/fb']) {
      const none = await call('GET', route);
      assert.equal(none.status, 401, `${route} without a key: ${none.text}`);
      const bad = await call('POST', route, { key: revokedKey, json: {} });
      assert.equal(bad.status, 401, `${route} with a revoked key`);
      const other = await call('GET', route, { key: acmeKey });
      assert.equal(other.status, 404, `${route} with another tenant's key: ${other.text}`);
      assert.equal(errCode(other), 'E_NOT_FOUND');
    }
    // Unknown /v1 routes and wrong methods need a key before they say anything.
    assert.equal((await call('GET', '/v1/nope')).status, 401);
    assert.equal((await call('GET', '/v1/nope', { key: acmeKey })).status, 404);
    assert.equal((await call('PUT', '/v1/tenants')).status, 401);
    assert.equal((await call('PUT', '/v1/tenants', { key: acmeKey })).status, 400);
    assert.equal((await call('POST', '/metrics')).status, 401);
  });

  test('a burst of 100 requests of one key at once passes the default rate limits', async () => {
    const replies = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        i % 2 === 0
          ? call('GET', '/v1/functions', { key: acmeKey })
          : // Invocations of a missing function: refused by tenancy, not by the rate limit.
            call('POST', '/v1/functions/nx-fn/invoke', { key: acmeKey, json: { i } }),
      ),
    );
    assert.deepEqual(
      replies.map((r) => r.status),
      Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? 200 : 404)),
    );
  });

  test('size limits: URL, headers, body and JSON depth are typed errors; the server serves on', async () => {
    const healthy = async () =>
      assert.equal((await call('GET', '/v1/health')).status, 200, 'still serving');

    const longUrl = await call('GET', `/v1/functions?x=${'a'.repeat(9000)}`, { key: acmeKey });
    assert.equal(longUrl.status, 414);
    assert.equal(errCode(longUrl), 'E_URI_TOO_LONG');
    checkContract(doc, 'GET', '/v1/functions', longUrl);
    await healthy();

    const hugeHeader = await rawExchange(
      srv.url,
      `GET /v1/health HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(70 * 1024)}\r\n\r\n`,
    );
    assert.match(hugeHeader.head, /^HTTP\/1\.1 431 /);
    assert.equal(
      (JSON.parse(hugeHeader.body) as { error: { code: string } }).error.code,
      'E_HEADERS_TOO_LARGE',
    );
    await healthy();

    const garbage = await rawExchange(srv.url, 'NOT HTTP AT ALL\r\n\r\n');
    assert.match(garbage.head, /^HTTP\/1\.1 400 /);
    await healthy();

    // A declared body no route takes: refused before a byte is read, the connection closed.
    const declared = await rawExchange(
      srv.url,
      `POST /v1/tenants HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${srv.adminKey}\r\ncontent-length: 100000000000\r\n\r\n{`,
    );
    assert.match(declared.head, /^HTTP\/1\.1 413 /);
    assert.match(declared.head, /connection: close/i);
    await healthy();

    const bigJson = await call('POST', '/v1/tenants', {
      key: srv.adminKey,
      json: { name: 'big', pad: 'x'.repeat(300 * 1024) },
    });
    assert.equal(bigJson.status, 413);
    assert.equal(errCode(bigJson), 'E_PAYLOAD_TOO_LARGE');
    checkContract(doc, 'POST', '/v1/tenants', bigJson);
    const bigEvent = await call('POST', '/v1/functions/nx-fn/invoke', {
      key: acmeKey,
      body: JSON.stringify({ s: 'x'.repeat(6 * 1024 * 1024) }),
    });
    assert.equal(bigEvent.status, 413);
    await healthy();

    // A body streamed without a length: cut at the limit, not read to its end.
    const streamed = await new Promise<{ status: number; error: string; sentMiB: number }>(
      (resolve) => {
        const { hostname, port } = new URL(srv.url);
        const req = http.request({
          host: hostname,
          port,
          method: 'POST',
          path: '/v1/tenants',
          headers: { authorization: `Bearer ${srv.adminKey}`, 'transfer-encoding': 'chunked' },
        });
        let sent = 0;
        let status = 0;
        let error = '';
        const chunk = Buffer.alloc(1 << 20, 0x20);
        req.on('response', (res) => {
          status = res.statusCode ?? 0;
          res.resume();
        });
        req.on('error', (e: NodeJS.ErrnoException) => {
          error = e.code ?? e.message;
        });
        req.on('close', () => resolve({ status, error, sentMiB: sent >> 20 }));
        const pump = () => {
          while (sent < 1024 << 20) {
            sent += chunk.length;
            if (!req.write(chunk)) {
              req.once('drain', pump);
              return;
            }
          }
          req.end();
        };
        pump();
      },
    );
    // The 413 comes back, or (when the close outruns it) the writes fail; either way the server
    // stopped reading long before the end.
    assert.ok(
      streamed.status === 413 || ['EPIPE', 'ECONNRESET'].includes(streamed.error),
      JSON.stringify(streamed),
    );
    assert.ok(streamed.sentMiB < 512, `the server stopped reading (${streamed.sentMiB} MiB sent)`);
    await healthy();

    const deep = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
    const deepBody = await call('POST', '/v1/tenants', {
      key: srv.adminKey,
      body: `{"name":"deep","x":${deep(100)}}`,
    });
    assert.equal(deepBody.status, 400);
    assert.equal(errCode(deepBody), 'E_JSON_TOO_DEEP');
    checkContract(doc, 'POST', '/v1/tenants', deepBody);
    const deepEvent = await call('POST', '/v1/functions/nx-fn/invoke', {
      key: acmeKey,
      body: deep(100_000),
    });
    assert.equal(errCode(deepEvent), 'E_JSON_TOO_DEEP');
    const deepConfig = await call('POST', '/v1/functions/deep/versions', {
      key: acmeKey,
      body: bundleTar(),
      headers: { 'content-type': 'application/x-tar', 'x-isola-config': `{"env":${deep(80)}}` },
    });
    assert.equal(errCode(deepConfig), 'E_JSON_TOO_DEEP');
    // Within the limit is fine.
    const ok = await call('POST', '/v1/functions/nx-fn/invoke', { key: acmeKey, body: deep(64) });
    assert.equal(errCode(ok), 'E_NOT_FOUND');
    await healthy();
    assert.equal((await call('GET', '/v1/tenants/big', { key: srv.adminKey })).status, 404);
  });
});

describe('API security: rate limits', () => {
  let dir: string;
  let srv: TestServer;
  const call = (method: string, route: string, opts: Parameters<typeof api>[3] = {}) =>
    api(srv.url, method, route, opts);

  before(async () => {
    dir = tempDir('api-rate');
    srv = await startServer({
      dataDir: path.join(dir, 'data'),
      env: {
        ...NO_VM,
        ISOLA_RATE_LIMIT_RPS: '5',
        ISOLA_RATE_LIMIT_BURST: '5',
        ISOLA_AUTH_FAILURE_RPS: '1',
        ISOLA_AUTH_FAILURE_BURST: '3',
      },
    });
  });

  after(async () => {
    await srv.stop();
    cleanup(dir);
  });

  test('per key: over its burst a key gets 429 E_RATE_LIMITED with Retry-After; other keys do not', async () => {
    const doc = await served(srv);
    const keys: string[] = [];
    for (const name of ['t1', 't2']) {
      await call('POST', '/v1/tenants', { key: srv.adminKey, json: { name } });
      const k = await call('POST', '/v1/keys', { key: srv.adminKey, json: { tenant: name } });
      keys.push((k.body as { key: string }).key);
    }
    const [k1, k2] = keys as [string, string];
    for (let i = 0; i < 5; i++)
      assert.equal((await call('GET', '/v1/functions', { key: k1 })).status, 200, `request ${i}`);
    const refused = await call('GET', '/v1/functions', { key: k1 });
    assert.equal(refused.status, 429, refused.text);
    assert.equal(errCode(refused), 'E_RATE_LIMITED');
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.deepEqual((refused.body as { error: { details: unknown } }).error.details, {
      retryAfterS: 1,
    });
    checkContract(doc, 'GET', '/v1/functions', refused);
    // Every route counts against the same bucket.
    assert.equal((await call('POST', '/v1/functions/x/invoke', { key: k1 })).status, 429);
    assert.equal((await call('GET', '/v1/functions', { key: k2 })).status, 200, 'own bucket');
    assert.equal((await call('GET', '/v1/tenants', { key: srv.adminKey })).status, 200);
    await sleep(450); // 5/s: two tokens back
    assert.equal((await call('GET', '/v1/functions', { key: k1 })).status, 200);

    // Failed authentications from one address: 3 allowed, then the address waits, whatever key
    // it presents next (a right guess would not be told apart); public routes still answer.
    const bad = `isola_zzzzzzzzzzzz_${'A'.repeat(43)}`;
    for (let i = 0; i < 3; i++)
      assert.equal((await call('GET', '/v1/functions', { key: bad })).status, 401);
    const blocked = await call('GET', '/v1/functions', { key: bad });
    assert.equal(blocked.status, 429, blocked.text);
    assert.equal(errCode(blocked), 'E_RATE_LIMITED');
    assert.ok(Number(blocked.headers.get('retry-after')) >= 1);
    assert.equal((await call('GET', '/v1/functions', { key: k2 })).status, 429);
    assert.equal((await call('GET', '/v1/functions')).status, 429, 'no key at all');
    assert.equal((await call('GET', '/v1/health')).status, 200);
    await sleep(1100);
    assert.equal((await call('GET', '/v1/functions', { key: k2 })).status, 200);
    const m = await call('GET', '/metrics', { key: srv.adminKey });
    assert.match(m.text, /isola_rate_limited_total\{reason="key"\} [1-9]/);
    assert.match(m.text, /isola_rate_limited_total\{reason="auth_failures"\} [1-9]/);
    assert.match(m.text, /isola_auth_failures_total [3-9]/);
  });

  test('a bad limit in the environment stops `isola serve` at start, naming the variable', () => {
    const r = spawnSync(
      process.execPath,
      [path.join(ROOT, 'dist/src/cli/main.js'), 'serve', '--data-dir', path.join(dir, 'never')],
      { env: { ...process.env, ISOLA_RATE_LIMIT_RPS: 'fast' }, encoding: 'utf8', timeout: 30_000 },
    );
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /E_INVALID_ARGUMENT.*ISOLA_RATE_LIMIT_RPS/s);
  });
});

describe('API security: secrets and keys never appear in logs, errors, metrics or the database', () => {
  let dir: string;
  let srv: TestServer;
  const call = (method: string, route: string, opts: Parameters<typeof api>[3] = {}) =>
    api(srv.url, method, route, opts);

  before(async () => {
    dir = tempDir('api-secrets');
    srv = await startServer({ dataDir: path.join(dir, 'data'), env: NO_VM });
  });

  after(async () => {
    await srv.stop();
    cleanup(dir);
  });

  test('a secret value and an API key, sent through every error path, stay hidden', async () => {
    const SECRET = 'zq7-Distinctive-Secret-Value-4f1c9e';
    const replies: ApiReply[] = [];
    const c = async (method: string, route: string, opts: Parameters<typeof api>[3] = {}) => {
      const r = await call(method, route, opts);
      replies.push(r);
      return r;
    };
    await c('POST', '/v1/tenants', { key: srv.adminKey, json: { name: 'vaulted' } });
    const made = await call('POST', '/v1/keys', {
      key: srv.adminKey,
      json: { tenant: 'vaulted', description: 'the key under test' },
    });
    const KEY = (made.body as { key: string }).key;
    const KEY_SECRET = KEY.slice('isola_'.length + 13);
    const key = { key: KEY };
    const tar = { body: bundleTar(), headers: { 'content-type': 'application/x-tar' } };
    assert.equal((await c('POST', '/v1/functions/vault/versions', { ...key, ...tar })).status, 201);
    const set = await c('PUT', '/v1/functions/vault/secrets/API_TOKEN', {
      ...key,
      json: { value: SECRET },
    });
    assert.equal(set.status, 200, set.text);

    // Bad requests that mention the secret's name and carry its value.
    const bad: Array<[string, string, Parameters<typeof api>[3]]> = [
      ['PUT', '/v1/functions/vault/secrets/bad-name!', { ...key, json: { value: SECRET } }],
      ['PUT', '/v1/functions/vault/secrets/ISOLA_X', { ...key, json: { value: SECRET } }],
      ['PUT', '/v1/functions/vault/secrets/API_TOKEN', { ...key, json: { value: SECRET, x: 1 } }],
      ['PUT', '/v1/functions/vault/secrets/API_TOKEN', { ...key, json: { value: [SECRET] } }],
      ['PUT', '/v1/functions/vault/secrets/API_TOKEN', { ...key, json: { value: 7, n: SECRET } }],
      ['PUT', '/v1/functions/vault/secrets/API_TOKEN', { ...key, body: `{"value": ${SECRET}}` }],
      ['PUT', '/v1/functions/vault/secrets/API_TOKEN', { ...key, body: `{"value": "${SECRET}"` }],
      ['PUT', '/v1/functions/vault/secrets/API_TOKEN', { ...key, body: SECRET }],
      ['PUT', '/v1/functions/nope/secrets/API_TOKEN', { ...key, json: { value: SECRET } }],
      ['GET', '/v1/functions/vault/secrets/API_TOKEN', key],
      ['POST', '/v1/functions', { ...key, json: { name: 'other', runtime: SECRET } }],
      [
        'POST',
        '/v1/functions',
        { ...key, json: { name: 'other', runtime: 'nodejs20', x: SECRET } },
      ],
      ['PATCH', '/v1/functions/vault', { ...key, json: { env: { API_TOKEN: [SECRET] } } }],
      ['PATCH', '/v1/functions/vault', { ...key, json: { env: { 'bad name': SECRET } } }],
      ['PATCH', '/v1/functions/vault', { ...key, body: `{"env": {"A": ${SECRET}}}` }],
      ['PUT', '/v1/functions/vault/aliases/live', { ...key, json: { version: SECRET } }],
      ['POST', '/v1/functions/vault/invoke', { ...key, body: `{"token": ${SECRET}}` }],
      ['POST', '/v1/functions/vault/invoke', { ...key, body: `[[[[${SECRET}` }],
      [
        'POST',
        '/v1/functions/vault/versions',
        { ...key, body: bundleTar(), headers: { 'x-isola-config': `{"env":{"A":${SECRET}}}` } },
      ],
      [
        'POST',
        '/v1/functions/vault/versions',
        { ...key, json: { image: 'x', description: 7, token: SECRET } },
      ],
      ['POST', '/v1/keys', { ...key, json: { description: 7, secret: SECRET } }],
      ['POST', '/v1/tenants', { key: srv.adminKey, json: { name: SECRET } }],
      ['PATCH', '/v1/tenants/vaulted', { key: srv.adminKey, json: { maxConcurrency: SECRET } }],
      // The key where it does not belong: a path, a header, a query, a malformed bearer.
      ['DELETE', `/v1/keys/${KEY}`, key],
      ['GET', '/v1/functions', { key: srv.adminKey, headers: { 'x-isola-tenant': KEY } }],
      ['GET', `/v1/usage?tenant=${KEY}`, { key: srv.adminKey }],
      ['GET', `/v1/usage?since=${KEY}`, key],
      ['GET', '/v1/functions', { headers: { authorization: `Bearer ${KEY}x` } }],
      ['GET', '/v1/functions', { headers: { authorization: `Bearer ${KEY} ${KEY}` } }],
      ['GET', '/v1/functions', { headers: { authorization: `Basic ${KEY}` } }],
      ['GET', `/vaulted/vault?k=${KEY}`, { headers: { authorization: `Token ${KEY}` } }],
      ['GET', '/v1/tenants', key],
    ];
    for (const [method, route, opts] of bad) {
      const r = await c(method, route, opts);
      assert.ok(r.status >= 400 && r.status < 500, `${method} ${route}: ${r.status} ${r.text}`);
    }
    // The reads that list what the function has: by name only.
    for (const route of [
      '/v1/functions/vault',
      '/v1/functions/vault/secrets',
      '/v1/functions/vault/versions',
      '/v1/functions/vault/logs',
      '/v1/keys',
    ])
      assert.equal((await c('GET', route, key)).status, 200, route);
    const audit = await c('GET', '/v1/audit?tenant=vaulted', { key: srv.adminKey });
    assert.ok(audit.text.includes('vault/API_TOKEN'), 'the audit log names the secret');
    const metrics = await c('GET', '/metrics', { key: srv.adminKey });
    assert.equal(metrics.status, 200);

    // Any 10 characters in a row of the secret or the key's secret part count: error messages
    // that quote input (V8's JSON.parse does) cut it short.
    const fragments = [SECRET, KEY_SECRET].flatMap((s) =>
      Array.from({ length: s.length - 9 }, (_, i) => s.slice(i, i + 10)),
    );
    const leaks = (text: string) => fragments.filter((f) => text.includes(f));
    for (const r of replies) assert.deepEqual(leaks(r.text), [], `a reply leaks: ${r.text}`);
    assert.deepEqual(leaks(srv.output()), [], 'the server output leaks');
    // At rest: every file of the data directory (database, its WAL, keys), as bytes.
    const files: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d)) {
        const p = path.join(d, e);
        if (statSync(p).isDirectory()) walk(p);
        else files.push(p);
      }
    };
    walk(srv.dataDir);
    assert.ok(files.some((f) => f.endsWith('isola.db')));
    for (const f of files) {
      const bytes = readFileSync(f);
      for (const s of fragments)
        assert.equal(bytes.includes(s), false, `${path.relative(srv.dataDir, f)} holds a secret`);
    }
    // Nothing leaked, and not because nothing was stored: the secret's name is there.
    assert.ok(files.some((f) => readFileSync(f).includes('API_TOKEN')));
  });
});

describe('API security: the audit log', () => {
  let dir: string;
  let srv: TestServer;
  const call = (method: string, route: string, opts: Parameters<typeof api>[3] = {}) =>
    api(srv.url, method, route, opts);

  before(async () => {
    dir = tempDir('api-audit');
    srv = await startServer({ dataDir: path.join(dir, 'data'), env: NO_VM });
  });

  after(async () => {
    await srv.stop();
    cleanup(dir);
  });

  test('every state-changing call is recorded with time, key, action, target, request id, source and result', async () => {
    const doc = await served(srv);
    const t0 = Date.now();
    const admin = { key: srv.adminKey };
    const adminId = /^isola_([a-z0-9]{12})_/.exec(srv.adminKey)![1]!;
    const expected: Array<{
      requestId: string;
      keyId: string;
      action: string;
      target: string;
      result: string;
      status: number;
      tenant: string | null;
    }> = [];
    const act = async (
      method: string,
      route: string,
      opts: Parameters<typeof api>[3],
      e: { keyId: string; action: string; target: string; tenant?: string | null },
      status: number,
      result = 'ok',
    ) => {
      const r = await call(method, route, opts);
      assert.equal(r.status, status, `${method} ${route}: ${r.text}`);
      expected.push({
        requestId: r.headers.get('x-isola-request-id')!,
        result,
        status,
        tenant: 'audited',
        ...e,
      });
      return r;
    };
    const a = (action: string, target: string, tenant: string | null = 'audited') => ({
      keyId: adminId,
      action,
      target,
      tenant,
    });
    await act(
      'POST',
      '/v1/tenants',
      { ...admin, json: { name: 'audited', maxConcurrency: 7 } },
      a('tenant.create', 'audited'),
      201,
    );
    await act(
      'PATCH',
      '/v1/tenants/audited',
      { ...admin, json: { maxMemoryMiB: 1024 } },
      a('tenant.update', 'audited'),
      200,
    );
    const made = await call('POST', '/v1/keys', { ...admin, json: { tenant: 'audited' } });
    const { key: tKey, id: tId } = made.body as { key: string; id: string };
    expected.push({
      requestId: made.headers.get('x-isola-request-id')!,
      keyId: adminId,
      action: 'key.create',
      target: tId,
      tenant: 'audited',
      result: 'ok',
      status: 201,
    });
    const t = (action: string, target: string) => ({ keyId: tId, action, target });
    const tk = { key: tKey };
    const SECRET = 'audit-secret-value-93kd';
    const ENV_VALUE = 'env-value-not-recorded-77';
    await act(
      'POST',
      '/v1/functions',
      { ...tk, json: { name: 'f1', runtime: 'nodejs20' } },
      t('function.create', 'f1'),
      201,
    );
    await act(
      'POST',
      '/v1/functions/f1/versions',
      { ...tk, body: bundleTar(), headers: { 'content-type': 'application/x-tar' } },
      t('function.deploy', 'f1'),
      201,
    );
    await act(
      'PATCH',
      '/v1/functions/f1',
      { ...tk, json: { env: { A: ENV_VALUE } } },
      t('function.update', 'f1'),
      200,
    );
    await act(
      'PUT',
      '/v1/functions/f1/aliases/beta',
      { ...tk, json: { version: 1 } },
      t('alias.put', 'f1/beta'),
      200,
    );
    await act('DELETE', '/v1/functions/f1/aliases/beta', tk, t('alias.delete', 'f1/beta'), 200);
    await act(
      'PUT',
      '/v1/functions/f1/secrets/S',
      { ...tk, json: { value: SECRET } },
      t('secret.put', 'f1/S'),
      200,
    );
    await act('DELETE', '/v1/functions/f1/secrets/S', tk, t('secret.delete', 'f1/S'), 200);
    // Refused and failed calls are recorded too, with their code.
    await act(
      'DELETE',
      '/v1/tenants/audited',
      tk,
      { ...t('tenant.delete', 'audited') },
      403,
      'E_FORBIDDEN',
    );
    await act('DELETE', '/v1/functions/nope', tk, t('function.delete', 'nope'), 404, 'E_NOT_FOUND');
    await act(
      'PUT',
      '/v1/functions/f1/secrets/S',
      { ...tk, json: { value: 'x' } },
      t('secret.put', 'f1/S'),
      400,
      'E_INVALID_ARGUMENT',
    );
    await act('DELETE', '/v1/functions/f1', tk, t('function.delete', 'f1'), 200);
    assert.equal((await call('GET', '/v1/audit', tk)).status, 403, 'tenant keys cannot read it');
    await act('DELETE', `/v1/keys/${tId}?self=1`, tk, t('key.revoke', tId), 200);
    // Calls without a valid key are not (the 401s are counted in metrics instead).
    assert.equal((await call('DELETE', '/v1/tenants/audited', tk)).status, 401);
    assert.equal((await call('DELETE', '/v1/tenants/audited')).status, 401);
    await act('DELETE', '/v1/tenants/audited', admin, a('tenant.delete', 'audited'), 200);
    // Reads are not audited.
    await call('GET', '/v1/tenants', admin);

    // Right after the replies: everything is there, newest first, even for a deleted tenant.
    const r = await call('GET', '/v1/audit?tenant=audited', admin);
    assert.equal(r.status, 200, r.text);
    checkContract(doc, 'GET', '/v1/audit', r);
    const { entries, next } = r.body as {
      entries: Array<{
        seq: number;
        ts: number;
        keyId: string;
        role: string;
        tenant: string | null;
        action: string;
        target: string;
        requestId: string;
        source: string;
        result: string;
        status: number;
        details: Record<string, unknown>;
      }>;
      next: number | null;
    };
    assert.equal(next, null);
    assert.deepEqual(
      entries.map((e) => ({
        requestId: e.requestId,
        keyId: e.keyId,
        action: e.action,
        target: e.target,
        result: e.result,
        status: e.status,
        tenant: e.tenant,
      })),
      [...expected].reverse(),
    );
    for (const e of entries) {
      assert.ok(e.ts >= t0 && e.ts <= Date.now(), 'time');
      assert.equal(e.source, '127.0.0.1');
      assert.equal(e.role, e.keyId === adminId ? 'admin' : 'tenant');
    }
    const byAction = (action: string) => entries.find((e) => e.action === action)!;
    assert.deepEqual(byAction('tenant.create').details, { limits: { maxConcurrency: 7 } });
    assert.deepEqual(byAction('tenant.update').details, { limits: { maxMemoryMiB: 1024 } });
    assert.deepEqual(byAction('key.create').details, { role: 'tenant' });
    assert.deepEqual(byAction('function.update').details, { fields: ['env'], version: 2 });
    assert.equal(byAction('function.deploy').details.version, 1);
    assert.deepEqual(byAction('alias.put').details, { version: 1 });
    // Names, never values, never the key's text.
    for (const s of [SECRET, ENV_VALUE, tKey]) assert.ok(!r.text.includes(s), 'a value leaked');

    // Filters and paging.
    const q = async (query: string) => {
      const x = await call('GET', `/v1/audit?${query}`, admin);
      assert.equal(x.status, 200, x.text);
      return x.body as typeof r.body & { entries: typeof entries; next: number | null };
    };
    assert.deepEqual(
      (await q('action=secret.put')).entries.map((e) => e.result),
      ['E_INVALID_ARGUMENT', 'ok'],
    );
    assert.equal(
      (await q(`key=${tId}`)).entries.length,
      expected.filter((e) => e.keyId === tId).length,
    );
    assert.equal((await q(`since=${Date.now() + 60_000}`)).entries.length, 0);
    assert.equal((await q(`until=${t0}`)).entries.length, 0);
    const pages: number[] = [];
    let before: number | null = null;
    for (let i = 0; i < 20; i++) {
      const page: { entries: typeof entries; next: number | null } = await q(
        `tenant=audited&limit=4${before !== null ? `&before=${before}` : ''}`,
      );
      pages.push(...page.entries.map((e) => e.seq));
      before = page.next;
      if (before === null) break;
    }
    assert.deepEqual(
      pages,
      entries.map((e) => e.seq),
    );
    for (const bad of ['limit=0', 'limit=5000', 'before=x', 'since=yesterday'])
      assert.equal((await call('GET', `/v1/audit?${bad}`, admin)).status, 400, bad);

    // The CLI.
    const env = { ISOLA_URL: srv.url, ISOLA_API_KEY: srv.adminKey };
    const j = cli(['audit', '--tenant', 'audited', '--action', 'function.delete', '--json'], env);
    assert.equal(j.code, 0, j.stderr);
    assert.deepEqual(
      (JSON.parse(j.stdout) as { entries: Array<{ target: string }> }).entries.map((e) => e.target),
      ['f1', 'nope'],
    );
    const table = cli(['audit', '--tenant', 'audited', '--key-id', tId, '--limit', '3'], env);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^SEQ\s+TIME\s+KEY\s+TENANT\s+ACTION/);
    assert.match(table.stdout, /key\.revoke/);
    assert.match(table.stdout, /# older: isola audit --before \d+/);
    const denied = cli(['audit'], { ISOLA_URL: srv.url, ISOLA_API_KEY: tKey });
    assert.equal(denied.code, 8, 'a revoked key is refused');
  });
});
