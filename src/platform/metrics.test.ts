import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Counter,
  GC_BUCKETS,
  Gauge,
  Histogram,
  Registry,
  SECONDS_BUCKETS,
  eventLoopDelayGauge,
  observeGc,
} from './metrics.js';

/** One exposition line: name, optional {labels}, value. Label values: any char but " \ newline, or escapes. */
const SAMPLE =
  /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? [-+]?(\d+(\.\d+)?([eE][-+]?\d+)?|\+Inf|NaN)$/;

/** Check the whole text is valid exposition format; returns sample lines. */
function checkText(text: string): string[] {
  assert.ok(text.endsWith('\n'), 'text must end with a newline');
  const samples: string[] = [];
  const typed = new Set<string>();
  for (const line of text.slice(0, -1).split('\n')) {
    if (line.startsWith('# HELP ')) {
      assert.match(line, /^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$/);
    } else if (line.startsWith('# TYPE ')) {
      const m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$/.exec(line);
      assert.ok(m, line);
      assert.ok(!typed.has(m[1]!), `TYPE ${m[1]} twice`);
      typed.add(m[1]!);
    } else {
      assert.match(line, SAMPLE);
      samples.push(line);
    }
  }
  return samples;
}

describe('Counter', () => {
  test('HELP, TYPE and one line per label set', () => {
    const c = new Counter('isola_invocations_total', 'Invocations.');
    c.inc({ fn: 'a', status: 'ok' });
    c.inc({ status: 'ok', fn: 'a' }, 2); // label order does not matter
    c.inc({ fn: 'b', status: 'error' });
    assert.equal(c.get({ fn: 'a', status: 'ok' }), 3);
    assert.equal(c.get({ fn: 'zzz' }), 0);
    assert.equal(
      c.render(),
      [
        '# HELP isola_invocations_total Invocations.',
        '# TYPE isola_invocations_total counter',
        'isola_invocations_total{fn="a",status="ok"} 3',
        'isola_invocations_total{fn="b",status="error"} 1',
      ].join('\n'),
    );
  });

  test('no labels: no braces', () => {
    const c = new Counter('isola_x_total', 'X.');
    c.inc();
    c.inc({}, 4);
    assert.equal(c.render().split('\n')[2], 'isola_x_total 5');
  });

  test('label values escape backslash, double quote and newline', () => {
    const c = new Counter('isola_x_total', 'X.');
    c.inc({ v: 'a"b\\c\nd' });
    const line = c.render().split('\n')[2]!;
    assert.equal(line, 'isola_x_total{v="a\\"b\\\\c\\nd"} 1');
    assert.match(line, SAMPLE);
    // A value that ends in a backslash must not escape the closing quote.
    c.inc({ v: 'end\\' });
    assert.equal(c.render().split('\n')[3], 'isola_x_total{v="end\\\\"} 1');
    checkText(`${c.render()}\n`);
  });
});

describe('label keys', () => {
  test('label sets whose names and values concatenate alike stay apart', () => {
    const c = new Counter('isola_x_total', 'X.');
    c.inc({ a: 'b', c: 'd' });
    c.inc({ a: 'bc', '': 'd' } as Record<string, string>);
    c.inc({ ab: 'cd' });
    c.inc({ a: '1:b1:c1:d' });
    assert.equal(c.get({ a: 'b', c: 'd' }), 1);
    assert.equal(c.get({ ab: 'cd' }), 1);
    assert.equal(c.get({ a: '1:b1:c1:d' }), 1);
    assert.equal(c.render().split('\n').length, 2 + 4);
  });

  test('the same label set in another key order, many times over, is one series', () => {
    const c = new Counter('isola_y_total', 'Y.');
    for (let i = 0; i < 1000; i++) {
      c.inc(i % 2 ? { fn: 'f', tenant: 't' } : { tenant: 't', fn: 'f' });
    }
    assert.equal(c.get({ fn: 'f', tenant: 't' }), 1000);
    assert.equal(c.render().split('\n')[2], 'isola_y_total{fn="f",tenant="t"} 1000');
  });
});

describe('Gauge', () => {
  test('values are collected at render time', () => {
    let n = 1;
    const g = new Gauge('isola_instances', 'Instances.', () => [
      [{ fn: 'a' }, n],
      [{}, n * 10],
    ]);
    assert.equal(
      g.render(),
      '# HELP isola_instances Instances.\n# TYPE isola_instances gauge\nisola_instances{fn="a"} 1\nisola_instances 10',
    );
    n = 2;
    assert.match(g.render(), /isola_instances\{fn="a"\} 2\nisola_instances 20$/);
  });
});

