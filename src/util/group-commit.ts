// Group commit: records written during one turn of the event loop reach the store together, in
// one transaction, and each writer's promise settles once its own record is stored. Under load
// a server answering many invocations at once pays one commit per batch instead of one per
// invocation; at one request at a time it costs a setImmediate.
//
// One bad record must not fail the others: a batch that fails is written again one record at
// a time, so each writer gets its own answer (the conflict of a duplicate, say).

interface Pending<T> {
  item: T;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class GroupCommit<T> {
  private queue: Pending<T>[] = [];
  private scheduled = false;
  private running = false;

  constructor(
    private readonly writeMany: (items: T[]) => Promise<void>,
    private readonly writeOne: (item: T) => Promise<void>,
    private readonly maxBatch = 256,
  ) {}

  write(item: T): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.scheduled && !this.running) {
        this.scheduled = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  /** Records waiting for their batch (not those of a batch being written). */
  get pending(): number {
    return this.queue.length;
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    this.running = true;
    try {
      // What arrives while a batch is written goes in the next one.
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.maxBatch);
        try {
          await this.writeMany(batch.map((p) => p.item));
          for (const p of batch) p.resolve();
        } catch {
          for (const p of batch) {
            try {
              await this.writeOne(p.item);
              p.resolve();
            } catch (err) {
              p.reject(err);
            }
          }
        }
      }
    } finally {
      this.running = false;
    }
  }
}
