// Bundles for the OCI runtime tests: a busybox root filesystem and a config.json from
// `isola-runtime spec`'s template with overrides.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { defaultSpec } from '../src/oci/commands/spec.js';
import { ROOT } from './helpers.js';

export const RUNTIME = path.join(ROOT, 'bin/isola-runtime');

export function makeRootfs(dir: string, marker = 'isola-test-rootfs'): string {
  for (const d of [
    'bin',
    'sbin',
    'usr/bin',
    'usr/sbin',
    'etc',
    'proc',
    'sys',
    'dev',
    'tmp',
    'root',
    'run',
  ]) {
    mkdirSync(path.join(dir, d), { recursive: true });
  }
  copyFileSync('/bin/busybox', path.join(dir, 'bin/busybox'));
  for (const applet of execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)) {
    if (applet !== 'busybox') symlinkSync('busybox', path.join(dir, 'bin', applet));
  }
  writeFileSync(
    path.join(dir, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n',
  );
  writeFileSync(path.join(dir, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  writeFileSync(path.join(dir, marker), 'yes\n');
  return dir;
}

export interface Bundle {
  dir: string;
  rootfs: string;
}

// biome-ignore lint/suspicious/noExplicitAny: tests patch arbitrary parts of a JSON document
export type SpecJson = Record<string, any>;

export function makeBundle(base: string, name: string, patch: (spec: SpecJson) => void): Bundle {
  const dir = path.join(base, name);
  const rootfs = makeRootfs(path.join(dir, 'rootfs'));
  const spec = defaultSpec() as SpecJson;
  spec.root.readonly = false;
  patch(spec);
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(spec, null, 2));
  return { dir, rootfs };
}

export function tempBase(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'isola-test-oci-'));
}

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runtime(
  root: string,
  args: string[],
  opts: { input?: string; timeoutMs?: number } = {},
): Ran {
  const r = spawnSync(RUNTIME, ['--root', root, ...args], {
    input: opts.input ?? '',
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 120_000,
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}
