// Finding, removing and pruning stored images: the operations the CLI and the platform share.

import { IsolaError } from '../errors.js';
import { referencedDigests } from './manifest.js';
import { storeName } from './pull.js';
import { parseReference } from './reference.js';
import type { ImageRecord, ImageStore } from './store/store.js';

/**
 * Resolve what a user typed: a name (`alpine`, `127.0.0.1:5000/app:1`, `repo@sha256:…`), or an
 * id / digest prefix of at least 12 hex digits (`sha256:` optional) of the manifest, index or
 * config.
 */
export function resolveImage(store: ImageStore, query: string): ImageRecord {
  const hexPrefix = /^(sha256:)?[a-f0-9]{12,64}$/.test(query);
  if (hexPrefix) {
    const found = store.findByDigestPrefix(query);
    const distinct = new Set(found.map((r) => r.manifestDigest));
    if (distinct.size === 1 && found[0]) return found[0];
    if (distinct.size > 1)
      throw new IsolaError(
        'E_INVALID_ARGUMENT',
        `"${query}" matches ${distinct.size} images; give more digits`,
      );
  }
  let ref: ReturnType<typeof parseReference>;
  try {
    ref = parseReference(query);
  } catch (err) {
    if (hexPrefix) throw new IsolaError('E_IMAGE_NOT_FOUND', `no image ${query} in the store`);
    throw err;
  }
  const byName = store.getImage(storeName(ref));
  if (
    byName &&
    (!ref.digest || byName.digest === ref.digest || byName.manifestDigest === ref.digest)
  )
    return byName;
  if (ref.digest) {
    const repo = `${ref.registry}/${ref.repository}`;
    const hit = store
      .findByDigestPrefix(ref.digest)
      .find((r) => r.name.startsWith(`${repo}:`) || r.name.startsWith(`${repo}@`));
    if (hit) return hit;
  }
  throw new IsolaError(
    'E_IMAGE_NOT_FOUND',
    `no image ${query} in the store (pull or import it first)`,
  );
}

/**
 * Remove names; blobs go at the next prune. A name whose image a live process holds (a running
 * container, a pull in progress) is refused with E_IMAGE_IN_USE unless `force`; the container
 * keeps its root filesystem either way, because its lease keeps it from prune.
 */
export function removeImages(store: ImageStore, queries: string[], force = false): ImageRecord[] {
  const removed: ImageRecord[] = [];
  for (const q of queries) {
    const rec = resolveImage(store, q);
    const pids = store.holders([rec.manifestDigest]);
    if (pids.length > 0 && !force) {
      throw new IsolaError(
        'E_IMAGE_IN_USE',
        `${rec.name} is in use by process ${pids.join(', ')} (a running container?); stop it or use --force`,
        { details: { pids } },
      );
    }
    // An id removes every name of that image, as `docker rmi <id>` with one name would.
    const isId = /^(sha256:)?[a-f0-9]{12,64}$/.test(q);
    const names = isId
      ? store.listImages().filter((r) => r.manifestDigest === rec.manifestDigest)
      : [rec];
    for (const r of names) if (store.removeImage(r.name)) removed.push(r);
  }
  return removed;
}

export function pruneStore(store: ImageStore): ReturnType<ImageStore['gc']> {
  return store.gc(referencedDigests);
}
