// One process exec'd into a running container, seen from the host: connects to the container's
// monitor, asks for the exec, relays this process's stdin/stdout/stderr to it and exits with the
// exec'd process's status (dying by its signal). `exec --detach` runs this as its own process and
// reports its pid; without --detach `exec` runs it in place.
//   node exec-relay.js CONTROL_SOCKET PROCESS_JSON_FILE   (fd 3: readiness pipe)

import { readFileSync } from 'node:fs';
import { toIsolaError } from '../errors.js';
import { ControlClient } from './control.js';
import { FORWARDED_SIGNALS, exitLike } from './exit-like.js';
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
  for (const s of FORWARDED_SIGNALS) {
    process.on(s, () => client.send({ op: 'stdin', signal: s }));
  }
  const st = await exited;
  stdin.destroy();
  return st;
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
