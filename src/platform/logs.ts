// Function output on its way to the store: lines are batched (one insert per batch, not per
// line), secret values are redacted before anything is written, and a flood is bounded twice:
// each function may store LOG_RATE lines per second (burst LOG_BURST), so one function printing
// in a loop neither fills the store nor crowds out other tenants' lines; and past
// MAX_PENDING_LINES (all functions) new lines are dropped. Drops are counted and logged.

import { envNumber } from '../util/env.js';
import { type BucketPolicy, RateLimiter } from '../util/rate-limit.js';
import { redact } from './secrets.js';
import type { LogRecord, PlatformStore } from './store/types.js';

/** Flush period: `isola logs --follow` sees lines within about this much. */
export const LOG_FLUSH_MS = 100;
export const LOG_BATCH = 500;
export const MAX_PENDING_LINES = 20_000;
/** Lines per second one function may store, and its burst ($ISOLA_LOG_RATE, $ISOLA_LOG_BURST). */
export const LOG_RATE: BucketPolicy = {
  ratePerS: envNumber('ISOLA_LOG_RATE', 1000),
  burst: envNumber('ISOLA_LOG_BURST', 10_000),
};

export class LogSink {
  private pending: Array<Omit<LogRecord, 'seq'>> = [];
  private dropped = new Map<string, { tenantId: string; n: number; rate: number }>();
  private readonly perFunction: RateLimiter;
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  /** Lines handed to the store and not yet written: they count against the bound too. */
  private inFlight = 0;
  /** Secret values per function id, for redaction. */
  private readonly secrets = new Map<string, string[]>();

  constructor(
    private readonly store: PlatformStore,
    policy: BucketPolicy = LOG_RATE,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.perFunction = new RateLimiter(policy);
  }

  setSecrets(functionId: string, values: string[]): void {
    this.secrets.set(functionId, values);
  }

  write(row: Omit<LogRecord, 'seq'>): void {
    const values = this.secrets.get(row.functionId);
    const line = values ? redact(row.line, values) : row.line;
    // Platform events (instance starts, stops, timeouts) also go to the operator's log.
    if (row.stream === 'system') {
      process.stdout.write(
        `isola: ${new Date(row.ts).toISOString()} ${row.functionId} ${row.requestId ?? '-'} ${line}\n`,
      );
    }
    const overRate =
      row.stream !== 'system' && !this.perFunction.take(row.functionId, this.now()).ok;
    if (overRate || this.pending.length + this.inFlight >= MAX_PENDING_LINES) {
      const d = this.dropped.get(row.functionId) ?? { tenantId: row.tenantId, n: 0, rate: 0 };
      d.n++;
      if (overRate) d.rate++;
      this.dropped.set(row.functionId, d);
      if (!this.timer) {
        this.timer = setTimeout(() => void this.flush(), LOG_FLUSH_MS);
        this.timer.unref();
      }
      return;
    }
    this.pending.push({ ...row, line });
    if (this.pending.length >= LOG_BATCH) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), LOG_FLUSH_MS);
      this.timer.unref();
    }
  }

  /** Write what is pending; resolves when it is in the store. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const rows = this.pending.splice(0);
    for (const [functionId, d] of this.dropped) {
      rows.push({
        tenantId: d.tenantId,
        functionId,
        requestId: null,
        ts: Date.now(),
        stream: 'system',
        line:
          d.rate > 0
            ? `${d.n} output line(s) dropped: over the log rate of ${this.perFunction.policy.ratePerS} lines/s`
            : `${d.n} output line(s) dropped: the function writes faster than logs are stored`,
      });
    }
    this.dropped.clear();
    if (rows.length === 0) return this.flushing;
    this.inFlight += rows.length;
    this.flushing = this.flushing.then(() =>
      this.store
        .appendLogs(rows)
        .catch((err: unknown) => {
          process.stderr.write(`isola: storing ${rows.length} log lines failed: ${String(err)}\n`);
        })
        .finally(() => {
          this.inFlight -= rows.length;
        }),
    );
    return this.flushing;
  }
}
