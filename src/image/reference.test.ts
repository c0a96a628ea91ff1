import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IsolaError } from '../errors.js';
import {
  familiarName,
  formatReference,
  isLoopbackRegistry,
  manifestReference,
  parseReference,
} from './reference.js';

const D = `sha256:${'a'.repeat(64)}`;

test('references normalise like Docker', () => {
  const cases: Array<[string, string]> = [
    ['alpine', 'docker.io/library/alpine:latest'],
    ['alpine:3.20', 'docker.io/library/alpine:3.20'],
    ['library/alpine', 'docker.io/library/alpine:latest'],
    ['docker.io/alpine', 'docker.io/library/alpine:latest'],
    ['index.docker.io/library/alpine:1', 'docker.io/library/alpine:1'],
    ['user/app', 'docker.io/user/app:latest'],
    ['ghcr.io/o/r/deep/path:v1.2-rc_3', 'ghcr.io/o/r/deep/path:v1.2-rc_3'],
    ['localhost/app', 'localhost/app:latest'],
    ['localhost:5000/app:1', 'localhost:5000/app:1'],
    ['127.0.0.1:5000/a/b', '127.0.0.1:5000/a/b:latest'],
    ['[::1]:5000/a', '[::1]:5000/a:latest'],
    ['Registry/app', 'Registry/app:latest'],
    [`alpine@${D}`, `docker.io/library/alpine@${D}`],
    [`alpine:3@${D}`, `docker.io/library/alpine:3@${D}`],
    ['a__b/c.d-e--f', 'docker.io/a__b/c.d-e--f:latest'],
  ];
  for (const [input, want] of cases) assert.equal(formatReference(parseReference(input)), want);
});

test('tag, digest and what is asked of the registry', () => {
  const r = parseReference(`127.0.0.1:5000/x:t@${D}`);
  assert.equal(r.registry, '127.0.0.1:5000');
  assert.equal(r.repository, 'x');
  assert.equal(r.tag, 't');
  assert.equal(r.digest, D);
  assert.equal(manifestReference(r), D);
  assert.equal(manifestReference(parseReference('x:t')), 't');
  assert.equal(familiarName(parseReference('alpine')), 'alpine:latest');
  assert.equal(familiarName(parseReference('user/app:2')), 'user/app:2');
  assert.equal(familiarName(parseReference('q.io/a:1')), 'q.io/a:1');
});

test('bad references are rejected with E_IMAGE_REFERENCE', () => {
  const bad = [
    '',
    ' ',
    'UPPER',
    'a/UPPER',
    'a:',
    'a:-tag',
    `a:${'t'.repeat(129)}`,
    'a@sha256:abc',
    `a@sha256:${'A'.repeat(64)}`,
    `a@md5:${'a'.repeat(32)}`,
    'a@',
    '/a',
    'a/',
    'a//b',
    '-a',
    'a-',
    'a..b',
    'a b',
    'host:port:x/a',
    `r.io/${'a'.repeat(260)}`,
    ':tag',
  ];
  for (const input of bad) {
    assert.throws(
      () => parseReference(input),
      (e: unknown) => e instanceof IsolaError && e.code === 'E_IMAGE_REFERENCE',
      `expected "${input}" to be rejected`,
    );
  }
});

test('loopback registries', () => {
  assert.ok(isLoopbackRegistry('127.0.0.1:5000'));
  assert.ok(isLoopbackRegistry('localhost'));
  assert.ok(isLoopbackRegistry('[::1]:5000'));
  assert.ok(!isLoopbackRegistry('docker.io'));
  assert.ok(!isLoopbackRegistry('128.0.0.1:5000'));
  assert.ok(!isLoopbackRegistry('localhost.evil.com'));
});
