// Small host helpers written in C (native/*.c) for what Node.js cannot do itself (setxattr,
// namespaces and pivot_root). Each is compiled on first use with the gcc that set-up installs
// and cached by its source digest, so a changed source is rebuilt and an old binary is never run.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, cacheDir } from './paths.js';

const built = new Map<string, string | null>();

/**
 * The binary for native/NAME.c, compiled if needed; null when it cannot be built here (no
 * compiler). Safe across processes: each compiles to its own temporary name and renames.
 */
export function nativeHelper(name: string): string | null {
  const known = built.get(name);
  if (known !== undefined) return known;
  let bin: string | null = null;
  try {
    const source = path.join(REPO_ROOT, 'native', `${name}.c`);
    const digest = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 16);
    bin = path.join(cacheDir(), 'bin', `isola-${name.replace(/^isola-/, '')}-${digest}`);
    if (!existsSync(bin)) {
      mkdirSync(path.dirname(bin), { recursive: true });
      const tmp = `${bin}.${process.pid}`;
      execFileSync('gcc', ['-O2', '-Wall', '-o', tmp, source], { stdio: 'ignore' });
      renameSync(tmp, bin);
    }
  } catch {
    bin = null;
  }
  built.set(name, bin);
  return bin;
}
