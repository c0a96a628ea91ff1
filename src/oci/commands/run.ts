// isola-runtime run [--bundle DIR] [--pid-file FILE] [--detach] ID: create + start; without
// --detach, wait for the container, remove it and exit with its status (128+N for a signal).
import os from 'node:os';
import { type Ctx, verbArgs } from '../cli.js';
import { FORWARDED_SIGNALS } from '../exit-like.js';
import { validateId } from '../state.js';
import { CREATE_OPTIONS, createContainer } from './create.js';
import { deleteContainer } from './delete.js';
import { startContainer } from './start.js';

export async function run(ctx: Ctx, argv: string[]): Promise<number> {
  const { values, positionals } = verbArgs(argv, {
    ...CREATE_OPTIONS,
    detach: { type: 'boolean', short: 'd' },
  });
  const id = validateId(positionals[0]);
  const detach = values.detach === true;
  const { child } = await createContainer(
    ctx,
    id,
    values.bundle as string | undefined,
    values['pid-file'] as string | undefined,
    !detach,
    values['console-socket'] as string | undefined,
  );
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => r({ code, signal })),
  );
  try {
    await startContainer(ctx, id);
  } catch (err) {
    await deleteContainer(ctx, id, true);
    throw err;
  }
  if (detach) return 0;
  // Signals to `run` go to the container, as with runc run.
  const forward = (sig: NodeJS.Signals) => child.kill(sig);
  for (const s of FORWARDED_SIGNALS) process.on(s, forward);
  const { code, signal } = await exited;
  await deleteContainer(ctx, id, true);
  if (signal) return 128 + ((os.constants.signals as Record<string, number>)[signal] ?? 0);
  return code ?? 1;
}
