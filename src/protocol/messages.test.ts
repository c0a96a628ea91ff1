import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FRAME_BODY_CHUNK } from './frame.js';
import { OPS, SIGNALS, parseGuestMessage, parseRequest } from './messages.js';

/** JSON for failure messages; some test values are too deep for JSON.stringify. */
function show(v: unknown): string {
  try {
    return String(JSON.stringify(v)).slice(0, 200);
  } catch {
    return '(unprintable value)';
  }
}

/** Asserts that parseRequest rejects `v`, returns the error string and the echoed id. */
function rejects(v: unknown, pattern?: RegExp): { id: number | null; error: string } {
  const r = parseRequest(v);
  if (r.ok) assert.fail(`expected ${show(v)} to be rejected`);
  if (pattern) assert.match(r.error, pattern);
  return { id: r.id, error: r.error };
}

function accepts(v: Record<string, unknown>): void {
  const r = parseRequest(v);
  assert.ok(r.ok, `expected ${JSON.stringify(v)} to be accepted, got ${r.ok ? '' : r.error}`);
  assert.equal(r.req.op, v.op);
  assert.equal(r.req.id, v.id);
}

describe('parseRequest accepts every valid op', () => {
  const valid: Record<string, Record<string, unknown>[]> = {
    hello: [{ id: 1, op: 'hello', version: 1, nonce: 'abc' }],
    info: [{ id: 0, op: 'info' }],
    exec: [
      { id: 2, op: 'exec', argv: ['/bin/true'] },
      {
        id: 3,
        op: 'exec',
        argv: ['/bin/sh', '-c', 'echo hi'],
        env: { A: 'b', EMPTY: '' },
        cwd: '/tmp',
        uid: 0,
        gid: 0xfffffffe,
        stdin: true,
      },
    ],
    stdin: [
      { id: 4, op: 'stdin', execId: 1 },
      { id: 5, op: 'stdin', execId: 1, eof: true },
    ],
    signal: SIGNALS.map((signal, i) => ({ id: 10 + i, op: 'signal', execId: 1, signal })),
    wait: [{ id: 6, op: 'wait', execId: 0 }],
    readFile: [
      { id: 7, op: 'readFile', path: '/etc/hostname' },
      { id: 8, op: 'readFile', path: '/x', offset: 10, length: FRAME_BODY_CHUNK },
      { id: 9, op: 'readFile', path: '/x', length: 0 },
    ],
    writeFile: [
      { id: 30, op: 'writeFile', path: '/tmp/x' },
      { id: 31, op: 'writeFile', path: '/tmp/x', mode: 0o7777, append: true },
    ],
    shutdown: [{ id: Number.MAX_SAFE_INTEGER, op: 'shutdown' }],
    connect: [
      { id: 40, op: 'connect', port: 1 },
      { id: 41, op: 'connect', port: 65535 },
    ],
    send: [
      { id: 42, op: 'send', connId: 1 },
      { id: 43, op: 'send', connId: 1, eof: true },
    ],
    close: [{ id: 44, op: 'close', connId: 7 }],
  };

  test('the cases cover every op in OPS', () => {
    assert.deepEqual(Object.keys(valid).sort(), [...OPS].sort());
  });

  for (const [op, cases] of Object.entries(valid)) {
    test(op, () => {
      for (const c of cases) accepts(c);
    });
  }
});

