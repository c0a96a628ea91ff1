import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { openSqliteDb, walCheckpointStats } from './db.js';
import { WalCheckpointer } from './wal-checkpointer.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'isola-wal-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const yieldLoop = () => new Promise((r) => setImmediate(r));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('WAL checkpoints in a worker thread', () => {
  /** Steady writes with random keys (dirtying pages all over the index, as random request ids do). */
  async function steadyWrites(name: string, restartFrames: number) {
    const file = path.join(dir, name);
    const db = openSqliteDb(file, { checkpoints: { intervalMs: 5, restartFrames } });
    await db.run('CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT NOT NULL)');
    const rows = 6000;
    for (let i = 0; i < rows; i += 3) {
      await db.tx(async (tx) => {
        for (let j = i; j < i + 3; j++)
          await tx.run('INSERT INTO t VALUES (?, ?)', [
            `${Math.random().toString(36).slice(2)}-${j}`,
            'x'.repeat(100),
          ]);
      });
      // The server yields to its event loop between commits (the worker's answers need that),
      // and commits about one a millisecond under load, not ten.
      await (i % 30 === 0 ? sleep(1) : yieldLoop());
    }
    const stats = { ...walCheckpointStats(db)! };
    const row = await db.get<{ n: number }>('SELECT count(*) AS n FROM t');
    assert.equal(row?.n, rows);
    await db.close();
    // The worker's connection closed first, so the writer's close checkpointed the log and
    // removed it, and everything is in the database file.
    assert.equal(existsSync(`${file}-wal`), false);
    const check = new Database(file, { readonly: true });
    try {
      assert.equal((check.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n, rows);
      assert.equal(check.pragma('integrity_check', { simple: true }), 'ok');
    } finally {
      check.close();
    }
    return stats;
  }

  test('the log is checkpointed and started over under steady writes, off the writer', async () => {
    const stats = await steadyWrites('steady.db', 200);
    assert.ok(stats.checkpoints > 10, `checkpoints: ${stats.checkpoints}`);
    assert.ok(stats.drains > 0, `drains: ${stats.drains}`);
    assert.ok(stats.restarts > 0, `restarts: ${stats.restarts}`);
    assert.equal(stats.failures, 0);
  });

  test('a log past restartFrames makes the next write wait for a checkpoint, and starts it over', async () => {
    const file = path.join(dir, 'drain.db');
    const writer = new Database(file);
    writer.pragma('journal_mode = WAL');
    writer.pragma('wal_autocheckpoint = 0');
    writer.exec('CREATE TABLE t (k TEXT PRIMARY KEY)');
    const insert = writer.prepare('INSERT INTO t VALUES (?)');
    // One background checkpoint only (the first starts at once, the next would wait a minute).
    const wal = new WalCheckpointer(file, () => assert.fail('fell back'), {
      intervalMs: 60_000,
      restartFrames: 20,
    });
    try {
      for (let i = 0; i < 100; i++) insert.run(`${Math.random()}-${i}`);
      assert.equal(wal.beforeWrite(), null, 'nothing reported yet, nothing due');
      wal.wrote();
      for (let i = 0; i < 500 && wal.stats.maxFrames === 0; i++) await sleep(10);
      assert.ok(wal.stats.maxFrames > 20, `log of ${wal.stats.maxFrames} frames`);
      // Due: the next write waits for one more checkpoint...
      const due = wal.beforeWrite();
      assert.notEqual(due, null);
      await due;
      assert.equal(wal.stats.drains, 1);
      assert.equal(wal.stats.checkpoints, 2);
      assert.equal(wal.beforeWrite(), null, 'drained: not due any more');
      // ...and, the log fully copied back, that write starts it over from its first frame.
      insert.run('after');
      const [r] = writer.pragma('wal_checkpoint(PASSIVE)') as { log: number }[];
      assert.ok(r && r.log < 10, `log of ${r?.log} frames after the write`);
    } finally {
      await wal.close();
      writer.close();
    }
  });

  test("the writer's connection has SQLite's automatic checkpoints off", async () => {
    const file = path.join(dir, 'auto.db');
    const db = openSqliteDb(file);
    await db.run('CREATE TABLE t (v TEXT)');
    // The setting is per connection: asked through the handle's own.
    const r = await db.get<{ wal_autocheckpoint: number }>('PRAGMA wal_autocheckpoint');
    assert.equal(r?.wal_autocheckpoint, 0);
    await db.close();
  });

  test('a worker that cannot work gives the connection its own checkpoints back', async () => {
    let fellBack = 0;
    const wal = new WalCheckpointer(
      path.join(dir, 'no-such-dir', 'x.db'),
      () => {
        fellBack++;
      },
      { intervalMs: 1, restartFrames: 10 },
    );
    const written = process.stderr.write;
    let said = '';
    process.stderr.write = ((s: string) => {
      said += s;
      return true;
    }) as typeof process.stderr.write;
    try {
      wal.wrote();
      for (let i = 0; i < 200 && fellBack === 0; i++) await new Promise((r) => setTimeout(r, 10));
    } finally {
      process.stderr.write = written;
    }
    assert.equal(fellBack, 1);
    assert.match(said, /WAL checkpoints of .*x\.db go back to the writer's connection/);
    // Failed for good: more writes start nothing and fall back no more.
    wal.wrote();
    assert.equal(wal.beforeWrite(), null);
    await wal.close();
    assert.equal(fellBack, 1);
  });
});
