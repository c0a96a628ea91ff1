// Encodes a Plan into the line-based wire format that guest-assets/cinit.c reads (the format is
// documented in plan.ts), and decodes it back into fields for tests. Pure functions.
import type { CapSet, Namespace, Plan } from './plan.js';

const NAMESPACES: readonly Namespace[] = ['mount', 'uts', 'ipc', 'pid', 'cgroup', 'net'];
/** Emitted in this order; cinit applies the sets in its own (runc's) order anyway. */
const CAP_SETS: readonly CapSet[] = [
  'bounding',
  'effective',
  'permitted',
  'inheritable',
  'ambient',
];

/** Escapes one field: backslash, TAB and newline become \\, \t and \n. NUL can't be carried. */
function field(value: string, what: string): string {
  if (value.includes('\0')) throw new Error(`plan: NUL character in ${what}`);
  return value.replace(/[\\\t\n]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : '\\n'));
}

/** An item of a comma-separated field (mount options, capabilities): no comma of its own. */
function item(value: string, what: string): string {
  if (value === '' || value.includes(','))
    throw new Error(`plan: bad ${what} ${JSON.stringify(value)}`);
  return value;
}

/** uid, gid, group ids: what the kernel takes (uid_t; -1 means "unchanged" there, so not it). */
function id(value: number, what: string): string {
  if (!Number.isSafeInteger(value) || value < 0 || value > 0xfffffffe)
    throw new Error(`plan: bad ${what} ${value}`);
  return String(value);
}

function limit(value: number | 'unlimited', what: string): string {
  if (value === 'unlimited') return value;
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`plan: bad ${what} ${value}`);
  return String(value);
}

export function encodePlan(plan: Plan): string {
  const lines: string[] = [];
  const add = (directive: string, ...fields: Array<[value: string, what: string]>) => {
    lines.push([directive, ...fields.map(([v, what]) => field(v, what))].join('\t'));
  };
  const proc = plan.process;

  add('rootfs', [plan.rootfs, 'rootfs']);
  if (plan.readonlyRoot) add('readonly', ['1', 'readonly']);
  if (plan.hostname !== undefined) add('hostname', [plan.hostname, 'hostname']);
  for (const ns of plan.namespaces) {
    if (!NAMESPACES.includes(ns)) throw new Error(`plan: unknown namespace ${String(ns)}`);
    add('ns', [ns, 'namespace']);
  }
  for (const m of plan.mounts) {
    const options = m.options.map((o) => item(o, `option of mount ${m.destination}`)).join(',');
    add(
      'mount',
      [m.source, 'mount source'],
      [m.destination, 'mount destination'],
      [m.type, 'mount type'],
      [options, 'mount options'],
    );
  }
  for (const p of plan.maskedPaths) add('masked', [p, 'masked path']);
  for (const p of plan.readonlyPaths) add('rdonly', [p, 'readonly path']);
  if (plan.cgroup) {
    add('cgroup', [plan.cgroup.dir, 'cgroup dir']);
    for (const [file, value] of plan.cgroup.limits) {
      // A file name inside the cgroup directory, never a path out of it.
      if (file === '' || file.includes('/')) throw new Error(`plan: bad cgroup file ${file}`);
      add('cglimit', [file, 'cgroup file'], [value, `cgroup ${file}`]);
    }
  }
  for (const [key, value] of plan.sysctls) add('sysctl', [key, 'sysctl key'], [value, key]);
  for (const r of proc.rlimits) {
    const soft = limit(r.soft, `${r.type} soft limit`);
    const hard = limit(r.hard, `${r.type} hard limit`);
    add('rlimit', [r.type, 'rlimit type'], [soft, 'soft'], [hard, 'hard']);
  }
  for (const set of CAP_SETS) {
    const caps = proc.capabilities[set];
    if (caps === undefined) continue;
    add(
      'cap',
      [set, 'capability set'],
      [caps.map((c) => item(c, `${set} capability`)).join(','), set],
    );
  }
  if (proc.noNewPrivileges) add('nnp', ['1', 'nnp']);
  add('uid', [id(proc.uid, 'uid'), 'uid']);
  add('gid', [id(proc.gid, 'gid'), 'gid']);
  // Always written (possibly empty): cinit replaces the supplementary groups with exactly these.
  add('groups', [proc.additionalGids.map((g) => id(g, 'additional gid')).join(','), 'groups']);
  if (proc.umask !== undefined) {
    if (!Number.isInteger(proc.umask) || proc.umask < 0 || proc.umask > 0o777)
      throw new Error(`plan: bad umask ${proc.umask}`);
    add('umask', [proc.umask.toString(8).padStart(4, '0'), 'umask']);
  }
  add('cwd', [proc.cwd, 'cwd']);
  if (proc.terminal) {
    const dim = (n: number, what: string) => {
      if (!Number.isInteger(n) || n < 0 || n > 65535)
        throw new Error(`plan: bad terminal ${what} ${n}`);
      return String(n);
    };
    add(
      'terminal',
      [dim(proc.terminal.rows, 'rows'), 'rows'],
      [dim(proc.terminal.cols, 'cols'), 'cols'],
    );
  }
  for (const e of proc.env) add('env', [e, 'env entry']);
  if (proc.args.length === 0) throw new Error('plan: no process args');
  for (const a of proc.args) add('arg', [a, 'arg']);
  return `${lines.join('\n')}\n`;
}

/** Splits encoded text into lines of unescaped fields (the inverse of encodePlan's escaping). */
export function decodePlanLines(text: string): string[][] {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) =>
      line.split('\t').map((f) =>
        f.replace(/\\(.?)/gs, (_, c: string) => {
          if (c === '\\') return '\\';
          if (c === 't') return '\t';
          if (c === 'n') return '\n';
          throw new Error(`plan: bad escape \\${c} in ${JSON.stringify(line)}`);
        }),
      ),
    );
}
