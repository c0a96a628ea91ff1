// Import and export of images as files:
// - OCI image layouts, as a directory or a tar (oci-layout, index.json, blobs/<alg>/<hex>);
// - `docker save` archives (manifest.json with Config, RepoTags and Layers; layers plain or
//   compressed tars), including Docker 25+ archives that are both at once.
// Export writes one archive that is both an OCI layout and a docker-save archive, so
// `docker load`, `podman load`, `skopeo copy oci-archive:` and `isola image import` all read it.

import { createHash } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import path from 'node:path';
import { createGunzip } from 'node:zlib';
import { IsolaError } from '../errors.js';
import { sniffCompression } from './decompress.js';
import {
  type Descriptor,
  MT,
  type Platform,
  checkManifestMediaTypes,
  formatPlatform,
  hostPlatform,
  parseImageConfig,
  parseManifest,
  selectPlatform,
} from './manifest.js';
import { digestOf, storeName } from './pull.js';
import {
  familiarName,
  formatReference,
  isDigest,
  parseDigest,
  parseReference,
} from './reference.js';
import type { ImageRecord, ImageStore, Lease } from './store/store.js';
import { readTar } from './tar-read.js';
import { TarWriter } from './tar-write.js';

export interface ImportOptions {
  /** Name for the imported image (only when the archive holds one image). */
  name?: string | undefined;
  platform?: Platform | undefined;
}

const REF_NAME = 'org.opencontainers.image.ref.name';
const CONTAINERD_NAME = 'io.containerd.image.name';

function archiveError(msg: string, cause?: unknown): IsolaError {
  return new IsolaError('E_IMAGE_ARCHIVE', msg, cause === undefined ? {} : { cause });
}

/** Import every image in an archive or layout directory; returns the records written. */
export async function importArchive(
  store: ImageStore,
  source: string,
  opts: ImportOptions = {},
): Promise<ImageRecord[]> {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(source);
  } catch (err) {
    throw archiveError(`cannot read ${source}: ${(err as Error).message}`, err);
  }
  const lease = store.lease();
  let scratch: string | undefined;
  try {
    let dir = source;
    let move = false;
    if (!st.isDirectory()) {
      scratch = store.scratch('import');
      await extractArchive(source, scratch);
      dir = scratch;
      move = true;
    }
    const fallback =
      path
        .basename(source)
        .replace(/\.(tar|tgz|tar\.gz|oci)$/i, '')
        .toLowerCase()
        .replace(/[^a-z0-9._-]/g, '-') || 'import';
    if (existsSync(path.join(dir, 'index.json')) && existsSync(path.join(dir, 'oci-layout'))) {
      return await importLayout(store, lease, dir, move, opts, fallback);
    }
    if (existsSync(path.join(dir, 'manifest.json')))
      return await importDockerSave(store, lease, dir, move, opts, fallback);
    throw archiveError(
      `${source} is neither an OCI image layout (oci-layout, index.json) nor a docker-save archive (manifest.json)`,
    );
  } finally {
    lease.release();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
}

/** Unpack the regular files of an archive into dir (names checked; links resolved inside). */
async function extractArchive(file: string, dir: string): Promise<void> {
  const kind = sniffFile(file);
  let source: AsyncIterable<Buffer> = createReadStream(file);
  if (kind === 'gzip') {
    source = createReadStream(file).pipe(createGunzip());
  } else if (kind !== 'none') {
    throw archiveError(
      `${file}: ${kind}-compressed archives are not supported; decompress it first`,
    );
  }
  const links: Array<[string, string]> = [];
  try {
    for await (const { header, body } of readTar(source)) {
      const name = safeName(header.path);
      if (name === '') continue;
      const dest = path.join(dir, name);
      if (header.type === 'dir') {
        mkdirSync(dest, { recursive: true });
      } else if (header.type === 'file') {
        mkdirSync(path.dirname(dest), { recursive: true });
        const out = createWriteStream(dest);
        for await (const chunk of body)
          if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
        await new Promise<void>((resolve, reject) => {
          out.once('error', reject);
          out.end(resolve);
        });
      } else if (header.type === 'symlink' || header.type === 'hardlink') {
        // Old docker-save archives link repeated layers; resolve them after extraction.
        const target =
          header.type === 'symlink'
            ? path.posix.join(path.posix.dirname(name), header.linkname)
            : header.linkname;
        links.push([name, safeName(target)]);
      }
    }
  } catch (err) {
    if (err instanceof IsolaError && err.code === 'E_IMAGE_BAD_LAYER')
      throw archiveError(`${file}: ${err.message}`, err);
    throw err;
  }
  for (const [name, target] of links) {
    if (!existsSync(path.join(dir, target))) continue;
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    copyFileSync(path.join(dir, target), path.join(dir, name));
  }
}

