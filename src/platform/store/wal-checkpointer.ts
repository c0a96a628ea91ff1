// Write-ahead-log checkpoints off the event loop, for the embedded SQLite store.
//
// SQLite checkpoints its WAL by itself, inside the COMMIT that pushes the log past 1000 pages:
// that COMMIT syncs the log and the database file to disk, and better-sqlite3 runs it on the
// server's one thread. Under load (a commit per batch of metering records, a thousand a second)
// that stalled the event loop for up to 8 ms several times a second, and every request in
// flight waited: most of the 8-client p99 (bench:platform). So the server's connection turns
// automatic checkpoints off and a worker thread with a connection of its own checkpoints
// (PASSIVE: it never blocks the writer) at most every `intervalMs` while there are writes.
//
// A PASSIVE checkpoint copies back only what was committed before it began, and SQLite starts
// the log over only when a write begins with all of it copied back; under steady writes that
// never happens by itself and the log would grow without end. So when a checkpoint reports
// more than `restartFrames` frames in the log, the next write (holding the store's mutex, so
// no other write of this process starts meanwhile) first waits for one more checkpoint, which
// copies the little written since the last one; it then finds the log fully copied back and
// starts it over. That write waits a few milliseconds; the event loop does not.
//
// Should the worker fail, the connection gets SQLite's automatic checkpoints back.

import { Worker } from 'node:worker_threads';
import type { CheckpointReply, CheckpointRequest } from './wal-checkpoint-worker.js';

export interface WalCheckpointerOptions {
  /** Background checkpoints start at most this often while there are writes. */
  intervalMs: number;
  /** A log longer than this (in frames, one page each) is started over at the next write. */
  restartFrames: number;
}

export const DEFAULT_WAL_CHECKPOINTER: WalCheckpointerOptions = {
  intervalMs: 100,
  // 16 MiB of 4 KiB pages
  restartFrames: 4096,
};

export interface CheckpointResult {
  /** Frames (pages) in the log when the checkpoint ended. */
  walFrames: number;
}

export class WalCheckpointer {
  private worker: Worker | null = null;
  private failed = false;
  private closed = false;
  /** Resolvers of the requests the worker has not answered yet, oldest first. */
  private readonly waiting: {
    resolve: (r: CheckpointResult) => void;
    reject: (e: Error) => void;
  }[] = [];
  private inFlight: Promise<CheckpointResult> | null = null;
  private lastStart = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | null = null;
  private dirty = false;
  private restartDue = false;
  private lastFrames = 0;
  /**
   * What it did, for tests and diagnostics: checkpoints run; drains (writes that waited for the
   * log to be copied back); restarts seen (a report of fewer frames than the one before: a
   * log that started over and grew past its old length between two reports is not seen); the
   * longest log reported, in frames; failed checkpoints.
   */
  readonly stats = { checkpoints: 0, drains: 0, restarts: 0, maxFrames: 0, failures: 0 };

  /**
   * `file`: the database; `fallback`: turns automatic checkpoints back on for the writer's
   * connection (called once, if the worker fails).
   */
  constructor(
    private readonly file: string,
    private readonly fallback: () => void,
    private readonly opts: WalCheckpointerOptions = DEFAULT_WAL_CHECKPOINTER,
  ) {}

  /** After a write committed. Starts or schedules a background checkpoint. */
  wrote(): void {
    if (this.failed || this.closed) return;
    this.dirty = true;
    if (this.inFlight || this.timer) return;
    const wait = this.lastStart + this.opts.intervalMs - performance.now();
    if (wait <= 0) {
      this.background();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      this.background();
    }, wait);
    this.timer.unref();
  }

  /**
   * Before a write, with the store's mutex held: null, or (when the log is due to start over)
   * a promise that settles once it is fully copied back.
   */
  beforeWrite(): Promise<void> | null {
    if (!this.restartDue) return null;
    this.restartDue = false;
    return (async () => {
      try {
        // The one in flight began before the latest commits: one more after it.
        await this.inFlight?.catch(() => {});
        this.stats.drains++;
        await this.checkpoint();
      } catch {
        // the worker failed: the connection checkpoints by itself from now on
      }
    })();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const w = this.worker;
    if (!w) return;
    await this.inFlight?.catch(() => {});
    this.worker = null;
    w.ref();
    await new Promise<void>((resolve) => {
      w.once('exit', () => resolve());
      w.postMessage({ t: 'close' } satisfies CheckpointRequest);
    });
  }

  private background(): void {
    if (this.failed || this.closed || this.inFlight) return;
    this.dirty = false;
    this.checkpoint().then(
      (r) => {
        if (r.walFrames > this.opts.restartFrames) this.restartDue = true;
        if (this.dirty) this.wrote();
      },
      () => {},
    );
  }

  private checkpoint(): Promise<CheckpointResult> {
    const w = this.startWorker();
    if (!w) return Promise.reject(new Error('no checkpoint worker'));
    this.lastStart = performance.now();
    this.stats.checkpoints++;
    // Held while it works, so that whoever awaits the answer is not left with an event loop
    // that has nothing to wait for.
    w.ref();
    const p = new Promise<CheckpointResult>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      w.postMessage({ t: 'checkpoint' } satisfies CheckpointRequest);
    });
    this.inFlight = p;
    const clear = () => {
      if (this.inFlight === p) this.inFlight = null;
    };
    p.then((r) => {
      clear();
      if (r.walFrames < this.lastFrames) this.stats.restarts++;
      this.lastFrames = r.walFrames;
      this.stats.maxFrames = Math.max(this.stats.maxFrames, r.walFrames);
    }, clear);
    return p;
  }

  private startWorker(): Worker | null {
    if (this.worker || this.failed || this.closed) return this.worker;
    let w: Worker;
    try {
      w = new Worker(new URL('./wal-checkpoint-worker.js', import.meta.url), {
        workerData: { file: this.file },
      });
    } catch (err) {
      this.fail(err);
      return null;
    }
    // Idle, never what keeps the process alive.
    w.unref();
    w.on('message', (m: CheckpointReply) => {
      const next = this.waiting.shift();
      if (this.waiting.length === 0) w.unref();
      if (!next) return;
      if (m.t === 'done') next.resolve(m);
      else {
        this.stats.failures++;
        next.reject(new Error(m.message));
      }
    });
    w.on('error', (err) => this.fail(err));
    w.on('exit', () => {
      if (this.worker === w) this.fail(new Error('the checkpoint worker exited'));
    });
    this.worker = w;
    return w;
  }

  private fail(err: unknown): void {
    if (this.failed) return;
    this.failed = true;
    this.worker = null;
    const e = err instanceof Error ? err : new Error(String(err));
    for (const x of this.waiting.splice(0)) x.reject(e);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.closed) return;
    this.stats.failures++;
    process.stderr.write(
      `isola: WAL checkpoints of ${this.file} go back to the writer's connection: ${e.message}\n`,
    );
    this.fallback();
  }
}