describe('Histogram', () => {
  test('cumulative buckets, +Inf, _sum and _count', () => {
    const h = new Histogram('isola_duration_seconds', 'Duration.', [0.1, 1, 10]);
    for (const v of [0.05, 0.1, 0.5, 2, 20]) h.observe({ fn: 'a' }, v);
    assert.equal(
      h.render(),
      [
        '# HELP isola_duration_seconds Duration.',
        '# TYPE isola_duration_seconds histogram',
        'isola_duration_seconds_bucket{fn="a",le="0.1"} 2',
        'isola_duration_seconds_bucket{fn="a",le="1"} 3',
        'isola_duration_seconds_bucket{fn="a",le="10"} 4',
        'isola_duration_seconds_bucket{fn="a",le="+Inf"} 5',
        'isola_duration_seconds_sum{fn="a"} 22.65',
        'isola_duration_seconds_count{fn="a"} 5',
      ].join('\n'),
    );
  });

  test('no labels; default buckets are sorted and cumulative counts never decrease', () => {
    assert.deepEqual(
      [...SECONDS_BUCKETS].sort((a, b) => a - b),
      SECONDS_BUCKETS,
    );
    const h = new Histogram('isola_h_seconds', 'H.');
    for (const v of [0.0005, 0.003, 0.2, 0.2, 7, 100]) h.observe({}, v);
    const lines = h.render().split('\n').slice(2);
    assert.equal(lines.length, SECONDS_BUCKETS.length + 3);
    assert.equal(lines[0], 'isola_h_seconds_bucket{le="0.001"} 1');
    const counts = lines.slice(0, SECONDS_BUCKETS.length + 1).map((l) => Number(l.split(' ')[1]));
    for (let i = 1; i < counts.length; i++) assert.ok(counts[i]! >= counts[i - 1]!);
    assert.equal(lines.at(-3), 'isola_h_seconds_bucket{le="+Inf"} 6');
    assert.equal(lines.at(-2)?.startsWith('isola_h_seconds_sum '), true);
    assert.equal(lines.at(-1), 'isola_h_seconds_count 6');
  });

  test('label values are escaped in bucket lines too', () => {
    const h = new Histogram('isola_h_seconds', 'H.', [1]);
    h.observe({ fn: 'q"\\\n' }, 0.5);
    assert.match(h.render(), /isola_h_seconds_bucket\{fn="q\\"\\\\\\n",le="1"\} 1/);
    checkText(`${h.render()}\n`);
  });
});

describe('Registry', () => {
  test('renders every metric as valid exposition text', () => {
    const r = new Registry();
    const c = r.add(new Counter('isola_a_total', 'A.'));
    r.add(new Gauge('isola_b', 'B.', () => [[{ t: 'x\ny' }, 3]]));
    const h = r.add(new Histogram('isola_c_seconds', 'C.', [0.5, 1]));
    c.inc({ k: 'v"' });
    h.observe({ fn: 'a' }, 0.7);
    h.observe({ fn: 'b' }, 0.1);
    const text = r.render();
    const samples = checkText(text);
    assert.equal(samples.length, 1 + 1 + 2 * 5);
    assert.match(text, /^# HELP isola_a_total A\.\n# TYPE isola_a_total counter\n/);
    assert.ok(text.includes('isola_c_seconds_bucket{fn="a",le="0.5"} 0\n'));
    assert.ok(text.includes('isola_c_seconds_bucket{fn="a",le="1"} 1\n'));
    assert.ok(text.includes('isola_c_seconds_count{fn="b"} 1\n'));
  });

  test('an empty registry renders a single newline', () => {
    assert.equal(new Registry().render(), '\n');
  });
});

describe('observeGc', () => {
  test("the process's scavenges are counted under kind minor, and stop when stopped", async () => {
    const h = new Histogram('isola_gc_pause_seconds', 'GC.', GC_BUCKETS);
    const stop = observeGc(h);
    const churn = () => {
      // ~100 MB of short-lived objects: several scavenges of the young generation
      let keep = 0;
      for (let i = 0; i < 200_000; i++) keep += new Array(64).fill(i).length;
      return keep;
    };
    const minorCount = () =>
      Number(/isola_gc_pause_seconds_count\{kind="minor"\} (\d+)/.exec(h.render())?.[1] ?? 0);
    churn();
    await new Promise((r) => setTimeout(r, 50)); // entries are delivered after the fact
    const seen = minorCount();
    assert.ok(seen > 0, h.render());
    checkText(`${h.render()}\n`);
    stop();
    churn();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(minorCount(), seen);
  });
});

describe('eventLoopDelayGauge', () => {
  test('reports a stall of the event loop, then forgets it at the scrape', async () => {
    const { gauge, stop } = eventLoopDelayGauge('t_loop_delay_seconds', 'test');
    try {
      const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
      await sleep(50);
      const until = performance.now() + 80;
      while (performance.now() < until) {
        // the loop stands still
      }
      await sleep(50);
      const max = (text: string) =>
        Number(/t_loop_delay_seconds\{quantile="1"\} (\S+)/.exec(text)?.[1] ?? Number.NaN);
      const first = gauge.render();
      assert.match(first, /# TYPE t_loop_delay_seconds gauge/);
      assert.match(first, /t_loop_delay_seconds\{quantile="0.5"\} /);
      assert.ok(max(first) >= 0.06, first);
      // The scrape reset it: a quiet loop since then reports far less.
      await sleep(100);
      assert.ok(max(gauge.render()) < 0.06, 'stall forgotten');
    } finally {
      stop();
    }
  });
});
