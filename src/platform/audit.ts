// The audit log's writer: the gateway hands it one record per state-changing call once the
// call has its outcome. Writes are not on the reply's path; a reader (GET /v1/audit) and
// shutdown flush them first, so a client that got its reply then reads the log sees its call.
// A failed write is reported on the server's output and does not fail the call it records.

import type { AuditRecord, PlatformStore } from './store/types.js';

export type AuditEntry = Omit<AuditRecord, 'seq'>;

export class AuditLog {
  private readonly pending = new Set<Promise<void>>();

  constructor(private readonly store: PlatformStore) {}

  record(entry: AuditEntry): void {
    const p: Promise<void> = this.store
      .appendAudit(entry)
      .catch((err: unknown) => {
        process.stderr.write(
          `isola: audit record ${entry.action} ${entry.target} (${entry.requestId}) not stored: ${String(err)}\n`,
        );
      })
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  /** Resolves when every record handed in so far is stored (or reported as failed). */
  async flush(): Promise<void> {
    await Promise.all([...this.pending]);
  }
}
