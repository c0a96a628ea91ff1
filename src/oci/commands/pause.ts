// isola-runtime pause ID / resume ID: freeze and thaw the container's whole micro-VM.
import { type Ctx, verbArgs } from '../cli.js';
import { controlCall } from '../control.js';
import { checkTransition, validateId } from '../state.js';

async function toggle(ctx: Ctx, argv: string[], op: 'pause' | 'resume'): Promise<number> {
  const { positionals } = verbArgs(argv, {});
  const id = validateId(positionals[0]);
  const s = ctx.store.read(id);
  checkTransition(id, s.status, op);
  await controlCall(s.control, { op });
  return 0;
}

export const pause = (ctx: Ctx, argv: string[]) => toggle(ctx, argv, 'pause');
export const resume = (ctx: Ctx, argv: string[]) => toggle(ctx, argv, 'resume');
