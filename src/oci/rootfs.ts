// The bundle's root filesystem reaches the guest as a block device: an ext4 image built from the
// directory with `mkfs.ext4 -d` (no root, no loop device), attached to the VM as a writable
// virtio-blk disk (read-only when config.root.readonly). Writes stay in the image: they do not
// flow back to the bundle directory (docs/spec-conformance.md).

import { execFile } from 'node:child_process';
import { lstatSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { IsolaError } from '../errors.js';

const execFileP = promisify(execFile);

/** Bundle annotation: run on this stored image's shared root filesystem instead of root.path. */
export const IMAGE_ANNOTATION = 'org.isola.image';
/** Bundle annotation: the image store to find it in (default: ISOLA_STORE or the user's store). */
export const IMAGE_STORE_ANNOTATION = 'org.isola.image.store';

/** Free space in the image for the container's writes. */
export const ROOTFS_WRITABLE_SLACK_BYTES = 256 * 1024 * 1024;

function treeBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    total += 4096;
    if (e.isDirectory()) total += treeBytes(p);
    else if (e.isFile()) total += lstatSync(p).size;
  }
  return total;
}

export async function buildRootfsImage(
  rootfsDir: string,
  image: string,
): Promise<{ bytes: number; ms: number }> {
  const t0 = performance.now();
  let content: number;
  try {
    if (!lstatSync(rootfsDir).isDirectory()) throw new Error('not a directory');
    content = treeBytes(rootfsDir);
  } catch (err) {
    throw new IsolaError(
      'E_OCI_INVALID_CONFIG',
      `rootfs ${rootfsDir} is not a readable directory: ${(err as Error).message}`,
    );
  }
  const bytes = Math.ceil((content * 1.2 + ROOTFS_WRITABLE_SLACK_BYTES) / 2 ** 20) * 2 ** 20;
  try {
    await execFileP('mkfs.ext4', [
      '-q',
      '-F',
      '-O',
      '^has_journal',
      '-L',
      'rootfs',
      '-d',
      rootfsDir,
      image,
      `${bytes / 1024}k`,
    ]);
  } catch (err) {
    throw new IsolaError(
      'E_OCI_INVALID_CONFIG',
      `cannot build a root filesystem image from ${rootfsDir}: ${(err as { stderr?: string }).stderr ?? (err as Error).message}`,
      { cause: err },
    );
  }
  return { bytes, ms: performance.now() - t0 };
}
