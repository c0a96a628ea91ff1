import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IsolaError } from '../errors.js';
import { type CompiledRoute, type Route, compile, match } from './router.js';

const handler = async () => undefined;
const route = (method: string, path: string): Route => ({ method, path, access: 'any', handler });

const routes = compile([
  route('GET', '/v1/functions'),
  route('POST', '/v1/functions'),
  route('GET', '/v1/functions/{name}'),
  route('DELETE', '/v1/functions/{name}'),
  route('GET', '/v1/functions/{name}/versions/{version}'),
  route('GET', '/v1/openapi.json'),
  route('GET', '/v1/a+b/(x)|[y]$^*?'),
]);

function found(r: ReturnType<typeof match>): {
  route: CompiledRoute;
  params: Record<string, string>;
} {
  assert.ok(r && 'route' in r, `expected a match, got ${JSON.stringify(r)}`);
  return r;
}

describe('compile', () => {
  test('names the parameters in order', () => {
    const [r] = compile([route('GET', '/x/{a}/y/{b_2}')]);
    assert.deepEqual(r!.names, ['a', 'b_2']);
    assert.ok(r!.re.test('/x/1/y/2'));
  });
});

describe('match', () => {
  test('literal routes', () => {
    const r = found(match(routes, 'POST', '/v1/functions'));
    assert.equal(r.route.method, 'POST');
    assert.equal(r.route.path, '/v1/functions');
    assert.deepEqual(r.params, {});
  });

  test('parameters are extracted and percent-decoded', () => {
    const r = found(match(routes, 'GET', '/v1/functions/hello%20w%C3%B6rld/versions/3'));
    assert.equal(r.route.path, '/v1/functions/{name}/versions/{version}');
    assert.deepEqual(r.params, { name: 'hello wörld', version: '3' });
    // An encoded slash stays inside one parameter.
    assert.deepEqual(found(match(routes, 'GET', '/v1/functions/a%2Fb')).params, { name: 'a/b' });
  });

  test('a parameter never spans segments or is empty', () => {
    assert.equal(match(routes, 'GET', '/v1/functions/a/b'), null);
    assert.equal(match(routes, 'GET', '/v1/functions/'), null);
  });

  test('method mismatch returns the allowed methods', () => {
    assert.deepEqual(match(routes, 'PUT', '/v1/functions'), { methods: ['GET', 'POST'] });
    assert.deepEqual(match(routes, 'POST', '/v1/functions/x'), { methods: ['GET', 'DELETE'] });
  });

  test('no match returns null', () => {
    for (const p of ['/', '/v1', '/v1/functionsx', '/v2/functions', '/v1/functions/x/versions']) {
      assert.equal(match(routes, 'GET', p), null, p);
    }
  });

  test('regex special characters in literal paths are matched literally', () => {
    assert.ok(found(match(routes, 'GET', '/v1/openapi.json')));
    assert.equal(match(routes, 'GET', '/v1/openapiXjson'), null);
    assert.ok(found(match(routes, 'GET', '/v1/a+b/(x)|[y]$^*?')));
    for (const p of ['/v1/aab/(x)|[y]$^*?', '/v1/a+b/x', '/v1/a+b/(x)', '/v1/a+b/(x)|y$^*?']) {
      assert.equal(match(routes, 'GET', p), null, p);
    }
  });

  test('a malformed percent-encoding is a client error, not an internal one', () => {
    assert.throws(
      () => match(routes, 'GET', '/v1/functions/%E0%A4%A'),
      (e: unknown) => e instanceof IsolaError && e.code === 'E_INVALID_ARGUMENT',
    );
  });
});
