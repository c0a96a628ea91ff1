// isola-runtime state ID: print the OCI state JSON.
import { type Ctx, verbArgs } from '../cli.js';
import { ociState, validateId } from '../state.js';

export async function state(ctx: Ctx, argv: string[]): Promise<number> {
  const { positionals } = verbArgs(argv, {});
  const s = ctx.store.read(validateId(positionals[0]));
  process.stdout.write(`${JSON.stringify(ociState(s), null, 2)}\n`);
  return 0;
}
