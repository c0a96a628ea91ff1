// OCI hooks from config.json run on the host at the right moments, with the state on stdin;
// a failing prestart hook fails `create` and leaves nothing behind.
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { leftovers } from './helpers.js';
import { makeBundle, runtime, tempBase } from './oci-helpers.js';

const base = tempBase();
const root = path.join(base, 'state');
after(() => rmSync(base, { recursive: true, force: true }));

/** A hook that appends "<name> <status from the state JSON>" to the trace file. */
function hook(trace: string, name: string): { path: string; args: string[] } {
  return {
    path: '/bin/sh',
    args: [
      'sh',
      '-c',
      `st=$(sed -n 's/.*"status":"\\([a-z]*\\)".*/\\1/p'); echo "${name} $st" >> ${trace}`,
    ],
  };
}

test('hooks run in order around create, start and delete, with the state on stdin', () => {
  const trace = path.join(base, 'trace');
  const b = makeBundle(base, 'b-hooks', (s) => {
    s.process.args = ['sh', '-c', 'echo ran'];
    s.hooks = Object.fromEntries(
      [
        'prestart',
        'createRuntime',
        'createContainer',
        'startContainer',
        'poststart',
        'poststop',
      ].map((n) => [n, [hook(trace, n)]]),
    );
  });
  const r = runtime(root, ['run', '--bundle', b.dir, 'c-hooks']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'ran\n');
  const lines = readFileSync(trace, 'utf8').trim().split('\n');
  assert.deepEqual(lines.slice(0, 4), [
    'prestart created',
    'createRuntime created',
    'createContainer created',
    'startContainer created',
  ]);
  // poststart runs after start (the container may already have finished); poststop runs last.
  assert.match(lines[4]!, /^poststart (running|stopped)$/);
  assert.equal(lines[5], 'poststop stopped');
});

test('a failing prestart hook fails create and leaves no container or VM', () => {
  const before = leftovers();
  const b = makeBundle(base, 'b-badhook', (s) => {
    s.process.args = ['true'];
    s.hooks = {
      prestart: [{ path: '/bin/sh', args: ['sh', '-c', 'echo hook-says-no >&2; exit 9'] }],
    };
  });
  const r = runtime(root, ['create', '--bundle', b.dir, 'c-badhook']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /E_OCI_HOOK: prestart hook .*hook-says-no/);
  assert.equal(runtime(root, ['state', 'c-badhook']).code, 1);
  assert.deepEqual(leftovers(), before);
});