function safeName(raw: string): string {
  const n = path.posix.normalize(raw.replace(/^\.\/+/, ''));
  if (n === '.' || n === './') return '';
  if (n.startsWith('/') || n === '..' || n.startsWith('../')) {
    throw archiveError(`archive entry "${raw}" points outside the archive`);
  }
  return n.replace(/\/$/, '');
}

function blobFile(dir: string, digest: string): string {
  const { algorithm, hex } = parseDigest(digest);
  return path.join(dir, 'blobs', algorithm, hex);
}

function readJson(file: string, what: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw archiveError(`${what} is missing or not JSON: ${(err as Error).message}`, err);
  }
}

async function importLayout(
  store: ImageStore,
  lease: Lease,
  dir: string,
  move: boolean,
  opts: ImportOptions,
  fallback: string,
): Promise<ImageRecord[]> {
  const index = parseManifest(
    Buffer.from(JSON.stringify(readJson(path.join(dir, 'index.json'), 'index.json'))),
    MT.ociIndex,
  );
  if (index.kind !== 'index') throw archiveError('index.json is not an image index');
  const entries = index.index.manifests;
  if (entries.length === 0) throw archiveError('the layout holds no images');
  if (opts.name && entries.length > 1)
    throw archiveError(
      `the layout holds ${entries.length} images; a name can only be given for one`,
    );
  const out: ImageRecord[] = [];
  for (const entry of entries) {
    const annotated = entry.annotations?.[CONTAINERD_NAME] ?? entry.annotations?.[REF_NAME];
    const name = opts.name ?? nameFromAnnotation(annotated, fallback);
    out.push(await importEntry(store, lease, dir, move, entry, name, opts.platform));
  }
  return out;
}

function nameFromAnnotation(annotated: string | undefined, fallback: string): string {
  if (annotated) {
    // A full reference, or (as skopeo and buildah write) just a tag.
    if (annotated.includes('/') || (!/^[\w][\w.-]{0,127}$/.test(annotated) && !isDigest(annotated)))
      return annotated;
    return `localhost/${fallback}:${annotated}`;
  }
  return `localhost/${fallback}:latest`;
}

async function importEntry(
  store: ImageStore,
  lease: Lease,
  dir: string,
  move: boolean,
  entry: Descriptor,
  nameRaw: string,
  platform: Platform | undefined,
): Promise<ImageRecord> {
  const ref = parseReference(nameRaw);
  const topBytes = readBlobFile(dir, entry.digest);
  lease.add([entry.digest]);
  let parsed = parseManifest(topBytes, entry.mediaType);
  store.putBlob(entry.digest, topBytes);
  let manifestDigest = entry.digest;
  let indexDigest: string | null = null;
  const want = platform ?? hostPlatform();
  if (parsed.kind === 'index') {
    indexDigest = entry.digest;
    const d = selectPlatform(parsed.index, want);
    const bytes = readBlobFile(dir, d.digest);
    lease.add([d.digest]);
    parsed = parseManifest(bytes, d.mediaType);
    store.putBlob(d.digest, bytes);
    manifestDigest = d.digest;
  }
  if (parsed.kind !== 'manifest') throw archiveError(`${manifestDigest} is not an image manifest`);
  const m = parsed.manifest;
  checkManifestMediaTypes(m);
  lease.add([m.config.digest, ...m.layers.map((l) => l.digest)]);
  const cfgBytes = readBlobFile(dir, m.config.digest);
  const config = parseImageConfig(cfgBytes, m.layers.length);
  store.putBlob(m.config.digest, cfgBytes);
  for (const l of m.layers) {
    if (store.hasBlob(l.digest)) continue;
    const f = blobFile(dir, l.digest);
    if (!existsSync(f)) throw archiveError(`layer ${l.digest} is missing from the archive`);
    await store.putBlobFile(l.digest, f, move);
  }
  const rec: ImageRecord = {
    name: storeName(ref),
    digest: entry.digest,
    manifestDigest,
    configDigest: m.config.digest,
    indexDigest,
    platform: formatPlatform({
      os: config.os ?? want.os,
      architecture: config.architecture ?? want.architecture,
      variant: config.variant,
    }),
    size: m.config.size + m.layers.reduce((n, l) => n + l.size, 0),
    created: config.created ?? null,
    source: 'import',
    addedAt: new Date().toISOString(),
  };
  store.putImage(rec);
  return rec;
}

