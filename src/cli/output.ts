// CLI output helpers and the one place where errors become exit codes and messages.
import { IsolaError, toIsolaError } from '../errors.js';

export { parseCli } from '../util/args.js';

export function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

/** Print an error the way every command does and return the exit code for it. */
export function reportError(err: unknown, json: boolean): number {
  const e = toIsolaError(err);
  if (json) {
    process.stderr.write(`${JSON.stringify({ error: e.toJSON() })}\n`);
  } else {
    process.stderr.write(`isola: ${e.code}: ${e.message}\n`);
    if (e.code === 'E_INTERNAL' && e.cause instanceof Error && e.cause.stack) {
      process.stderr.write(`${e.cause.stack}\n`);
    }
  }
  return e.exitCode;
}

export function usageError(message: string): IsolaError {
  return new IsolaError('E_INVALID_ARGUMENT', message);
}

export function ms(n: number): string {
  return n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${Math.round(n)} ms`;
}
