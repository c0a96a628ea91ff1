// From a stored image to a root filesystem:
// - unpackImage: apply the layers in order onto a directory (each layer's uncompressed content
//   checked against its diff id in the image config);
// - ensureRootfsImage: a read-only ext4 image of the unpacked tree, built once per manifest digest
//   with `mkfs.ext4 -d` (no loop device, no mount), cached in the store and shared by every
//   sandbox of that image;
// - createWritableLayer: a per-sandbox qcow2 overlay backed by that image, so each sandbox writes
//   to its own layer while the base stays shared (in the page cache, too).

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { IsolaError } from '../errors.js';
import { openLayerStream } from './decompress.js';
import {
  type ImageConfig,
  type ImageManifest,
  parseImageConfig,
  parseManifest,
} from './manifest.js';
import type { ImageRecord, ImageStore } from './store/store.js';
import { type UnpackStats, applyLayer } from './unpack.js';

const execFileP = promisify(execFile);

/** Free space in each root filesystem image for the sandbox's writes (sparse: costs nothing until used). */
export const ROOTFS_HEADROOM_BYTES = 1024 * 1024 * 1024;

export interface LoadedImage {
  manifest: ImageManifest;
  config: ImageConfig;
}

export function loadImage(store: ImageStore, rec: ImageRecord): LoadedImage {
  const parsed = parseManifest(store.readBlob(rec.manifestDigest));
  if (parsed.kind !== 'manifest')
    throw new IsolaError('E_IMAGE_MANIFEST', `${rec.manifestDigest} is not an image manifest`);
  const config = parseImageConfig(store.readBlob(rec.configDigest), parsed.manifest.layers.length);
  return { manifest: parsed.manifest, config };
}

async function* hashing(
  src: AsyncIterable<Buffer>,
  h: ReturnType<typeof createHash>,
): AsyncGenerator<Buffer> {
  for await (const c of src) {
    h.update(c);
    yield c;
  }
}

/** Unpack every layer of a stored image onto `dir` (which should be empty). */
export async function unpackImage(
  store: ImageStore,
  rec: ImageRecord,
  dir: string,
  onLayer: (i: number, stats: UnpackStats) => void = () => undefined,
): Promise<UnpackStats[]> {
  const { manifest, config } = loadImage(store, rec);
  const lease = store.lease([
    rec.manifestDigest,
    rec.configDigest,
    ...manifest.layers.map((l) => l.digest),
  ]);
  try {
    const all: UnpackStats[] = [];
    for (const [i, layer] of manifest.layers.entries()) {
      if (!store.hasBlob(layer.digest))
        throw new IsolaError(
          'E_IMAGE_NOT_FOUND',
          `layer ${layer.digest} of ${rec.name} is missing from the store`,
        );
      const h = createHash('sha256');
      const stats = await applyLayer(
        dir,
        hashing(
          openLayerStream(layer.mediaType, createReadStream(store.blobPath(layer.digest))),
          h,
        ),
      );
      const diffId = `sha256:${h.digest('hex')}`;
      const want = config.rootfs.diff_ids[i];
      if (want?.startsWith('sha256:') && diffId !== want) {
        throw new IsolaError(
          'E_IMAGE_DIGEST_MISMATCH',
          `layer ${i + 1} (${layer.digest}) unpacks to ${diffId}, but the image config says ${want}`,
        );
      }
      all.push(stats);
      onLayer(i, stats);
    }
    return all;
  } finally {
    lease.release();
  }
}

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

export interface RootfsImage {
  path: string;
  bytes: number;
  /** False when it came from the cache. */
  built: boolean;
  ms: number;
}

/**
 * Build a directory into an ext4 image file with `mkfs.ext4 -d` (no root, no loop device; owners,
 * modes and xattrs copied); sparse, with `headroom` bytes free for writes. Failures are
 * E_STORE_NO_SPACE or E_STORE_IO; callers with other contexts re-map them.
 */
export async function mkfsFromDir(
  dir: string,
  image: string,
  headroom = ROOTFS_HEADROOM_BYTES,
): Promise<number> {
  const bytes = Math.ceil((treeBytes(dir) * 1.15 + headroom) / 2 ** 20) * 2 ** 20;
  try {
    await execFileP('mkfs.ext4', [
      '-q',
      '-F',
      '-O',
      '^has_journal',
      '-L',
      'rootfs',
      '-d',
      dir,
      image,
      `${bytes / 1024}k`,
    ]);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? (err as Error).message;
    if (/No space left/i.test(stderr))
      throw new IsolaError('E_STORE_NO_SPACE', `no space left building ${image}`);
    throw new IsolaError('E_STORE_IO', `mkfs.ext4 -d ${dir} failed: ${stderr.trim()}`, {
      cause: err,
    });
  }
  return bytes;
}

/** The shared read-only root filesystem image of a stored image, built on first use. */
export async function ensureRootfsImage(store: ImageStore, rec: ImageRecord): Promise<RootfsImage> {
  const t0 = performance.now();
  const final = store.rootfsPath(rec.manifestDigest);
  if (existsSync(final))
    return { path: final, bytes: statSync(final).size, built: false, ms: performance.now() - t0 };
  const scratch = store.scratch('rootfs');
  const tmpImage = `${final}.${process.pid}.${Math.random().toString(16).slice(2, 10)}`;
  try {
    const tree = path.join(scratch, 'tree');
    mkdirSync(tree);
    await unpackImage(store, rec, tree);
    const bytes = await mkfsFromDir(tree, tmpImage);
    // Another process may have finished the same image meanwhile; either copy is good.
    renameSync(tmpImage, final);
    return { path: final, bytes, built: true, ms: performance.now() - t0 };
  } catch (err) {
    rmSync(tmpImage, { force: true });
    throw err;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** A sandbox's private writable layer over a shared base image (qcow2, backing file read-only). */
export async function createWritableLayer(base: string, overlay: string): Promise<void> {
  try {
    await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', base, overlay]);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? (err as Error).message;
    throw new IsolaError('E_STORE_IO', `qemu-img create ${overlay} failed: ${stderr.trim()}`, {
      cause: err,
    });
  }
}
