// isola-runtime list [--format table|json] [--quiet]: containers under --root.
import { type Ctx, verbArgs } from '../cli.js';
import { ociState } from '../state.js';

export async function list(ctx: Ctx, argv: string[]): Promise<number> {
  const { values } = verbArgs(argv, {
    format: { type: 'string', short: 'f' },
    quiet: { type: 'boolean', short: 'q' },
  });
  const states = ctx.store.list().flatMap((id) => {
    try {
      return [ociState(ctx.store.read(id))];
    } catch {
      return [];
    }
  });
  if (values.quiet) process.stdout.write(states.map((s) => `${s.id}\n`).join(''));
  else if (values.format === 'json') process.stdout.write(`${JSON.stringify(states)}\n`);
  else {
    process.stdout.write('ID\tPID\tSTATUS\tBUNDLE\tCREATED\n');
    for (const s of states)
      process.stdout.write(`${s.id}\t${s.pid}\t${s.status}\t${s.bundle}\t${s.created}\n`);
  }
  return 0;
}
