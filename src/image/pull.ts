// Pulling an image: resolve the reference at the registry, pick the platform's manifest from an
// index, download config and layers concurrently into the store (verified, resumable, shared with
// other pulls), then record the name. The store is consistent whatever step fails.

import { createHash } from 'node:crypto';
import { IsolaError } from '../errors.js';
import {
  type Descriptor,
  MANIFEST_ACCEPT,
  type Platform,
  checkManifestMediaTypes,
  formatPlatform,
  hostPlatform,
  parseImageConfig,
  parseManifest,
  selectPlatform,
} from './manifest.js';
import {
  type ImageReference,
  formatReference,
  manifestReference,
  parseDigest,
  parseReference,
  repoName,
} from './reference.js';
import { type Credentials, credentialsFromAuthFile } from './registry/auth.js';
import { RegistryClient } from './registry/client.js';
import type { ImageRecord, ImageStore, Lease } from './store/store.js';

export type PullEvent =
  | { type: 'resolved'; reference: string; digest: string; mediaType: string }
  | { type: 'platform'; platform: string; digest: string }
  | { type: 'blobs'; blobs: Array<{ digest: string; size: number; present: boolean }> }
  | { type: 'progress'; digest: string; bytes: number }
  | { type: 'blob-done'; digest: string }
  | { type: 'waiting'; digest: string };

export interface PullOptions {
  platform?: Platform | undefined;
  credentials?: Credentials | undefined;
  insecure?: string[] | undefined;
  /** Parallel blob downloads (default 4). */
  concurrency?: number | undefined;
  onEvent?: ((e: PullEvent) => void) | undefined;
  /** Client overrides (tests). */
  retries?: number | undefined;
  backoffMs?: number | undefined;
}

