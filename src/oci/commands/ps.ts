// isola-runtime ps [--format table|json] ID: the container's processes (pids inside its VM).
import { type Ctx, verbArgs } from '../cli.js';
import { controlCall } from '../control.js';
import { validateId } from '../state.js';

export async function ps(ctx: Ctx, argv: string[]): Promise<number> {
  const { values, positionals } = verbArgs(argv, { format: { type: 'string', short: 'f' } });
  const s = ctx.store.read(validateId(positionals[0]));
  const pids =
    s.status === 'stopped' ? [] : ((await controlCall(s.control, { op: 'ps' })) as number[]);
  if (values.format === 'json') process.stdout.write(`${JSON.stringify(pids)}\n`);
  else process.stdout.write(`PID\n${pids.join('\n')}${pids.length ? '\n' : ''}`);
  return 0;
}
