// Where isola keeps what it builds and what it runs: the asset cache (guest kernel, initramfs,
// guest image, probe results) and the run directory (one folder per live sandbox, which the
// reaper scans). Both overridable by environment for tests and packaging.

import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { IsolaError } from '../errors.js';

/** Repository root (this file is dist/src/assets/paths.js after the build). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export function cacheDir(): string {
  if (process.env.ISOLA_CACHE) return path.resolve(process.env.ISOLA_CACHE);
  const xdg = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return path.join(xdg, 'isola');
}

export function runDir(): string {
  if (process.env.ISOLA_RUN_DIR) return path.resolve(process.env.ISOLA_RUN_DIR);
  if (process.getuid?.() === 0) return '/run/isola';
  return path.join(
    process.env.XDG_RUNTIME_DIR ?? os.tmpdir(),
    `isola-${process.getuid?.() ?? 'user'}`,
  );
}

export interface GuestAssets {
  /** Content digest over all inputs (kernel package, busybox, node, agent, init scripts). */
  digest: string;
  kernel: string;
  initrd: string;
  rootfs: string;
  kernelRelease: string;
  files: Record<'kernel' | 'initrd' | 'rootfs', { path: string; sha256: string; bytes: number }>;
  builtAt: string;
}

export function currentAssetsFile(): string {
  return path.join(cacheDir(), 'assets', 'current.json');
}

/** The assets of the last successful build (scripts/setup.sh builds them). */
export function loadAssets(): GuestAssets {
  const file = currentAssetsFile();
  if (!existsSync(file)) {
    throw new IsolaError(
      'E_ASSETS_MISSING',
      `guest assets are not built (no ${file}); run scripts/setup.sh`,
    );
  }
  const assets = JSON.parse(readFileSync(file, 'utf8')) as GuestAssets;
  for (const p of [assets.kernel, assets.initrd, assets.rootfs]) {
    if (!existsSync(p))
      throw new IsolaError('E_ASSETS_MISSING', `guest asset ${p} is missing; run scripts/setup.sh`);
  }
  return assets;
}
