// isola-runtime kill [--all] ID [SIGNAL]: send a signal (default SIGTERM) to the container's
// process (--all: every process of the container). SIGNAL: a name (TERM, SIGTERM) or a number.
import os from 'node:os';
import { IsolaError } from '../../errors.js';
import { type Ctx, verbArgs } from '../cli.js';
import { controlCall } from '../control.js';
import { checkTransition, validateId } from '../state.js';

export function parseSignal(s: string | undefined): string {
  if (s === undefined) return 'SIGTERM';
  const signals = os.constants.signals as Record<string, number>;
  if (/^\d+$/.test(s)) {
    const name = Object.keys(signals).find((k) => signals[k] === Number(s));
    if (name) return name;
  } else {
    const name = s.toUpperCase().startsWith('SIG') ? s.toUpperCase() : `SIG${s.toUpperCase()}`;
    if (name in signals) return name;
  }
  throw new IsolaError('E_INVALID_ARGUMENT', `unknown signal ${s}`);
}

export async function kill(ctx: Ctx, argv: string[]): Promise<number> {
  const { values, positionals } = verbArgs(argv, { all: { type: 'boolean', short: 'a' } });
  const id = validateId(positionals[0]);
  const signal = parseSignal(positionals[1]);
  const s = ctx.store.read(id);
  checkTransition(id, s.status, 'kill');
  await controlCall(s.control, { op: 'kill', signal, all: values.all === true });
  return 0;
}
