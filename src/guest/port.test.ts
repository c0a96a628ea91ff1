import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { constants, closeSync, fstatSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { servePort } from './port.js';

// A FIFO read without blocking behaves as a virtio-serial port does when its host comes and
// goes: end of stream while no writer is connected, data again once one is.
describe('servePort', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'isola-port-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const until = async (cond: () => boolean) => {
    for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(cond());
  };

  test('the end of stream while the host is away is retried, not acted on: the port stays open and what comes next arrives', async () => {
    const fifo = path.join(dir, 'port');
    execFileSync('mkfifo', [fifo]);
    const fds: number[] = [];
    const got: string[] = [];
    const stop = new AbortController();
    servePort('test', (b) => got.push(b.toString()), {
      open: () => {
        const fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
        fds.push(fd);
        return fd;
      },
      signal: stop.signal,
    });
    for (const word of ['first', 'second', 'third']) {
      // A host connects, sends, and goes away (the reader sees end of stream each time).
      const w = openSync(fifo, 'w');
      writeSync(w, word);
      await until(() => got.join('').endsWith(word));
      closeSync(w);
      await new Promise((r) => setTimeout(r, 30));
    }
    assert.equal(got.join(''), 'firstsecondthird');
    // Opened once and never closed: closing a virtio port discards what the host had sent.
    assert.equal(fds.length, 1);
    assert.ok(fstatSync(fds[0]!).isFIFO());
    stop.abort();
  });
});
