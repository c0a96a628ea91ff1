// Extended attributes for unpacked layers (file capabilities such as `security.capability` on
// ping, SELinux labels, user.* attributes). Node.js has no setxattr, so a small C helper
// (native/setxattrs.c) applies a whole layer's attributes in one process. It is compiled on first
// use with the gcc that set-up installs and cached by its source digest; without a compiler the
// attributes are counted as skipped, never silently claimed.

import { spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { nativeHelper } from '../assets/native.js';

export interface XattrRecord {
  /** Absolute host path of the entry (already resolved inside the root). */
  path: string;
  xattrs: Record<string, Buffer>;
}

/** The helper binary, compiled if needed; null when it cannot be built here. */
export function xattrHelper(): string | null {
  return nativeHelper('setxattrs');
}

/**
 * Apply the records; returns how many attributes were applied and how many were not (no helper,
 * a filesystem without xattr support, a namespace we may not write). Every path's parent must
 * still resolve inside `root`, else that record is dropped (counted as not applied).
 */
export async function applyXattrs(
  root: string,
  records: XattrRecord[],
): Promise<{ applied: number; failed: number }> {
  const total = records.reduce((n, r) => n + Object.keys(r.xattrs).length, 0);
  if (total === 0) return { applied: 0, failed: 0 };
  const bin = xattrHelper();
  if (!bin) return { applied: 0, failed: total };
  const parts: Buffer[] = [];
  let dropped = 0;
  for (const r of records) {
    let parent: string;
    try {
      parent = realpathSync(path.dirname(r.path));
    } catch {
      dropped += Object.keys(r.xattrs).length;
      continue;
    }
    if (parent !== root && !parent.startsWith(`${root}/`)) {
      dropped += Object.keys(r.xattrs).length;
      continue;
    }
    for (const [name, value] of Object.entries(r.xattrs)) {
      parts.push(
        Buffer.from(
          `${path.join(parent, path.basename(r.path))}\0${name}\0${value.toString('hex')}\0`,
        ),
      );
    }
  }
  const input = Buffer.concat(parts);
  const out = await new Promise<string>((resolve) => {
    const child = spawn(bin, [], { stdio: ['pipe', 'pipe', 'ignore'] });
    let s = '';
    child.stdout.on('data', (b: Buffer) => {
      s += b.toString();
    });
    child.once('error', () => resolve(''));
    child.once('close', () => resolve(s));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
  const m = /applied (\d+) failed (\d+)/.exec(out);
  if (!m) return { applied: 0, failed: total };
  return { applied: Number(m[1]), failed: Number(m[2]) + dropped };
}
