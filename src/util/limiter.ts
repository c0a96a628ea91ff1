// At most `max` holders at once; the rest wait in arrival order. For work that is bounded by
// the host's CPUs (snapshot builds, restores), where running more at once only slows each.

export class Limiter {
  private running = 0;
  private readonly queue: Array<() => void> = [];

  constructor(private readonly max: number) {}

  /** Wait for a place; the caller must call release() once afterwards. */
  async acquire(): Promise<void> {
    if (this.running >= this.max) await new Promise<void>((r) => this.queue.push(r));
    this.running++;
  }

  release(): void {
    this.running--;
    this.queue.shift()?.();
  }

  /** Let every waiter through now (shutdown: they check for it themselves). */
  releaseWaiters(): void {
    for (const r of this.queue.splice(0)) r();
  }

  async run<T>(f: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await f();
    } finally {
      this.release();
    }
  }
}
