// isola-runtime start ID: run the container's process (created -> running).
import { type Ctx, logLine, verbArgs } from '../cli.js';
import { controlCall } from '../control.js';
import { runHooks } from '../hooks.js';
import { checkTransition, ociState, validateId } from '../state.js';
import { loadBundle } from './create.js';

export async function startContainer(ctx: Ctx, id: string): Promise<void> {
  const state = ctx.store.read(id);
  checkTransition(id, state.status, 'start');
  const config = loadBundle(state.bundle);
  await runHooks(config.hooks, 'startContainer', ociState(state));
  await controlCall(state.control, { op: 'start' });
  try {
    await runHooks(config.hooks, 'poststart', ociState(ctx.store.read(id)));
  } catch (err) {
    logLine(ctx.g, 'warning', `poststart hook: ${(err as Error).message}`);
  }
}

export async function start(ctx: Ctx, argv: string[]): Promise<number> {
  const { positionals } = verbArgs(argv, {});
  await startContainer(ctx, validateId(positionals[0]));
  return 0;
}