function readBlobFile(dir: string, digest: string): Buffer {
  const f = blobFile(dir, digest);
  let bytes: Buffer;
  try {
    bytes = readFileSync(f);
  } catch {
    throw archiveError(`blob ${digest} is missing from the archive`);
  }
  const got = digestOf(bytes, parseDigest(digest).algorithm);
  if (got !== digest) {
    throw new IsolaError(
      'E_IMAGE_DIGEST_MISMATCH',
      `archive blob ${digest} does not match its digest (got ${got})`,
      {
        details: { expected: digest, actual: got },
      },
    );
  }
  return bytes;
}

interface DockerSaveEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

async function importDockerSave(
  store: ImageStore,
  lease: Lease,
  dir: string,
  move: boolean,
  opts: ImportOptions,
  fallback: string,
): Promise<ImageRecord[]> {
  const manifest = readJson(path.join(dir, 'manifest.json'), 'manifest.json');
  if (!Array.isArray(manifest) || manifest.length === 0)
    throw archiveError('manifest.json lists no images');
  if (opts.name && manifest.length > 1)
    throw archiveError(
      `the archive holds ${manifest.length} images; a name can only be given for one`,
    );
  const out: ImageRecord[] = [];
  for (const e of manifest as DockerSaveEntry[]) {
    if (typeof e?.Config !== 'string' || !Array.isArray(e.Layers))
      throw archiveError('manifest.json entry without Config and Layers');
    const cfgBytes = readFileSafe(dir, e.Config);
    const configDigest = digestOf(cfgBytes);
    const config = parseImageConfig(cfgBytes, e.Layers.length);
    store.putBlob(configDigest, cfgBytes);
    lease.add([configDigest]);
    const layers: Descriptor[] = [];
    for (let i = 0; i < e.Layers.length; i++) {
      const f = path.join(dir, safeName(e.Layers[i] as string));
      if (!existsSync(f)) throw archiveError(`layer ${e.Layers[i]} is missing from the archive`);
      const kind = sniffFile(f);
      const digest = await fileDigest(f);
      if (kind === 'none' && digest !== config.rootfs.diff_ids[i]) {
        throw archiveError(
          `layer ${e.Layers[i]} does not match diff id ${config.rootfs.diff_ids[i]} in the image config`,
        );
      }
      lease.add([digest]);
      const size = await store.putBlobFile(digest, f, move);
      layers.push({
        mediaType: `application/vnd.oci.image.layer.v1.tar${kind === 'gzip' ? '+gzip' : kind === 'zstd' ? '+zstd' : ''}`,
        digest,
        size,
      });
    }
    const m = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.ociManifest,
        config: { mediaType: MT.ociConfig, digest: configDigest, size: cfgBytes.length },
        layers,
      }),
    );
    const manifestDigest = digestOf(m);
    lease.add([manifestDigest]);
    store.putBlob(manifestDigest, m);
    const names = opts.name
      ? [opts.name]
      : (e.RepoTags ?? []).length
        ? (e.RepoTags as string[])
        : [`localhost/${fallback}:latest`];
    for (const n of names) {
      const ref = parseReference(n);
      const rec: ImageRecord = {
        name: storeName(ref),
        digest: manifestDigest,
        manifestDigest,
        configDigest,
        indexDigest: null,
        platform: formatPlatform({
          os: config.os ?? 'linux',
          architecture: config.architecture ?? hostPlatform().architecture,
          variant: config.variant,
        }),
        size: cfgBytes.length + layers.reduce((s, l) => s + l.size, 0),
        created: config.created ?? null,
        source: 'import',
        addedAt: new Date().toISOString(),
      };
      store.putImage(rec);
      out.push(rec);
    }
  }
  return out;
}

