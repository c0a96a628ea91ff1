// bench:guest's function: as trivial as bench/functions/noop for load, and on request a look
// from inside the guest while that load runs:
//   {"probe": true}      the guest's CPU counters (/proc/stat), interrupts, this process's
//                        threads' CPU ticks and every guest thread's context switches;
//   {"profile": MS}      a V8 CPU profile of this runtime (handler included) for MS ms: self
//                        time by function, in percent of samples.
import { readFileSync, readdirSync } from 'node:fs';
import { Session } from 'node:inspector';

const call = (s, method, params) =>
  new Promise((resolve, reject) => s.post(method, params, (e, r) => (e ? reject(e) : resolve(r))));

function probe() {
  const stat = readFileSync('/proc/stat', 'utf8').split('\n');
  const threads = {};
  for (const tid of readdirSync('/proc/self/task')) {
    const st = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    const status = readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
    threads[tid] = {
      name: readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim(),
      ticks: Number(f[11]) + Number(f[12]),
      voluntary: Number(/^voluntary_ctxt_switches:\s*(\d+)/m.exec(status)?.[1] ?? 0),
      involuntary: Number(/^nonvoluntary_ctxt_switches:\s*(\d+)/m.exec(status)?.[1] ?? 0),
    };
  }
  // Context switches of every thread in the guest (kernel threads included), by process (its
  // name or script, and pid) and thread name: which ones switch per invocation.
  const switches = {};
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let tids = [];
    let proc = '?';
    try {
      tids = readdirSync(`/proc/${pid}/task`);
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const script = argv.slice(1).find((a) => a.endsWith('.js'));
      proc = script ? script.split('/').pop() : readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      continue;
    }
    for (const tid of tids) {
      try {
        const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
        const name = /^Name:\s*(.*)$/m.exec(status)?.[1] ?? '?';
        const v = Number(/^voluntary_ctxt_switches:\s*(\d+)/m.exec(status)?.[1] ?? 0);
        const nv = Number(/^nonvoluntary_ctxt_switches:\s*(\d+)/m.exec(status)?.[1] ?? 0);
        // The agent's threads one by one, with the kernel function each sleeps in.
        const agent = proc === 'main.js';
        const key = `${proc}[${pid}] ${name}${agent ? `/${tid}` : ''}`;
        const s = switches[key] ?? { voluntary: 0, involuntary: 0 };
        s.voluntary += v;
        s.involuntary += nv;
        if (agent) {
          try {
            s.wchan = readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'utf8').trim();
          } catch {}
        }
        switches[key] = s;
      } catch {
        // gone meanwhile
      }
    }
  }
  return {
    switches,
    cpu: stat[0].trim().split(/\s+/).slice(1).map(Number),
    ctxt: Number(stat.find((l) => l.startsWith('ctxt ')).split(' ')[1]),
    interrupts: readFileSync('/proc/interrupts', 'utf8'),
    threads,
  };
}

async function profile(ms) {
  const s = new Session();
  s.connect();
  try {
    await call(s, 'Profiler.enable');
    await call(s, 'Profiler.setSamplingInterval', { interval: 200 });
    await call(s, 'Profiler.start');
    await new Promise((r) => setTimeout(r, ms));
    const { profile: p } = await call(s, 'Profiler.stop');
    const nodes = new Map(p.nodes.map((n) => [n.id, n]));
    const self = new Map();
    for (const id of p.samples) {
      const f = nodes.get(id).callFrame;
      const where = f.url ? ` ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}` : '';
      const k = `${f.functionName || '(anonymous)'}${where}`;
      self.set(k, (self.get(k) ?? 0) + 1);
    }
    const n = p.samples.length;
    return [...self]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 25)
      .map(([k, c]) => ({ fn: k, percent: Math.round((1000 * c) / n) / 10 }));
  } finally {
    s.disconnect();
  }
}

export default async (event) => {
  if (event?.probe) return probe();
  if (event?.profile) return profile(Number(event.profile));
  return { ok: true, n: event?.n ?? null };
};
