// isola-runtime: the OCI runtime command line (runc's verbs and global flags) over isola
// micro-VMs, so containerd (io.containerd.runc.v2 with --runc-binary / BinaryName), Podman
// (--runtime) and Kubernetes (a RuntimeClass handler) run containers in VMs unchanged.
// One file per verb in commands/.
import { IsolaError } from '../errors.js';
import { type Ctx, DEFAULT_ROOT, type Globals, fail, normaliseFlags } from './cli.js';
import { create } from './commands/create.js';
import { del } from './commands/delete.js';
import { exec } from './commands/exec.js';
import { features } from './commands/features.js';
import { kill } from './commands/kill.js';
import { list } from './commands/list.js';
import { pause, resume } from './commands/pause.js';
import { ps } from './commands/ps.js';
import { run } from './commands/run.js';
import { spec } from './commands/spec.js';
import { start } from './commands/start.js';
import { state } from './commands/state.js';
import { StateStore } from './state.js';

const VERBS: Record<string, (ctx: Ctx, argv: string[]) => Promise<number>> = {
  create,
  start,
  state,
  kill,
  delete: del,
  run,
  exec,
  ps,
  list,
  pause,
  resume,
  spec,
  features: () => features(),
};

const USAGE = `usage: isola-runtime [--root DIR] [--log FILE] [--log-format text|json] [--systemd-cgroup] VERB ...
verbs: ${Object.keys(VERBS).join(', ')}, --version
`;

/** Global flags that take a value; the rest are booleans. */
const GLOBAL_VALUE = new Set(['--root', '--log', '--log-format', '--criu', '--rootless']);
const GLOBAL_BOOL = new Set(['--systemd-cgroup', '--debug', '--no-subreaper']);

export async function main(rawArgv: string[]): Promise<number> {
  // Only the global flags are normalised here; each verb normalises its own flags, and the
  // command of `exec` is left alone.
  let argv = rawArgv;
  const g: Globals = {
    root: process.env.ISOLA_RUNTIME_ROOT ?? DEFAULT_ROOT,
    log: null,
    logFormat: 'text',
    debug: false,
  };
  let i = 0;
  for (; i < argv.length; i++) {
    argv = [...argv.slice(0, i), ...normaliseFlags([argv[i]!]), ...argv.slice(i + 1)];
    const a = argv[i]!;
    const [flag, inline] = a.includes('=')
      ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]
      : [a, undefined];
    if (GLOBAL_VALUE.has(flag)) {
      const v = inline ?? argv[++i];
      if (v === undefined)
        return fail(g, new IsolaError('E_INVALID_ARGUMENT', `${flag} needs a value`));
      if (flag === '--root') g.root = v;
      else if (flag === '--log') g.log = v;
      else if (flag === '--log-format') g.logFormat = v === 'json' ? 'json' : 'text';
    } else if (GLOBAL_BOOL.has(flag)) {
      if (flag === '--debug') g.debug = true;
    } else break;
  }
  const verb = argv[i];
  if (verb === '--version' || verb === '-v' || verb === 'version') {
    process.stdout.write('isola-runtime version 0.1.0\nspec: 1.1.0\n');
    return 0;
  }
  if (!verb || verb === '--help' || verb === '-h' || verb === 'help') {
    process.stdout.write(USAGE);
    return verb ? 0 : 2;
  }
  const handler = VERBS[verb];
  if (!handler)
    return fail(g, new IsolaError('E_INVALID_ARGUMENT', `unknown verb ${verb}\n${USAGE}`));
  try {
    return await handler({ g, store: new StateStore(g.root) }, argv.slice(i + 1));
  } catch (err) {
    return fail(g, err);
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
