// One process exec'd into a running container, seen from the host: connects to the container's
// monitor, asks for the exec, relays this process's stdin/stdout/stderr to it and exits with the
// exec'd process's status (dying by its signal). `exec --detach` runs this as its own process and
// reports its pid; without --detach `exec` runs it in place.
//   node exec-relay.js CONTROL_SOCKET PROCESS_JSON_FILE   (fd 3: readiness pipe)

import { readFileSync } from 'node:fs';
import os from 'node:os';
import { toIsolaError } from '../errors.js';
import { ControlClient } from './control.js';
import { reportReady } from './ready.js';

export async function relayExec(
  control: string,
  processSpec: unknown,
  onStarted: () => void,
): Promise<{ exitCode: number | null; signal: string | null }> {
  const client = await ControlClient.connect(control);
  const exited = new Promise<{ exitCode: number | null; signal: string | null }>((resolve) => {
    client.onEvent = (ev) => {
      if (ev.ev === 'stdout') process.stdout.write(ev.body);
      else if (ev.ev === 'stderr') process.stderr.write(ev.body);
      else if (ev.ev === 'exit') {
        client.close();
        resolve({ exitCode: ev.exitCode, signal: ev.signal });
      }
    };
    client.onClose = () => resolve({ exitCode: null, signal: 'SIGKILL' });
  });
  await client.call({ op: 'exec', process: processSpec, stdin: true });
  onStarted();
  // process.stdin, not an fs stream on fd 0: a blocking read of a pipe in libuv's thread pool
  // would keep the process from exiting (Node joins those threads at exit) until the pipe ends.
  const stdin = process.stdin;
  stdin.on('data', (d) => client.send({ op: 'stdin' }, d as Buffer));
  stdin.on('end', () => client.send({ op: 'stdin', eof: true }));
  stdin.on('error', () => client.send({ op: 'stdin', eof: true }));
  for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const) {
    process.on(s, () => client.send({ op: 'stdin', signal: s }));
  }
  const st = await exited;
  stdin.destroy();
  return st;
}

/** Exit like the exec'd process: same code, or the same signal. */
export async function exitLike(st: {
  exitCode: number | null;
  signal: string | null;
}): Promise<never> {
  await new Promise<void>((r) =>
    process.stdout.write('', () => process.stderr.write('', () => r())),
  );
  if (st.signal && st.signal in os.constants.signals) {
    for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const)
      process.removeAllListeners(s);
    process.kill(process.pid, st.signal as NodeJS.Signals);
    await new Promise((r) => setTimeout(r, 100));
    process.exit(128 + (os.constants.signals as Record<string, number>)[st.signal]!);
  }
  process.exit(st.exitCode ?? 1);
}

const isMain = process.argv[1]?.endsWith('exec-relay.js');
if (isMain) {
  const [control, specFile] = process.argv.slice(2) as [string, string];
  relayExec(control, JSON.parse(readFileSync(specFile, 'utf8')), () => reportReady()).then(
    exitLike,
    (err: unknown) => {
      reportReady(toIsolaError(err));
      process.exit(1);
    },
  );
}
