// Prometheus metrics in the text exposition format, without a client library: counters, gauges
// (set or computed at scrape time) and histograms, each with labels. Label values are escaped;
// metric names are fixed in code, never taken from input. Never label with secrets or keys.

import { constants, PerformanceObserver, monitorEventLoopDelay } from 'node:perf_hooks';

type Labels = Record<string, string>;

const render = (labels: Labels) =>
  Object.keys(labels)
    .sort()
    .map(
      (k) =>
        `${k}="${String(labels[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`,
    )
    .join(',');

/** Rendered label sets by a raw key of their names and values, as given (bounded). */
const rendered = new Map<string, string>();
const RENDERED_MAX = 10_000;

/**
 * The series key of a label set: its names sorted, values escaped, as the exposition format
 * writes them. Every invocation updates several series, so the rendering (a sort and three
 * regular expressions per label) is looked up by a raw key instead of redone.
 */
const key = (labels: Labels): string => {
  let raw = '';
  // Length-prefixed, so no two label sets share a raw key whatever their values hold.
  for (const k in labels) {
    const v = String(labels[k]);
    raw += `${k.length}:${k}${v.length}:${v}`;
  }
  let k = rendered.get(raw);
  if (k === undefined) {
    k = render(labels);
    if (rendered.size >= RENDERED_MAX) rendered.clear();
    rendered.set(raw, k);
  }
  return k;
};

abstract class Metric {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge' | 'histogram',
  ) {}
  abstract lines(): string[];
  render(): string {
    return [
      `# HELP ${this.name} ${this.help}`,
      `# TYPE ${this.name} ${this.type}`,
      ...this.lines(),
    ].join('\n');
  }
}

export class Counter extends Metric {
  private readonly values = new Map<string, number>();
  constructor(name: string, help: string) {
    super(name, help, 'counter');
  }
  inc(labels: Labels = {}, by = 1): void {
    const k = key(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
  }
  get(labels: Labels = {}): number {
    return this.values.get(key(labels)) ?? 0;
  }
  lines(): string[] {
    return [...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${v}`);
  }
}

export class Gauge extends Metric {
  constructor(
    name: string,
    help: string,
    private readonly collect: () => Array<[Labels, number]>,
  ) {
    super(name, help, 'gauge');
  }
  lines(): string[] {
    return this.collect().map(([l, v]) => {
      const k = key(l);
      return `${this.name}${k ? `{${k}}` : ''} ${v}`;
    });
  }
}

/** Buckets in seconds: 1 ms .. 60 s, to cover warm calls and TCG cold starts alike. */
export const SECONDS_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

export class Histogram extends Metric {
  private readonly series = new Map<string, { counts: number[]; sum: number; n: number }>();
  constructor(
    name: string,
    help: string,
    private readonly buckets = SECONDS_BUCKETS,
  ) {
    super(name, help, 'histogram');
  }
  observe(labels: Labels, v: number): void {
    const k = key(labels);
    let s = this.series.get(k);
    if (!s) {
      s = { counts: this.buckets.map(() => 0), sum: 0, n: 0 };
      this.series.set(k, s);
    }
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) s.counts[i]!++;
    s.sum += v;
    s.n++;
  }
  lines(): string[] {
    const out: string[] = [];
    for (const [k, s] of this.series) {
      const sep = k ? `${k},` : '';
      this.buckets.forEach((b, i) =>
        out.push(`${this.name}_bucket{${sep}le="${b}"} ${s.counts[i]}`),
      );
      out.push(`${this.name}_bucket{${sep}le="+Inf"} ${s.n}`);
      out.push(`${this.name}_sum${k ? `{${k}}` : ''} ${s.sum}`);
      out.push(`${this.name}_count${k ? `{${k}}` : ''} ${s.n}`);
    }
    return out;
  }
}

export class Registry {
  private readonly metrics: Metric[] = [];
  add<T extends Metric>(m: T): T {
    this.metrics.push(m);
    return m;
  }
  render(): string {
    return `${this.metrics.map((m) => m.render()).join('\n')}\n`;
  }
}

/** Buckets in seconds for garbage-collection pauses: 0.1 ms .. 1 s. */
export const GC_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
];

const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

/**
 * This process's garbage-collection pauses into `h`, by kind (minor: a scavenge of the young
 * generation; major: a mark-compact): a server's latency tail is often its collector's.
 * Returns the stop.
 */
export function observeGc(h: Histogram): () => void {
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const detail = (e as { detail?: { kind?: number } }).detail;
      const kind = GC_KINDS[detail?.kind ?? -1] ?? 'other';
      h.observe({ kind }, e.duration / 1000);
    }
  });
  obs.observe({ entryTypes: ['gc'] });
  return () => obs.disconnect();
}

/** How often the event-loop delay monitor's timer is due. */
const LOOP_DELAY_RESOLUTION_MS = 10;

/**
 * This process's event-loop delay: how much later than due a timer due every 10 ms fired, as
 * a gauge by quantile (0.5, 0.99 and 1, the maximum) over the time since the last scrape. A
 * request in flight waits out every stall of the loop, whatever it is waiting for (a stall in
 * the store's COMMIT showed up as the guest being slow). Returns the gauge and its stop.
 */
export function eventLoopDelayGauge(
  name: string,
  help: string,
): { gauge: Gauge; stop: () => void } {
  const h = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
  h.enable();
  // The histogram holds whole intervals between the timer's runs: the delay is what exceeds
  // the resolution.
  const late = (ns: number) => Math.max(0, ns / 1e9 - LOOP_DELAY_RESOLUTION_MS / 1000);
  const gauge = new Gauge(name, help, () => {
    if (h.count === 0) return [];
    const out: Array<[Labels, number]> = [
      [{ quantile: '0.5' }, late(h.percentile(50))],
      [{ quantile: '0.99' }, late(h.percentile(99))],
      [{ quantile: '1' }, late(h.max)],
    ];
    h.reset();
    return out;
  });
  return { gauge, stop: () => h.disable() };
}
