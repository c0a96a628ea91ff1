// The bundle's root filesystem reaches the guest as a block device: an ext4 image built from the
// directory (src/image/rootfs.ts mkfsFromDir: `mkfs.ext4 -d`, no root, no loop device), attached
// to the VM as a writable virtio-blk disk (read-only when config.root.readonly). Writes stay in
// the image: they do not flow back to the bundle directory (docs/spec-conformance.md).
// Bundles made from stored images skip this: see IMAGE_ANNOTATION.

import { lstatSync } from 'node:fs';
import { IsolaError } from '../errors.js';
import { mkfsFromDir } from '../image/rootfs.js';

/** Bundle annotation: run on this stored image's shared root filesystem instead of root.path. */
export const IMAGE_ANNOTATION = 'org.isola.image';
/** Bundle annotation: the image store to find it in (default: ISOLA_STORE or the user's store). */
export const IMAGE_STORE_ANNOTATION = 'org.isola.image.store';

/** Free space in the image for the container's writes. */
export const ROOTFS_WRITABLE_SLACK_BYTES = 256 * 1024 * 1024;

export async function buildRootfsImage(
  rootfsDir: string,
  image: string,
): Promise<{ bytes: number; ms: number }> {
  const t0 = performance.now();
  try {
    if (!lstatSync(rootfsDir).isDirectory()) throw new Error('not a directory');
  } catch (err) {
    throw new IsolaError(
      'E_OCI_INVALID_CONFIG',
      `rootfs ${rootfsDir} is not a readable directory: ${(err as Error).message}`,
    );
  }
  try {
    const bytes = await mkfsFromDir(rootfsDir, image, ROOTFS_WRITABLE_SLACK_BYTES);
    return { bytes, ms: performance.now() - t0 };
  } catch (err) {
    throw new IsolaError(
      'E_OCI_INVALID_CONFIG',
      `cannot build a root filesystem image from ${rootfsDir}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}
