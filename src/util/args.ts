// Command-line parsing shared by `isola` and `isola-runtime`: node:util parseArgs with its
// errors turned into E_INVALID_ARGUMENT, so both CLIs report bad flags the same way.
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { IsolaError } from '../errors.js';

export function parseCli<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    throw new IsolaError('E_INVALID_ARGUMENT', (err as Error).message, { cause: err });
  }
}
