// Per-tenant admission: at most `limit` invocations of a tenant run at once. Beyond it, requests
// wait in a first-in first-out queue (as Knative's activator buffers a burst), bounded in length
// (QUEUE_FACTOR x limit) and in time; past either bound they are refused with E_THROTTLED and a
// Retry-After, so the quota holds under any burst and nothing waits without end.

import { IsolaError } from '../errors.js';

/** Requests that may wait per tenant, as a multiple of its concurrency limit. */
export const QUEUE_FACTOR = 4;

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface TenantState {
  running: number;
  /** Most running at once since the gate was made (what tests and metrics read). */
  peak: number;
  queue: Waiter[];
}

export class AdmissionGate {
  private readonly tenants = new Map<string, TenantState>();

  /** Running invocations of a tenant now. */
  running(tenant: string): number {
    return this.tenants.get(tenant)?.running ?? 0;
  }

  /** The most that ran at once for the tenant. */
  peak(tenant: string): number {
    return this.tenants.get(tenant)?.peak ?? 0;
  }

  totalRunning(): number {
    let n = 0;
    for (const t of this.tenants.values()) n += t.running;
    return n;
  }

  /**
   * Take a slot of the tenant's quota, waiting up to `maxWaitMs` behind the requests already
   * queued. Resolves when admitted; the caller must call release() once afterwards.
   */
  acquire(tenant: string, limit: number, maxWaitMs: number, name = tenant): Promise<void> {
    let t = this.tenants.get(tenant);
    if (!t) {
      t = { running: 0, peak: 0, queue: [] };
      this.tenants.set(tenant, t);
    }
    if (t.running < limit && t.queue.length === 0) {
      this.admit(t);
      return Promise.resolve();
    }
    if (t.queue.length >= QUEUE_FACTOR * limit || maxWaitMs <= 0) {
      return Promise.reject(throttled(name, t.running, limit, 'its queue is full'));
    }
    const state = t;
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = state.queue.indexOf(w);
          if (i >= 0) state.queue.splice(i, 1);
          reject(throttled(name, state.running, limit, `no slot within ${maxWaitMs} ms`));
        }, maxWaitMs),
      };
      state.queue.push(w);
    });
  }

  /** Give the slot back; the oldest waiter (if any) takes it. */
  release(tenant: string, limit: number): void {
    const t = this.tenants.get(tenant);
    if (!t || t.running === 0) return;
    t.running--;
    while (t.running < limit && t.queue.length > 0) {
      const w = t.queue.shift()!;
      clearTimeout(w.timer);
      this.admit(t);
      w.resolve();
    }
    if (t.running === 0 && t.queue.length === 0 && t.peak === 0) this.tenants.delete(tenant);
  }

  private admit(t: TenantState): void {
    t.running++;
    if (t.running > t.peak) t.peak = t.running;
  }
}

function throttled(name: string, running: number, limit: number, why: string): IsolaError {
  return new IsolaError(
    'E_THROTTLED',
    `tenant ${name} has ${running} invocations running, its limit is ${limit}: ${why}`,
    { details: { retryAfterS: 1 } },
  );
}
