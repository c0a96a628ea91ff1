import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IsolaError } from '../errors.js';
import { feed } from './host.js';

// feed() is the one way isola hands a script to ip/tc/nft/sh; a command that exits without
// reading its input must give a typed error (or success) and never an unhandled EPIPE.

test('feed: a command that exits before reading a large input rejects with E_NETWORK', async () => {
  const input = 'x'.repeat(1 << 20); // larger than a pipe buffer: the write must meet EPIPE
  await assert.rejects(
    feed('sh', ['-c', 'echo refused >&2; exit 3'], input, 'probe'),
    (err: unknown) =>
      err instanceof IsolaError &&
      err.code === 'E_NETWORK' &&
      /probe failed: refused/.test(err.message),
  );
});

test('feed: a command that never reads stdin and succeeds resolves, with or without input', async () => {
  await feed('true', [], '', 'probe');
  await feed('true', [], 'y'.repeat(1 << 20), 'probe').catch((err: unknown) => {
    // `true` may exit before the whole input is written; success or a typed error are both
    // acceptable, a crash of this process is not.
    assert.ok(err instanceof IsolaError && err.code === 'E_NETWORK', String(err));
  });
});

test('feed: the input reaches the command', async () => {
  await feed('sh', ['-c', 'test "$(cat)" = hello'], 'hello', 'probe');
});
