// isola-runtime exec [--process FILE | [--cwd DIR] [--env K=V]... [--user UID[:GID]] ID CMD ARGS...]
//                    [--detach] [--pid-file FILE] [--console-socket SOCK] [--tty] ID
// Runs another process in a running container (in its namespaces and cgroup, inside the VM).
// With --detach the process is represented on the host by a relay process whose pid goes to
// --pid-file; it exits with the exec'd process's status, as runc's exec'd process would.
import { spawn } from 'node:child_process';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { IsolaError } from '../../errors.js';
import { type Ctx, normaliseFlags, verbArgs } from '../cli.js';
import { relayExec } from '../exec-relay.js';
import { exitLike } from '../exit-like.js';
import { awaitReady, detachReady } from '../ready.js';
import { checkTransition, validateId } from '../state.js';
import { loadBundle } from './create.js';

const RELAY = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'exec-relay.js');

/** Flags end at the container id: what follows it is the command, with its own flags. */
function splitAtId(raw: string[], valued: Set<string>): [flags: string[], rest: string[]] {
  const argv = [...raw];
  for (let i = 0; i < argv.length; i++) {
    argv[i] = normaliseFlags([argv[i]!])[0]!;
    const a = argv[i]!;
    if (a === '--') return [argv.slice(0, i), argv.slice(i + 1)];
    if (!a.startsWith('-')) return [argv.slice(0, i + 1), argv.slice(i + 1)];
    if (valued.has(a)) i++;
  }
  return [argv, []];
}

const VALUED = new Set([
  '--process',
  '-p',
  '--pid-file',
  '--console-socket',
  '--cwd',
  '--env',
  '-e',
  '--user',
  '-u',
  '--preserve-fds',
]);

export async function exec(ctx: Ctx, rawArgv: string[]): Promise<number> {
  const [flagArgs, command] = splitAtId(rawArgv, VALUED);
  const parsed = verbArgs(flagArgs, {
    process: { type: 'string', short: 'p' },
    detach: { type: 'boolean', short: 'd' },
    'pid-file': { type: 'string' },
    'console-socket': { type: 'string' },
    tty: { type: 'boolean', short: 't' },
    cwd: { type: 'string' },
    env: { type: 'string', short: 'e', multiple: true },
    user: { type: 'string', short: 'u' },
    'preserve-fds': { type: 'string' },
  });
  const values = parsed.values;
  const positionals = [...parsed.positionals, ...command];
  const id = validateId(positionals[0]);
  const s = ctx.store.read(id);
  checkTransition(id, s.status, 'exec');
  let spec: Record<string, unknown>;
  if (values.process) {
    try {
      spec = JSON.parse(readFileSync(values.process as string, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new IsolaError(
        'E_OCI_INVALID_CONFIG',
        `cannot read process file: ${(err as Error).message}`,
      );
    }
  } else {
    const args = positionals.slice(1);
    if (args.length === 0)
      throw new IsolaError('E_INVALID_ARGUMENT', 'exec needs --process FILE or a command');
    const base = loadBundle(s.bundle).process;
    const [uid, gid] = ((values.user as string | undefined) ?? `${base.user.uid}:${base.user.gid}`)
      .split(':')
      .map(Number);
    spec = {
      args,
      env: [...(base.env ?? []), ...((values.env as string[] | undefined) ?? [])],
      cwd: (values.cwd as string | undefined) ?? base.cwd,
      user: { uid: uid ?? 0, gid: gid ?? 0 },
      terminal: values.tty === true,
    };
  }
  if (!values.detach) return exitLike(await relayExec(s.control, spec, () => {}));

  const specFile = path.join(ctx.store.dir(id), `exec-${process.pid}-${Date.now()}.json`);
  writeFileSync(specFile, JSON.stringify(spec));
  const child = spawn(process.execPath, [RELAY, s.control, specFile], {
    stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
  });
  try {
    await awaitReady(child, 'exec');
  } finally {
    rmSync(specFile, { force: true });
  }
  if (values['pid-file']) {
    const f = path.resolve(values['pid-file'] as string);
    writeFileSync(`${f}.tmp`, String(child.pid));
    renameSync(`${f}.tmp`, f);
  }
  detachReady(child);
  return 0;
}
