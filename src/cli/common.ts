// Options every client command takes, and small output helpers shared by them.
import { ApiClient } from './client.js';

export const CLIENT_OPTIONS = {
  url: { type: 'string' },
  key: { type: 'string' },
  tenant: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

export function clientFrom(values: {
  url?: string | undefined;
  key?: string | undefined;
  tenant?: string | undefined;
}): ApiClient {
  return new ApiClient({ url: values.url, key: values.key, tenant: values.tenant });
}

/** A plain text table: columns padded to their widest cell. */
export function table(head: string[], rows: Array<Array<string | number>>): string {
  const all = [head, ...rows.map((r) => r.map(String))];
  const widths = head.map((_, i) => Math.max(...all.map((r) => String(r[i] ?? '').length)));
  return `${all
    .map((r) =>
      r
        .map((c, i) => String(c).padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}

export function when(ms: number | null): string {
  return ms === null ? '-' : new Date(ms).toISOString().replace('T', ' ').slice(0, 19);
}
