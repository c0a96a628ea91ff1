// Image references: `[registry[:port]/]repository[:tag][@digest]`, parsed and normalised the way
// Docker, Podman and skopeo do it (distribution's reference grammar):
// - the first path component is a registry when it contains `.` or `:`, is `localhost`, or has
//   an uppercase letter; otherwise the registry is Docker Hub (`docker.io`);
// - on Docker Hub a one-component repository lives under `library/`;
// - no tag and no digest means `:latest`; with a digest, the digest is what gets pulled and a tag
//   is only kept as a name.
// Pure; no I/O.

import { IsolaError } from '../errors.js';

export const DOCKER_HUB = 'docker.io';
/** Where Docker Hub's distribution API actually lives. */
export const DOCKER_HUB_API = 'registry-1.docker.io';
export const DEFAULT_TAG = 'latest';

export interface ImageReference {
  /** Registry host as written (normalised: `index.docker.io` → `docker.io`), with its port. */
  registry: string;
  /** Repository path inside the registry, e.g. `library/alpine`. */
  repository: string;
  /** Tag; `latest` when neither tag nor digest was given. */
  tag?: string;
  /** `algorithm:hex`. */
  digest?: string;
}

const ALNUM = '[a-z0-9]+';
const SEPARATOR = '(?:[._]|__|[-]+)';
const PATH_COMPONENT = `${ALNUM}(?:${SEPARATOR}${ALNUM})*`;
const PATH_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_RE = new RegExp(
  `^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[0-9a-fA-F:.]+\\])(?::[0-9]+)?$`,
);
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;
const MAX_NAME = 255;

function bad(input: string, why: string): IsolaError {
  return new IsolaError('E_IMAGE_REFERENCE', `invalid image reference "${input}": ${why}`, {
    details: { reference: input },
  });
}

/** Validate `algorithm:hex`; sha256 and sha512 must have the right length of lowercase hex. */
export function parseDigest(d: string): { algorithm: string; hex: string } {
  const m = DIGEST_RE.exec(d);
  if (!m) throw bad(d, 'digest must look like sha256:<64 hex digits>');
  const [, algorithm, hex] = m as unknown as [string, string, string];
  const want = algorithm === 'sha256' ? 64 : algorithm === 'sha512' ? 128 : 0;
  if (want === 0) throw bad(d, `unsupported digest algorithm ${algorithm}`);
  if (hex.length !== want || !/^[a-f0-9]+$/.test(hex))
    throw bad(d, `${algorithm} digest must be ${want} lowercase hex digits`);
  return { algorithm, hex };
}

export function isDigest(s: string): boolean {
  try {
    parseDigest(s);
    return true;
  } catch {
    return false;
  }
}

export function parseReference(input: string): ImageReference {
  const s = input.trim();
  if (s === '') throw bad(input, 'empty');
  if (/\s/.test(s)) throw bad(input, 'contains whitespace');
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    parseDigest(digest);
  }
  let tag: string | undefined;
  // A tag is after the last ':' that comes after the last '/' (a ':' before it is a port).
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw bad(input, `tag "${tag}" is not valid`);
  }
  if (rest === '') throw bad(input, 'missing repository name');
  let registry = DOCKER_HUB;
  let repository = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (
      first.includes('.') ||
      first.includes(':') ||
      first === 'localhost' ||
      first !== first.toLowerCase()
    ) {
      registry = first;
      repository = rest.slice(slash + 1);
    }
  }
  if (!DOMAIN_RE.test(registry)) throw bad(input, `registry "${registry}" is not a valid host`);
  if (registry === 'index.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (!PATH_RE.test(repository)) {
    throw bad(
      input,
      repository !== repository.toLowerCase()
        ? 'repository names must be lowercase'
        : `repository "${repository}" is not valid`,
    );
  }
  if (registry.length + 1 + repository.length > MAX_NAME)
    throw bad(input, `name longer than ${MAX_NAME} characters`);
  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  return {
    registry,
    repository,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
  };
}

/** `registry/repository` */
export function repoName(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** The fully qualified string: `docker.io/library/alpine:3.20@sha256:…`. */
export function formatReference(ref: ImageReference): string {
  return `${repoName(ref)}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/** Short form for humans: Docker Hub's `library/` and `docker.io/` dropped. */
export function familiarName(ref: ImageReference): string {
  let name = repoName(ref);
  if (ref.registry === DOCKER_HUB) {
    name = ref.repository.startsWith('library/') ? ref.repository.slice(8) : ref.repository;
  }
  return `${name}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/** What to ask the registry for: the digest when there is one, else the tag. */
export function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? DEFAULT_TAG;
}

/** Host (and port) to talk to for this registry. */
export function registryEndpointHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

/** True for registries on loopback, where plain http is used without a flag. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.startsWith('[')
    ? registry.slice(1, registry.indexOf(']'))
    : (registry.split(':')[0] ?? '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