describe('parseRequest rejects malformed requests', () => {
  test('connect, send, close: port in range, integer connId, boolean eof', () => {
    rejects({ id: 1, op: 'connect', port: 0 }, /port/);
    rejects({ id: 1, op: 'connect', port: 65536 }, /port/);
    rejects({ id: 1, op: 'connect', port: '80' }, /port/);
    rejects({ id: 1, op: 'connect' }, /port/);
    rejects({ id: 1, op: 'send', connId: -1 }, /connId/);
    rejects({ id: 1, op: 'send', connId: 1, eof: 'yes' }, /eof/);
    rejects({ id: 1, op: 'close' }, /connId/);
    rejects({ id: 1, op: 'connect', port: 80, host: '10.0.0.1' }, /unknown field/);
  });

  test('non-objects', () => {
    for (const v of [null, undefined, 1, 'info', true, [], [{ id: 1, op: 'info' }]]) {
      const r = rejects(v, /object/);
      assert.equal(r.id, null);
    }
  });

  test('missing, negative, fractional, unsafe or non-numeric id', () => {
    for (const id of [
      undefined,
      -1,
      1.5,
      Number.MAX_SAFE_INTEGER + 1,
      '1',
      null,
      Number.NaN,
      Number.POSITIVE_INFINITY,
    ]) {
      const r = rejects({ id, op: 'info' }, /id/);
      assert.equal(r.id, null);
    }
    rejects({ op: 'info' }, /id/);
  });

  test('unknown op: error starts with "unknown op" and echoes the id', () => {
    for (const op of [
      'reboot',
      '',
      'INFO',
      'toString',
      '__proto__',
      42,
      null,
      undefined,
      { op: 'info' },
    ]) {
      const r = rejects({ id: 17, op });
      assert.ok(r.error.startsWith('unknown op'), r.error);
      assert.equal(r.id, 17);
    }
  });

  test('unknown op error message is bounded for huge values', () => {
    const r = rejects({ id: 1, op: 'x'.repeat(100_000) });
    assert.ok(r.error.startsWith('unknown op'));
    assert.ok(r.error.length < 200, `error is ${r.error.length} chars`);
  });

  test('deeply nested values are rejected, not thrown on (agent crash regression)', () => {
    // JSON.parse accepts nesting far deeper than JSON.stringify can print; parseRequest once
    // stringified an unknown op whole, overflowed the stack and took the agent down with it.
    const depth = 50_000;
    const nestedArray = JSON.parse(`${'['.repeat(depth)}${']'.repeat(depth)}`);
    const nestedObject = JSON.parse(`${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`);
    assert.throws(() => JSON.stringify(nestedArray), RangeError);
    for (const op of [nestedArray, nestedObject]) {
      const r = rejects({ id: 5, op });
      assert.ok(r.error.startsWith('unknown op'), r.error);
      assert.equal(r.id, 5);
    }
    for (const field of ['argv', 'env', 'cwd', 'uid']) {
      rejects({ id: 5, op: 'exec', argv: ['/bin/true'], [field]: nestedArray });
    }
    rejects({ id: 5, op: 'signal', execId: 1, signal: nestedObject }, /signal/);
    rejects({ id: nestedArray, op: 'info' }, /id/);
  });

  test('unknown fields, also fields legal for another op', () => {
    const r = rejects({ id: 3, op: 'info', path: '/x' }, /unknown field "path"/);
    assert.equal(r.id, 3);
    rejects({ id: 3, op: 'exec', argv: ['/bin/true'], execId: 1 }, /unknown field "execId"/);
    rejects({ id: 3, op: 'shutdown', force: true }, /unknown field/);
  });

  test('exec argv: missing, empty, not an array, non-string, NUL', () => {
    rejects({ id: 1, op: 'exec' }, /argv/);
    rejects({ id: 1, op: 'exec', argv: [] }, /argv/);
    rejects({ id: 1, op: 'exec', argv: '/bin/true' }, /argv/);
    rejects({ id: 1, op: 'exec', argv: ['/bin/echo', 1] }, /argv/);
    rejects({ id: 1, op: 'exec', argv: [null] }, /argv/);
    rejects({ id: 1, op: 'exec', argv: ['/bin/echo', 'a\0b'] }, /NUL/);
    rejects({ id: 1, op: 'exec', argv: new Array(4097).fill('x') }, /argv/);
  });

  test('exec env: not an object, key with "=", empty key, NUL, non-string value', () => {
    rejects({ id: 1, op: 'exec', argv: ['/bin/true'], env: ['A=b'] }, /env/);
    rejects({ id: 1, op: 'exec', argv: ['/bin/true'], env: 'A=b' }, /env/);
    rejects({ id: 1, op: 'exec', argv: ['/bin/true'], env: { 'A=B': 'c' } }, /env entry "A=B"/);
    rejects({ id: 1, op: 'exec', argv: ['/bin/true'], env: { '': 'c' } }, /env/);
    rejects({ id: 1, op: 'exec', argv: ['/bin/true'], env: { A: 'x\0y' } }, /env/);
    rejects({ id: 1, op: 'exec', argv: ['/bin/true'], env: { 'A\0': 'x' } }, /env/);
    rejects({ id: 1, op: 'exec', argv: ['/bin/true'], env: { A: 1 } }, /env/);
  });

  test('exec cwd must be absolute', () => {
    rejects({ id: 1, op: 'exec', argv: ['/bin/true'], cwd: 'tmp' }, /cwd/);
    rejects({ id: 1, op: 'exec', argv: ['/bin/true'], cwd: '' }, /cwd/);
    rejects({ id: 1, op: 'exec', argv: ['/bin/true'], cwd: 5 }, /cwd/);
    rejects({ id: 1, op: 'exec', argv: ['/bin/true'], cwd: `/${'a'.repeat(4096)}` }, /cwd/);
  });

  test('exec uid/gid out of range', () => {
    for (const bad of [-1, 0xffffffff, 1.5, '0', null]) {
      rejects({ id: 1, op: 'exec', argv: ['/bin/true'], uid: bad }, /uid/);
      rejects({ id: 1, op: 'exec', argv: ['/bin/true'], gid: bad }, /gid/);
    }
  });

  test('exec stdin must be a boolean', () => {
    rejects({ id: 1, op: 'exec', argv: ['/bin/true'], stdin: 1 }, /stdin/);
  });

  test('hello needs an integer version and a short string nonce', () => {
    rejects({ id: 1, op: 'hello', nonce: 'n' }, /version/);
    rejects({ id: 1, op: 'hello', version: '1', nonce: 'n' }, /version/);
    rejects({ id: 1, op: 'hello', version: 1 }, /nonce/);
    rejects({ id: 1, op: 'hello', version: 1, nonce: 'n'.repeat(257) }, /nonce/);
  });

  test('stdin, signal, wait need an integer execId', () => {
    for (const op of ['stdin', 'signal', 'wait']) {
      const extra = op === 'signal' ? { signal: 'SIGTERM' } : {};
      rejects({ id: 1, op, ...extra }, /execId/);
      rejects({ id: 1, op, execId: -1, ...extra }, /execId/);
      rejects({ id: 1, op, execId: 1.5, ...extra }, /execId/);
      accepts({ id: 1, op, execId: 1, ...extra });
    }
    rejects({ id: 1, op: 'stdin', execId: 1, eof: 'yes' }, /eof/);
  });

  test('signal not in SIGNALS', () => {
    for (const signal of ['SIGSEGV', 'sigterm', 'TERM', 9, '', undefined]) {
      assert.ok(!(SIGNALS as readonly unknown[]).includes(signal));
      rejects({ id: 1, op: 'signal', execId: 1, signal }, /signal/);
    }
  });

  test('readFile: relative path, bad offset, length above FRAME_BODY_CHUNK', () => {
    rejects({ id: 1, op: 'readFile', path: 'etc/passwd' }, /absolute/);
    rejects({ id: 1, op: 'readFile' }, /absolute/);
    rejects({ id: 1, op: 'readFile', path: '/x', offset: -1 }, /offset/);
    rejects({ id: 1, op: 'readFile', path: '/x', length: FRAME_BODY_CHUNK + 1 }, /length/);
    rejects({ id: 1, op: 'readFile', path: '/x', length: -1 }, /length/);
  });

  test('writeFile: relative path, mode above 0o7777, non-boolean append', () => {
    rejects({ id: 1, op: 'writeFile', path: 'x' }, /absolute/);
    rejects({ id: 1, op: 'writeFile', path: '/x', mode: 0o10000 }, /mode/);
    rejects({ id: 1, op: 'writeFile', path: '/x', mode: -1 }, /mode/);
    rejects({ id: 1, op: 'writeFile', path: '/x', append: 1 }, /append/);
  });
});

