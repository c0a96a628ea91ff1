// Numeric settings from the environment: a value that is not a finite number of at least 0 (unset,
// a typo, a negative) falls back to the default, so a bad setting never becomes NaN in a timer
// or a limit.

export function envNumber(
  name: string,
  dflt: number,
  env: NodeJS.ProcessEnv = process.env,
): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return dflt;
  const v = Number(raw);
  return Number.isFinite(v) && v >= 0 ? v : dflt;
}
