import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LogSink, MAX_PENDING_LINES } from './logs.js';
import type { LogRecord, PlatformStore } from './store/types.js';

/** A store that only records appendLogs calls (the sink uses nothing else). */
function fakeStore() {
  const batches: Array<Array<Omit<LogRecord, 'seq'>>> = [];
  const store = {
    appendLogs: async (rows: Array<Omit<LogRecord, 'seq'>>) => void batches.push(rows),
  };
  return { store: store as unknown as PlatformStore, batches };
}

const row = (line: string, functionId = 'f1'): Omit<LogRecord, 'seq'> => ({
  tenantId: 't1',
  functionId,
  requestId: 'req_1',
  ts: 1,
  stream: 'stdout',
  line,
});

test('secret values are redacted before anything is stored, per function', async () => {
  const { store, batches } = fakeStore();
  const sink = new LogSink(store);
  sink.setSecrets('f1', ['hunter2-secret']);
  sink.write(row('token=hunter2-secret; again hunter2-secret'));
  sink.write(row('other function: hunter2-secret', 'f2'));
  await sink.flush();
  const lines = batches.flat().map((r) => r.line);
  assert.deepEqual(lines, ['token=[REDACTED]; again [REDACTED]', 'other function: hunter2-secret']);
});

test('lines are batched: one store call per flush', async () => {
  const { store, batches } = fakeStore();
  const sink = new LogSink(store);
  for (let i = 0; i < 10; i++) sink.write(row(`l${i}`));
  await sink.flush();
  assert.equal(batches.length, 1);
  assert.equal(batches[0]!.length, 10);
});

test('a flood is bounded: lines past the limit are dropped and the drop is logged', async () => {
  const { store, batches } = fakeStore();
  const sink = new LogSink(store);
  // Writes past LOG_BATCH flush on their own; keep the store slow so lines pile up.
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  (store as unknown as { appendLogs: (rows: unknown[]) => Promise<void> }).appendLogs = async (
    rows,
  ) => {
    await gate;
    batches.push(rows as Array<Omit<LogRecord, 'seq'>>);
  };
  for (let i = 0; i < MAX_PENDING_LINES + 50; i++) sink.write(row(`x${i}`));
  release();
  await sink.flush();
  const all = batches.flat();
  assert.ok(all.length <= MAX_PENDING_LINES + 1, `kept ${all.length}`);
  const notice = all.find((r) => r.stream === 'system');
  assert.ok(notice, 'the drop is reported');
  assert.match(notice.line, /dropped/);
});

test('each function has its own log rate: a flood is cut and reported, other functions keep theirs', async () => {
  const { store, batches } = fakeStore();
  let now = 0;
  const sink = new LogSink(store, { ratePerS: 10, burst: 20 }, () => now);
  for (let i = 0; i < 100; i++) sink.write(row(`flood ${i}`, 'loud'));
  for (let i = 0; i < 5; i++) sink.write(row(`quiet ${i}`, 'quiet'));
  now = 1000; // one second: 10 more lines for the loud one
  for (let i = 0; i < 100; i++) sink.write(row(`later ${i}`, 'loud'));
  await sink.flush();
  const all = batches.flat();
  const loud = all.filter((r) => r.functionId === 'loud' && r.stream === 'stdout');
  assert.equal(loud.length, 30, 'the burst, then the rate');
  assert.equal(
    all.filter((r) => r.functionId === 'quiet').length,
    5,
    'the quiet function is untouched',
  );
  const notice = all.find((r) => r.functionId === 'loud' && r.stream === 'system');
  assert.match(
    notice?.line ?? '',
    /^170 output line\(s\) dropped: over the log rate of 10 lines\/s$/,
  );
});