describe('parseGuestMessage', () => {
  test('accepts events', () => {
    for (const v of [
      { ev: 'ready', version: 1, agentVersion: '0.1.0', bootUptimeSec: 1.2 },
      { ev: 'stdout', execId: 1 },
      { ev: 'stderr', execId: 2 },
      { ev: 'exit', execId: 3, exitCode: 0, signal: null },
      { ev: 'exit', execId: 3, exitCode: null, signal: 'SIGKILL' },
    ]) {
      const r = parseGuestMessage(v);
      assert.ok(r.ok, JSON.stringify(v));
      assert.deepEqual(r.msg, v);
    }
  });

  test('accepts responses, ok and error, and error responses with id null', () => {
    for (const v of [
      { id: 1, ok: true },
      { id: 2, ok: true, result: { execId: 1, pid: 5 } },
      { id: 3, ok: false, error: { code: 'E_GUEST_IO', message: 'nope' } },
      { id: null, ok: false, error: { code: 'E_AGENT_PROTOCOL', message: 'bad frame magic' } },
    ]) {
      const r = parseGuestMessage(v);
      assert.ok(r.ok, JSON.stringify(v));
      assert.deepEqual(r.msg, v);
    }
  });

  test('rejects malformed messages', () => {
    const bad: unknown[] = [
      null,
      'ready',
      [],
      { ev: 'ready' },
      { ev: 'ready', version: '1' },
      { ev: 'stdout' },
      { ev: 'stderr', execId: -1 },
      { ev: 'exit', execId: 'x' },
      { ev: 'bogus', execId: 1 },
      { id: 1 },
      { id: 1, ok: 'true' },
      { ok: true },
      { id: null, ok: true },
      { id: -1, ok: true },
      { id: 1, ok: false },
      { id: 1, ok: false, error: 'x' },
      { id: 1, ok: false, error: { code: 'E_X' } },
      { id: 1, ok: false, error: { code: 1, message: 'm' } },
    ];
    for (const v of bad) {
      const r = parseGuestMessage(v);
      assert.equal(r.ok, false, `expected ${JSON.stringify(v)} to be rejected`);
    }
  });
});
