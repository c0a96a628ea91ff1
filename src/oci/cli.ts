// Shared pieces of the isola-runtime verbs: global options, logging the way runc does (the
// containerd shim reads the --log file, in JSON with --log-format json, to report errors),
// and argument parsing that accepts runc's flag spellings.

import { appendFileSync } from 'node:fs';
import type { ParseArgsConfig } from 'node:util';
import { IsolaError, toIsolaError } from '../errors.js';
import { parseCli } from '../util/args.js';
import type { StateStore } from './state.js';

export interface Globals {
  root: string;
  log: string | null;
  logFormat: 'text' | 'json';
  debug: boolean;
}

/** runc's default root is /run/runc; ours sits beside it. */
export const DEFAULT_ROOT = '/run/isola-runtime';

export interface Ctx {
  g: Globals;
  store: StateStore;
}

export function logLine(
  g: Globals,
  level: 'error' | 'warning' | 'info' | 'debug',
  msg: string,
): void {
  if (!g.log) return;
  const line =
    g.logFormat === 'json'
      ? JSON.stringify({ level, msg, time: new Date().toISOString() })
      : `time="${new Date().toISOString()}" level=${level} msg=${JSON.stringify(msg)}`;
  try {
    appendFileSync(g.log, `${line}\n`);
  } catch {
    // an unwritable log must not hide the real error
  }
}

export function fail(g: Globals, err: unknown): number {
  const e = toIsolaError(err);
  logLine(g, 'error', `${e.code}: ${e.message}`);
  process.stderr.write(`isola-runtime: ${e.code}: ${e.message}\n`);
  return e.exitCode === 0 ? 1 : e.exitCode;
}

/** parseArgs for one verb; unknown flags are an error, flags may follow positionals. */
export function verbArgs(
  argv: string[],
  options: NonNullable<ParseArgsConfig['options']>,
): { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] } {
  const r = parseCli({ args: normaliseFlags(argv), options, allowPositionals: true, strict: true });
  return {
    values: r.values as Record<string, string | boolean | string[] | undefined>,
    positionals: r.positionals,
  };
}

/** runc accepts single-dash long flags (-bundle); normalise them to --bundle. */
export function normaliseFlags(argv: string[]): string[] {
  return argv.map((a) => (/^-[a-z][a-z-]+(=.*)?$/.test(a) ? `-${a}` : a));
}