export function digestOf(bytes: Buffer, algorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** The name an image gets in the store for this reference. */
export function storeName(ref: ImageReference): string {
  if (ref.tag !== undefined) return `${repoName(ref)}:${ref.tag}`;
  return formatReference(ref);
}

export async function pullImage(
  store: ImageStore,
  reference: string,
  opts: PullOptions = {},
): Promise<ImageRecord> {
  const ref = parseReference(reference);
  const emit = opts.onEvent ?? (() => undefined);
  const client = new RegistryClient({
    registry: ref.registry,
    credentials: opts.credentials ?? credentialsFromAuthFile(ref.registry),
    insecure: opts.insecure,
    retries: opts.retries,
    backoffMs: opts.backoffMs,
  });
  const want = opts.platform ?? hostPlatform();

  const top = await client.getManifest(ref.repository, manifestReference(ref), MANIFEST_ACCEPT);
  const topDigest = verifyManifestDigest(top.bytes, ref.digest, top.headerDigest);
  const parsedTop = parseManifest(top.bytes, top.mediaType);
  emit({
    type: 'resolved',
    reference: formatReference(ref),
    digest: topDigest,
    mediaType: parsedTop.mediaType,
  });

  const lease = store.lease([topDigest]);
  try {
    store.putBlob(topDigest, top.bytes);
    let manifestDigest = topDigest;
    let parsed = parsedTop;
    let indexDigest: string | null = null;
    if (parsedTop.kind === 'index') {
      indexDigest = topDigest;
      const desc = selectPlatform(parsedTop.index, want);
      emit({ type: 'platform', platform: formatPlatform(want), digest: desc.digest });
      lease.add([desc.digest]);
      const m = await client.getManifest(ref.repository, desc.digest, MANIFEST_ACCEPT);
      verifyManifestDigest(m.bytes, desc.digest, m.headerDigest);
      if (m.bytes.length !== desc.size) {
        throw new IsolaError(
          'E_IMAGE_DIGEST_MISMATCH',
          `manifest ${desc.digest} is ${m.bytes.length} bytes, the index says ${desc.size}`,
        );
      }
      parsed = parseManifest(m.bytes, desc.mediaType);
      if (parsed.kind !== 'manifest')
        throw new IsolaError(
          'E_IMAGE_MANIFEST',
          `index entry ${desc.digest} is not an image manifest`,
        );
      store.putBlob(desc.digest, m.bytes);
      manifestDigest = desc.digest;
    }
    if (parsed.kind !== 'manifest')
      throw new IsolaError('E_IMAGE_MANIFEST', 'expected an image manifest');
    const manifest = parsed.manifest;
    checkManifestMediaTypes(manifest);
    const blobs = [manifest.config, ...manifest.layers];
    lease.add(blobs.map((b) => b.digest));
    emit({
      type: 'blobs',
      blobs: blobs.map((b) => ({
        digest: b.digest,
        size: b.size,
        present: store.hasBlob(b.digest),
      })),
    });
    await downloadAll(store, lease, client, ref.repository, blobs, opts.concurrency ?? 4, emit);

    const config = parseImageConfig(store.readBlob(manifest.config.digest), manifest.layers.length);
    const rec: ImageRecord = {
      name: storeName(ref),
      digest: topDigest,
      manifestDigest,
      configDigest: manifest.config.digest,
      indexDigest,
      platform: formatPlatform({
        os: config.os ?? want.os,
        architecture: config.architecture ?? want.architecture,
        variant: config.variant,
      }),
      size: blobs.reduce((n, b) => n + b.size, 0),
      created: config.created ?? null,
      source: 'registry',
      addedAt: new Date().toISOString(),
    };
    store.putImage(rec);
    return rec;
  } finally {
    lease.release();
  }
}

function verifyManifestDigest(
  bytes: Buffer,
  expected: string | undefined,
  header: string | undefined,
): string {
  const algorithm = expected ? parseDigest(expected).algorithm : 'sha256';
  const got = digestOf(bytes, algorithm);
  if (expected && got !== expected) {
    throw new IsolaError(
      'E_IMAGE_DIGEST_MISMATCH',
      `manifest content does not match its digest: expected ${expected}, got ${got}`,
      { details: { expected, actual: got } },
    );
  }
  if (!expected && header && header.startsWith(`${algorithm}:`) && header !== got) {
    throw new IsolaError(
      'E_IMAGE_DIGEST_MISMATCH',
      `manifest content does not match the registry's Docker-Content-Digest ${header} (got ${got})`,
      { details: { expected: header, actual: got } },
    );
  }
  return got;
}

async function downloadAll(
  store: ImageStore,
  lease: Lease,
  client: RegistryClient,
  repository: string,
  blobs: Descriptor[],
  concurrency: number,
  emit: (e: PullEvent) => void,
): Promise<void> {
  const queue = [...new Map(blobs.map((b) => [b.digest, b])).values()];
  let failed: unknown;
  const worker = async () => {
    for (;;) {
      const b = queue.shift();
      if (!b || failed) return;
      try {
        await fetchBlob(store, lease, client, repository, b, emit);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(concurrency, queue.length)) }, worker),
  );
  if (failed) throw failed;
}

async function fetchBlob(
  store: ImageStore,
  lease: Lease,
  client: RegistryClient,
  repository: string,
  b: Descriptor,
  emit: (e: PullEvent) => void,
): Promise<void> {
  for (;;) {
    const claim = store.claimIngest(lease, b.digest);
    if (claim === 'present') {
      emit({ type: 'blob-done', digest: b.digest });
      return;
    }
    if (claim === 'owned') break;
    // Another live process is downloading it: wait for it to finish (or die).
    emit({ type: 'waiting', digest: b.digest });
    await new Promise((r) => setTimeout(r, 200));
  }
  let done = 0;
  try {
    await client.downloadBlob(repository, b.digest, b.size, store.ingestPath(b.digest), (n) => {
      done += n;
      emit({ type: 'progress', digest: b.digest, bytes: done });
    });
    store.commitIngest(lease, b.digest);
    emit({ type: 'blob-done', digest: b.digest });
  } catch (err) {
    const discard =
      err instanceof IsolaError &&
      (err.code === 'E_IMAGE_DIGEST_MISMATCH' || err.code === 'E_STORE_NO_SPACE');
    store.abandonIngest(lease, b.digest, discard);
    throw err;
  }
}
