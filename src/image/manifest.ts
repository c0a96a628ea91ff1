// Manifests, image indexes and image configs (OCI image spec and Docker schema 2): media types,
// validation of the JSON shapes, and platform selection from an index. Pure; no I/O.

import { z } from 'zod';
import { IsolaError } from '../errors.js';
import { isDigest } from './reference.js';

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

export const LAYER_MEDIA_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
]);

/** What we ask registries for, best first. */
export const MANIFEST_ACCEPT = [MT.ociIndex, MT.ociManifest, MT.dockerList, MT.dockerManifest];

export const isIndexType = (mt: string) => mt === MT.ociIndex || mt === MT.dockerList;
export const isManifestType = (mt: string) => mt === MT.ociManifest || mt === MT.dockerManifest;

const digestSchema = z.string().refine(isDigest, 'not a valid digest');

export const platformSchema = z
  .object({
    os: z.string().min(1),
    architecture: z.string().min(1),
    variant: z.string().optional(),
    'os.version': z.string().optional(),
    'os.features': z.array(z.string()).optional(),
    features: z.array(z.string()).optional(),
  })
  .passthrough();
export type Platform = { os: string; architecture: string; variant?: string };

export const descriptorSchema = z
  .object({
    mediaType: z.string().min(1),
    digest: digestSchema,
    size: z.number().int().min(0),
    urls: z.array(z.string()).optional(),
    annotations: z.record(z.string()).optional(),
    platform: platformSchema.optional(),
  })
  .passthrough();
export type Descriptor = z.infer<typeof descriptorSchema>;

const manifestSchema = z
  .object({
    schemaVersion: z.literal(2),
    mediaType: z.string().optional(),
    config: descriptorSchema,
    layers: z.array(descriptorSchema),
    annotations: z.record(z.string()).optional(),
  })
  .passthrough();
export type ImageManifest = z.infer<typeof manifestSchema>;

const indexSchema = z
  .object({
    schemaVersion: z.literal(2),
    mediaType: z.string().optional(),
    manifests: z.array(descriptorSchema),
    annotations: z.record(z.string()).optional(),
  })
  .passthrough();
export type ImageIndex = z.infer<typeof indexSchema>;

const imageConfigSchema = z
  .object({
    architecture: z.string().optional(),
    os: z.string().optional(),
    variant: z.string().optional(),
    created: z.string().optional(),
    config: z
      .object({
        User: z.string().optional(),
        Env: z.array(z.string()).nullable().optional(),
        Entrypoint: z.array(z.string()).nullable().optional(),
        Cmd: z.array(z.string()).nullable().optional(),
        WorkingDir: z.string().optional(),
        Labels: z.record(z.string()).nullable().optional(),
        StopSignal: z.string().optional(),
        ExposedPorts: z.record(z.unknown()).nullable().optional(),
        Volumes: z.record(z.unknown()).nullable().optional(),
      })
      .passthrough()
      .nullable()
      .optional(),
    rootfs: z.object({ type: z.literal('layers'), diff_ids: z.array(digestSchema) }).passthrough(),
    history: z.array(z.unknown()).optional(),
  })
  .passthrough();
export type ImageConfig = z.infer<typeof imageConfigSchema>;

function parseJson(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new IsolaError('E_IMAGE_MANIFEST', `${what} is not JSON: ${(err as Error).message}`);
  }
}

function zodMessage(err: z.ZodError): string {
  return err.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
}

export type ParsedManifest =
  | { kind: 'index'; mediaType: string; index: ImageIndex }
  | { kind: 'manifest'; mediaType: string; manifest: ImageManifest };

/**
 * Parse a manifest or index. The media type comes from the document itself, else from the
 * transport (Content-Type or descriptor); schema 1 and anything unknown are refused.
 */
export function parseManifest(bytes: Buffer, transportMediaType?: string): ParsedManifest {
  const doc = parseJson(bytes, 'manifest');
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw new IsolaError('E_IMAGE_MANIFEST', 'manifest is not a JSON object');
  const o = doc as Record<string, unknown>;
  const declared = typeof o.mediaType === 'string' ? o.mediaType : undefined;
  let mediaType = declared ?? stripParams(transportMediaType);
  if (
    o.schemaVersion === 1 ||
    mediaType === MT.dockerSchema1 ||
    mediaType === MT.dockerSchema1Signed
  ) {
    throw new IsolaError(
      'E_IMAGE_MEDIA_TYPE',
      'Docker schema 1 manifests are deprecated and not supported; push the image again with a current client',
    );
  }
  // OCI manifests may omit mediaType; the shape tells them apart.
  if (mediaType === undefined || mediaType === 'application/json' || mediaType === 'text/plain') {
    mediaType = Array.isArray(o.manifests)
      ? MT.ociIndex
      : Array.isArray(o.layers)
        ? MT.ociManifest
        : undefined;
  }
  if (mediaType === undefined || !(isIndexType(mediaType) || isManifestType(mediaType))) {
    throw new IsolaError(
      'E_IMAGE_MEDIA_TYPE',
      `unknown manifest media type ${mediaType ?? '(none)'}`,
      {
        details: { mediaType },
      },
    );
  }
  if (isIndexType(mediaType)) {
    const r = indexSchema.safeParse(doc);
    if (!r.success)
      throw new IsolaError('E_IMAGE_MANIFEST', `invalid image index: ${zodMessage(r.error)}`);
    return { kind: 'index', mediaType, index: r.data };
  }
  const r = manifestSchema.safeParse(doc);
  if (!r.success)
    throw new IsolaError('E_IMAGE_MANIFEST', `invalid image manifest: ${zodMessage(r.error)}`);
  return { kind: 'manifest', mediaType, manifest: r.data };
}

