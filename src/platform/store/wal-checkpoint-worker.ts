// The thread behind wal-checkpointer.ts: a connection of its own to the database file, which
// runs a PASSIVE checkpoint each time it is asked and answers with the log's length. A
// checkpoint syncs the write-ahead log and the database file; here that waits on the disk
// instead of the server's event loop.

import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

export type CheckpointRequest = { t: 'checkpoint' } | { t: 'close' };
export type CheckpointReply = { t: 'done'; walFrames: number } | { t: 'error'; message: string };

const port = parentPort;
if (!port) throw new Error('wal-checkpoint-worker runs as a worker thread');

// A PASSIVE checkpoint never waits for a lock, so no busy timeout is needed.
const db = new Database((workerData as { file: string }).file, { timeout: 0 });

port.on('message', (m: CheckpointRequest) => {
  if (m.t === 'close') {
    db.close();
    port.close();
    return;
  }
  let reply: CheckpointReply;
  try {
    const [r] = db.pragma('wal_checkpoint(PASSIVE)') as { log: number }[];
    reply = { t: 'done', walFrames: r?.log ?? 0 };
  } catch (err) {
    reply = { t: 'error', message: err instanceof Error ? err.message : String(err) };
  }
  port.postMessage(reply);
});