function readFileSafe(dir: string, name: string): Buffer {
  try {
    return readFileSync(path.join(dir, safeName(name)));
  } catch (err) {
    throw archiveError(`${name} is missing from the archive`, err);
  }
}

/** Compression of a file, from its first bytes. */
function sniffFile(file: string): ReturnType<typeof sniffCompression> {
  const head = Buffer.alloc(8);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, head, 0, 8, 0);
  } finally {
    closeSync(fd);
  }
  return sniffCompression(head);
}

async function fileDigest(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/** Write an image as a tar that is both an OCI image layout and a docker-save archive. */
export async function exportImage(
  store: ImageStore,
  rec: ImageRecord,
  outFile: string,
): Promise<{ bytes: number }> {
  const lease = store.lease([rec.manifestDigest, rec.configDigest]);
  const tmp = `${outFile}.partial-${process.pid}`;
  try {
    const mBytes = store.readBlob(rec.manifestDigest);
    const parsed = parseManifest(mBytes);
    if (parsed.kind !== 'manifest')
      throw new IsolaError('E_IMAGE_MANIFEST', `${rec.manifestDigest} is not an image manifest`);
    const m = parsed.manifest;
    lease.add(m.layers.map((l) => l.digest));
    const ref = parseReference(rec.name);
    const tag = ref.tag ?? 'latest';
    const index = {
      schemaVersion: 2,
      mediaType: MT.ociIndex,
      manifests: [
        {
          mediaType: parsed.mediaType,
          digest: rec.manifestDigest,
          size: mBytes.length,
          annotations: { [CONTAINERD_NAME]: rec.name, [REF_NAME]: tag },
        },
      ],
    };
    const blobName = (d: string) => `blobs/${d.replace(':', '/')}`;
    const dockerManifest = [
      {
        Config: blobName(rec.configDigest),
        RepoTags: ref.digest === undefined ? [familiarName(ref)] : [],
        Layers: m.layers.map((l) => blobName(l.digest)),
      },
    ];
    const out = createWriteStream(tmp);
    const w = new TarWriter(out);
    await w.add({ path: 'blobs/', type: 'dir' });
    await w.add({ path: 'blobs/sha256/', type: 'dir' });
    await w.add({ path: 'oci-layout', type: 'file', data: '{"imageLayoutVersion":"1.0.0"}' });
    await w.add({ path: 'index.json', type: 'file', data: JSON.stringify(index) });
    await w.add({ path: 'manifest.json', type: 'file', data: JSON.stringify(dockerManifest) });
    await w.add({ path: blobName(rec.manifestDigest), type: 'file', data: mBytes });
    await w.add({
      path: blobName(rec.configDigest),
      type: 'file',
      data: store.readBlob(rec.configDigest),
    });
    const seen = new Set<string>();
    for (const l of m.layers) {
      if (seen.has(l.digest)) continue;
      seen.add(l.digest);
      const p = store.blobPath(l.digest);
      await w.addStream(
        { path: blobName(l.digest), type: 'file', mode: 0o644 },
        statSync(p).size,
        createReadStream(p),
      );
    }
    await w.finish();
    renameSync(tmp, outFile);
    return { bytes: statSync(outFile).size };
  } catch (err) {
    rmSync(tmp, { force: true });
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC')
      throw new IsolaError('E_STORE_NO_SPACE', `no space left writing ${outFile}`);
    throw err;
  } finally {
    lease.release();
  }
}