function stripParams(mt: string | undefined): string | undefined {
  return mt?.split(';')[0]?.trim() || undefined;
}

/** Refuse configs and layers of media types we cannot use, before anything is downloaded. */
export function checkManifestMediaTypes(m: ImageManifest): void {
  const cfg = m.config.mediaType;
  if (cfg !== MT.ociConfig && cfg !== MT.dockerConfig) {
    throw new IsolaError(
      'E_IMAGE_MEDIA_TYPE',
      `config media type ${cfg} is not a container image config (an artifact, not an image?)`,
      { details: { mediaType: cfg } },
    );
  }
  for (const l of m.layers) {
    if (!LAYER_MEDIA_TYPES.has(l.mediaType)) {
      throw new IsolaError('E_IMAGE_MEDIA_TYPE', `unknown layer media type ${l.mediaType}`, {
        details: { mediaType: l.mediaType, digest: l.digest },
      });
    }
  }
}

export function parseImageConfig(bytes: Buffer, layerCount: number): ImageConfig {
  const r = imageConfigSchema.safeParse(parseJson(bytes, 'image config'));
  if (!r.success)
    throw new IsolaError('E_IMAGE_MANIFEST', `invalid image config: ${zodMessage(r.error)}`);
  if (r.data.rootfs.diff_ids.length !== layerCount) {
    throw new IsolaError(
      'E_IMAGE_MANIFEST',
      `image config lists ${r.data.rootfs.diff_ids.length} layer diff ids but the manifest has ${layerCount} layers`,
    );
  }
  return r.data;
}

// --- platforms ---

const GOARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
};

/** The platform of this host, in OCI terms. */
export function hostPlatform(): Platform {
  const architecture = GOARCH[process.arch] ?? process.arch;
  return architecture === 'arm64'
    ? { os: 'linux', architecture, variant: 'v8' }
    : { os: 'linux', architecture };
}

/** `os/arch[/variant]` */
export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9._-]+$/.test(p))) {
    throw new IsolaError('E_INVALID_ARGUMENT', `platform "${s}" is not os/arch[/variant]`);
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return variant !== undefined ? { os, architecture, variant } : { os, architecture };
}

export function formatPlatform(p: {
  os: string;
  architecture: string;
  variant?: string | undefined;
}): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** Default variants, so that `linux/arm64` matches `linux/arm64/v8` and `linux/arm` matches v7. */
function normVariant(arch: string, v: string | undefined): string | undefined {
  if (v) return v;
  if (arch === 'arm64') return 'v8';
  if (arch === 'arm') return 'v7';
  return undefined;
}

/**
 * Choose the manifest for `want` from an index: exact os and architecture, and the variant when
 * the request names one (or the architecture's default variant). Attestation manifests
 * (`unknown/unknown`) never match. First match in index order wins, as in containerd.
 */
export function selectPlatform(index: ImageIndex, want: Platform): Descriptor {
  const wantVariant = normVariant(want.architecture, want.variant);
  const candidates = index.manifests.filter(
    (d) => isManifestType(d.mediaType) || d.mediaType === MT.ociIndex,
  );
  const match = candidates.find((d) => {
    const p = d.platform;
    if (!p || p.os !== want.os || p.architecture !== want.architecture) return false;
    const v = normVariant(p.architecture, p.variant);
    return wantVariant === undefined || v === undefined || v === wantVariant;
  });
  if (!match || !isManifestType(match.mediaType)) {
    const available = index.manifests
      .filter((d) => d.platform && d.platform.os !== 'unknown')
      .map((d) => formatPlatform(d.platform as Platform));
    throw new IsolaError(
      'E_IMAGE_PLATFORM',
      `no manifest for ${formatPlatform(want)} in the image index (available: ${available.join(', ') || 'none'})`,
      { details: { platform: formatPlatform(want), available } },
    );
  }
  return match;
}

/** Digests a manifest or index references (for garbage collection); [] for anything else. */
export function referencedDigests(bytes: Buffer): string[] {
  let doc: {
    manifests?: Array<{ digest?: unknown }>;
    config?: { digest?: unknown };
    layers?: Array<{ digest?: unknown }>;
  };
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    return [];
  }
  const out: string[] = [];
  const add = (d: unknown) => {
    if (typeof d === 'string' && isDigest(d)) out.push(d);
  };
  if (Array.isArray(doc.manifests)) for (const m of doc.manifests) add(m?.digest);
  if (doc.config && typeof doc.config === 'object') add(doc.config.digest);
  if (Array.isArray(doc.layers)) for (const l of doc.layers) add(l?.digest);
  return out;
}
