import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { IsolaError } from '../errors.js';
import { type ConnTransport, GuestConnection } from './guest-connection.js';

/** A transport whose connect reply the test releases; it records every request. */
function transport(opts: { refuse?: boolean } = {}) {
  const sent: Array<{ req: Record<string, unknown>; body: string }> = [];
  const registered = new Map<number, GuestConnection>();
  let open!: () => void;
  const opened = new Promise<void>((r) => {
    open = r;
  });
  const t: ConnTransport = {
    async request(req, body) {
      sent.push({ req, body: body?.toString() ?? '' });
      if (req.op === 'connect') {
        await opened;
        if (opts.refuse)
          throw new IsolaError('E_GUEST_CONNECT', '127.0.0.1:80: connect ECONNREFUSED');
        return { result: { connId: 7 }, body: Buffer.alloc(0) };
      }
      return { result: {}, body: Buffer.alloc(0) };
    },
    registerConn: (id, c) => void registered.set(id, c),
    unregisterConn: (id) => void registered.delete(id),
  };
  return { t, sent, registered, open };
}

test('writes wait for the connection, then go out as send requests on its id', async () => {
  const x = transport();
  const c = new GuestConnection(x.t, 80);
  c.write('hello');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(
    x.sent.map((s) => s.req.op),
    ['connect'],
    'nothing sent before the guest opened it',
  );
  x.open();
  await c.ready();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(x.sent[1], { req: { op: 'send', connId: 7, eof: false }, body: 'hello' });
  assert.equal(x.registered.get(7), c);
  c.end();
  await once(c, 'finish');
  assert.deepEqual(x.sent.at(-1)!.req, { op: 'send', connId: 7, eof: true });
});

test('data and end from the guest arrive as a readable stream', async () => {
  const x = transport();
  x.open();
  const c = new GuestConnection(x.t, 80);
  await c.ready();
  const chunks: string[] = [];
  c.on('data', (d: Buffer) => chunks.push(d.toString()));
  c.onData(Buffer.from('a'));
  c.onData(Buffer.from('b'));
  c.onEnd();
  await once(c, 'end');
  assert.deepEqual(chunks, ['a', 'b']);
});

test('a refused connect destroys the stream with E_GUEST_CONNECT', async () => {
  const x = transport({ refuse: true });
  const c = new GuestConnection(x.t, 80);
  x.open();
  const [err] = (await once(c, 'error')) as [IsolaError];
  assert.equal(err.code, 'E_GUEST_CONNECT');
  assert.equal(c.destroyed, true);
});

test('closed with an error from the guest destroys the stream with it', async () => {
  const x = transport();
  x.open();
  const c = new GuestConnection(x.t, 80);
  await c.ready();
  const failed = once(c, 'error');
  c.onClosed('connection reset by peer');
  const [err] = (await failed) as [Error];
  assert.match(err.message, /reset/);
  assert.equal(x.registered.has(7), false, 'unregistered');
});

test('destroyed before the guest opened it: the connection is closed once it is', async () => {
  const x = transport();
  const c = new GuestConnection(x.t, 80);
  c.destroy();
  x.open();
  await c.ready();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(x.sent.at(-1)!.req, { op: 'close', connId: 7 });
});
