// Pieces for the image-pull tests: a real registry (Debian's docker-registry, distribution 2.8)
// on loopback with no auth, htpasswd basic auth or token auth (our own token server below),
// OCI image layouts built on disk from tar entries, pushes with skopeo, and a fault-injecting
// reverse proxy. Everything listens on 127.0.0.1 only.
//
// The registry, the token server and the proxy live in (or are children of) the test process,
// so anything that talks to them must not block the event loop: skopeo runs with an async
// spawn, never spawnSync (a token request from skopeo would otherwise never be answered).
import { type ChildProcess, type SpawnOptions, execFileSync, spawn } from 'node:child_process';
import { X509Certificate, createHash, randomBytes, randomUUID, sign } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { type TarEntryInput, tarBuffer } from '../src/image/tar-write.js';
import { freePort } from '../src/util/ports.js';

// ---------------------------------------------------------------------------------------------
// Registry

export type RegistryAuthMode = 'none' | 'basic' | 'token';

export interface TestRegistry {
  /** '127.0.0.1:PORT' */
  host: string;
  /** 'http://127.0.0.1:PORT' */
  url: string;
  auth: RegistryAuthMode;
  /** Credentials for 'basic' and 'token' modes. */
  username?: string;
  password?: string;
  /** Token mode: the token server's endpoint (the challenge's realm) and the service name. */
  tokenRealm?: string;
  service?: string;
  /** Number of token requests the token server answered (token mode; 0 otherwise). */
  tokenRequests(): number;
  /** Token mode: every token request as answered (who asked, for which scopes, the status). */
  tokenLog(): TokenLogEntry[];
  stop(): Promise<void>;
}

export interface TokenLogEntry {
  method: string;
  /** null: no credentials (anonymous). */
  user: string | null;
  scopes: string[];
  status: number;
}

export const REGISTRY_SERVICE = 'isola-test-registry';
export const REGISTRY_ISSUER = 'isola-test-issuer';
const USERNAME = 'isola';
const PASSWORD = 'isola-test-pass';
const READY_TIMEOUT_MS = 20_000;

// Children still running; killed when the test process exits so a crash leaves none behind.
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function track(child: ChildProcess): void {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of liveChildren) {
        try {
          c.kill('SIGKILL');
        } catch {
          // already gone
        }
      }
    });
  }
}

// Where util-linux's setpriv is present, children get SIGKILL when this process dies, even by a
// signal (when the 'exit' hook above never runs).
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

function spawnTied(cmd: string, args: string[], opts: SpawnOptions): ChildProcess {
  return SETPRIV
    ? spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', cmd, ...args], opts)
    : spawn(cmd, args, opts);
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the child has exited (and is reaped). */
async function killAndWait(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (exited(child) || child.pid === undefined) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

export { freePort };

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** Pids of docker-registry processes whose parent is this process (for leak checks). */
export function registryChildPids(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const status = readFileSync(`/proc/${name}/status`, 'utf8');
      const comm = /^Name:\s*(.*)$/m.exec(status)?.[1];
      const ppid = Number(/^PPid:\s*(\d+)$/m.exec(status)?.[1]);
      if (comm === 'docker-registry' && ppid === process.pid) out.push(Number(name));
    } catch {
      // exited while we looked
    }
  }
  return out;
}

// ---- token server -----------------------------------------------------------------------------

function b64url(b: Buffer | string): string {
  return Buffer.from(b).toString('base64url');
}

export interface TokenAccess {
  type: string;
  name: string;
  actions: string[];
}

/** 'repository:name:pull,push' -> Access ('registry:catalog:*' too; names have no colons). */
export function parseScope(scope: string): TokenAccess | null {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last === first) return null;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope
      .slice(last + 1)
      .split(',')
      .filter(Boolean),
  };
}

/**
 * An RS256 JWT as distribution 2.8 verifies it (registry/auth/token/token.go): iss must be the
 * configured issuer, aud a plain string equal to the service (a JSON array is rejected as
 * malformed in 2.8), exp/nbf within 60 s leeway, and the key found through the header's x5c
 * chain, verified against rootcertbundle.
 */
function signToken(
  keyPem: string,
  certDerB64: string,
  subject: string,
  access: TokenAccess[],
  ttl: number,
): string {
  const now = Math.floor(Date.now() / 1000);
  const header = { typ: 'JWT', alg: 'RS256', x5c: [certDerB64] };
  const claims = {
    iss: REGISTRY_ISSUER,
    sub: subject,
    aud: REGISTRY_SERVICE,
    exp: now + ttl,
    nbf: now - 1,
    iat: now,
    jti: randomUUID(),
    access,
  };
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signature = sign('sha256', Buffer.from(signingInput), keyPem);
  return `${signingInput}.${b64url(signature)}`;
}

interface TokenServer {
  realm: string;
  count(): number;
  log: TokenLogEntry[];
  close(): Promise<void>;
}

/**
 * The Docker token protocol: GET /token?service=..&scope=.. with optional HTTP Basic
 * credentials (right ones: every requested action granted; wrong ones: 401; none: an anonymous
 * token with an empty access list). The OAuth2 form (POST grant_type=password) is answered too.
 */
async function startTokenServer(
  keyPem: string,
  certPem: string,
  username: string,
  password: string,
): Promise<TokenServer> {
  const certDerB64 = new X509Certificate(certPem).raw.toString('base64');
  const log: TokenLogEntry[] = [];
  const deny = (res: http.ServerResponse, status: number, message: string) => {
    res.writeHead(status, {
      'content-type': 'application/json',
      ...(status === 401 ? { 'www-authenticate': 'Basic realm="isola-test-token"' } : {}),
    });
    res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message }] }));
  };
  const issue = (
    entry: TokenLogEntry,
    res: http.ServerResponse,
    user: string | null,
    pass: string | null,
    service: string | null,
    scopes: string[],
  ) => {
    entry.user = user;
    entry.scopes = scopes;
    if (service !== null && service !== REGISTRY_SERVICE) {
      deny(res, 400, `unknown service ${service}`);
      return;
    }
    let subject = '';
    if (user !== null) {
      if (user !== username || pass !== password) {
        deny(res, 401, 'invalid credentials');
        return;
      }
      subject = user;
    }
    const access: TokenAccess[] = [];
    if (subject) {
      for (const s of scopes.flatMap((x) => x.split(' ')).filter(Boolean)) {
        const a = parseScope(s);
        if (a) access.push(a);
      }
    }
    const ttl = 300;
    const token = signToken(keyPem, certDerB64, subject, access, ttl);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        token,
        access_token: token,
        expires_in: ttl,
        issued_at: new Date().toISOString(),
      }),
    );
  };
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (u.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    const entry: TokenLogEntry = { method: req.method ?? '', user: null, scopes: [], status: 0 };
    log.push(entry);
    res.on('finish', () => {
      entry.status = res.statusCode;
    });
    if (req.method === 'GET') {
      let user: string | null = null;
      let pass: string | null = null;
      const m = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
      if (m) {
        const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
        const colon = decoded.indexOf(':');
        user = colon < 0 ? decoded : decoded.slice(0, colon);
        pass = colon < 0 ? '' : decoded.slice(colon + 1);
      } else if (req.headers.authorization) {
        deny(res, 401, 'unsupported authorization');
        return;
      }
      issue(entry, res, user, pass, u.searchParams.get('service'), u.searchParams.getAll('scope'));
      return;
    }
    if (req.method === 'POST') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
        if (form.get('grant_type') !== 'password') {
          deny(res, 400, 'only grant_type=password is supported');
          return;
        }
        issue(
          entry,
          res,
          form.get('username') ?? '',
          form.get('password') ?? '',
          form.get('service'),
          form.getAll('scope'),
        );
      });
      return;
    }
    res.writeHead(405).end();
  });
  const port = await listen(server);
  return {
    realm: `http://127.0.0.1:${port}/token`,
    count: () => log.length,
    log,
    close: () => closeServer(server),
  };
}

// ---- the registry itself ---------------------------------------------------------------------

async function waitReady(
  url: string,
  child: ChildProcess,
  output: () => string,
  gaveUp: () => boolean,
): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!gaveUp()) {
    if (exited(child)) {
      throw new Error(
        `docker-registry exited (code ${child.exitCode}, signal ${child.signalCode}):\n${output()}`,
      );
    }
    try {
      const r = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
      await r.arrayBuffer();
      if (r.status === 200 || r.status === 401) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      throw new Error(`docker-registry not ready after ${READY_TIMEOUT_MS} ms:\n${output()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts docker-registry on a free loopback port with the given auth mode. */
export async function startRegistry(opts: { auth: RegistryAuthMode }): Promise<TestRegistry> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'isola-test-registry-'));
  let child: ChildProcess | undefined;
  let tokenServer: TokenServer | undefined;
  const cleanup = async () => {
    if (child) await killAndWait(child);
    if (tokenServer) await tokenServer.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const url = `http://${host}`;
    const config: Record<string, unknown> = {
      version: '0.1',
      log: { level: 'warn', accesslog: { disabled: true } },
      storage: {
        filesystem: { rootdirectory: path.join(dir, 'data') },
        delete: { enabled: true },
        maintenance: { uploadpurging: { enabled: false } },
      },
      http: { addr: host, secret: randomBytes(16).toString('hex') },
    };
    if (opts.auth === 'basic') {
      const line = execFileSync('htpasswd', ['-Bbn', USERNAME, PASSWORD], { encoding: 'utf8' });
      const htpasswd = path.join(dir, 'htpasswd');
      writeFileSync(htpasswd, `${line.trim()}\n`);
      config.auth = { htpasswd: { realm: 'isola-test-registry', path: htpasswd } };
    } else if (opts.auth === 'token') {
      const keyFile = path.join(dir, 'key.pem');
      const certFile = path.join(dir, 'cert.pem');
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-keyout',
          keyFile,
          '-out',
          certFile,
          '-days',
          '2',
          '-subj',
          `/CN=${REGISTRY_ISSUER}`,
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      tokenServer = await startTokenServer(
        readFileSync(keyFile, 'utf8'),
        readFileSync(certFile, 'utf8'),
        USERNAME,
        PASSWORD,
      );
      config.auth = {
        token: {
          realm: tokenServer.realm,
          service: REGISTRY_SERVICE,
          issuer: REGISTRY_ISSUER,
          rootcertbundle: certFile,
        },
      };
    }
    // JSON is YAML, so the config needs no YAML writer.
    const configFile = path.join(dir, 'config.yml');
    writeFileSync(configFile, `${JSON.stringify(config, null, 2)}\n`);

    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('REGISTRY_')) env[k] = v;
    let output = '';
    const collect = (c: Buffer) => {
      if (output.length < 64 * 1024) output += c.toString('utf8');
    };
    const proc = spawnTied('docker-registry', ['serve', configFile], {
      cwd: dir,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    track(proc);
    proc.stdout?.on('data', collect);
    proc.stderr?.on('data', collect);
    let spawnFailed = false;
    const spawnError = new Promise<never>((_, reject) =>
      proc.once('error', (e) => {
        spawnFailed = true;
        reject(e);
      }),
    );
    spawnError.catch(() => {});
    await Promise.race([
      waitReady(
        url,
        proc,
        () => output,
        () => spawnFailed,
      ),
      spawnError,
    ]);

    let stopped: Promise<void> | undefined;
    const reg: TestRegistry = {
      host,
      url,
      auth: opts.auth,
      tokenRequests: () => tokenServer?.count() ?? 0,
      tokenLog: () => (tokenServer ? tokenServer.log.map((e) => ({ ...e })) : []),
      stop: () => {
        stopped ??= cleanup();
        return stopped;
      },
    };
    if (opts.auth !== 'none') {
      reg.username = USERNAME;
      reg.password = PASSWORD;
    }
    if (tokenServer) {
      reg.tokenRealm = tokenServer.realm;
      reg.service = REGISTRY_SERVICE;
    }
    return reg;
  } catch (err) {
    await cleanup();
    throw err;
  }
}

// ---- talking to the registry -------------------------------------------------------------------

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

/** Accept header for manifests: every single-image and list type. */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.dockerList,
  MEDIA_TYPES.dockerManifest,
].join(', ');

function basicAuth(user: string, pass: string): string {
  return `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
}

/**
 * Asks the token server for a token. `creds` undefined: the registry's credentials; null:
 * anonymous; otherwise the given (possibly wrong) ones.
 */
export async function requestToken(
  reg: TestRegistry,
  scopes: string[],
  creds?: { username: string; password: string } | null,
): Promise<{ status: number; token?: string; body: string }> {
  if (!reg.tokenRealm) throw new Error('registry has no token server');
  const u = new URL(reg.tokenRealm);
  u.searchParams.set('service', reg.service ?? REGISTRY_SERVICE);
  for (const s of scopes) u.searchParams.append('scope', s);
  const c =
    creds === undefined ? { username: reg.username ?? '', password: reg.password ?? '' } : creds;
  const r = await fetch(u, {
    headers: c ? { authorization: basicAuth(c.username, c.password) } : {},
  });
  const body = await r.text();
  let token: string | undefined;
  if (r.status === 200) token = (JSON.parse(body) as { token?: string }).token;
  return token === undefined ? { status: r.status, body } : { status: r.status, token, body };
}

/** The pull scope a /v2/<name>/{manifests,blobs,tags}/... path needs ('' for /v2/). */
function scopeFor(pathname: string, method: string): string {
  const m = /^\/v2\/(.+)\/(manifests|blobs|tags)\//.exec(pathname);
  if (!m) return '';
  const write = !['GET', 'HEAD'].includes(method);
  return `repository:${m[1]}:${write ? 'pull,push' : 'pull'}`;
}

export interface RegistryResponse {
  status: number;
  headers: Headers;
  body: Buffer;
}

/**
 * One request to the registry (or to `base`, e.g. a fault proxy in front of it) with the
 * registry's credentials: Basic in basic mode, a freshly fetched bearer token in token mode.
 * `anonymous` sends none. Redirects are not followed.
 */
export async function registryRequest(
  reg: TestRegistry,
  method: string,
  pathname: string,
  opts: {
    headers?: Record<string, string>;
    scope?: string;
    anonymous?: boolean;
    base?: string;
  } = {},
): Promise<RegistryResponse> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (!opts.anonymous && reg.auth === 'basic') {
    headers.authorization = basicAuth(reg.username ?? '', reg.password ?? '');
  } else if (!opts.anonymous && reg.auth === 'token') {
    const scope = opts.scope ?? scopeFor(pathname, method);
    const t = await requestToken(reg, scope ? [scope] : []);
    if (!t.token) throw new Error(`token request failed: ${t.status} ${t.body}`);
    headers.authorization = `Bearer ${t.token}`;
  }
  const r = await fetch(`${opts.base ?? reg.url}${pathname}`, {
    method,
    headers,
    redirect: 'manual',
  });
  const body = Buffer.from(await r.arrayBuffer());
  return { status: r.status, headers: r.headers, body };
}

/** The Docker-Content-Digest the registry reports for a manifest (by tag or digest). */
export async function registryManifestDigest(
  reg: TestRegistry,
  repo: string,
  ref: string,
): Promise<string> {
  const r = await registryRequest(reg, 'HEAD', `/v2/${repo}/manifests/${ref}`, {
    headers: { accept: MANIFEST_ACCEPT },
  });
  const digest = r.headers.get('docker-content-digest');
  if (r.status !== 200 || !digest) {
    throw new Error(`HEAD /v2/${repo}/manifests/${ref}: status ${r.status}, digest ${digest}`);
  }
  return digest;
}

// ---------------------------------------------------------------------------------------------
// OCI image layouts

export interface TestLayer {
  entries: TarEntryInput[];
  /** Default gzip; zstd through the `zstd` CLI. */
  compression?: 'gzip' | 'none' | 'zstd';
}

export interface TestImageConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  WorkingDir?: string;
  User?: string;
  Labels?: Record<string, string>;
}

export interface TestPlatform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface TestImageSpec {
  layers: TestLayer[];
  config?: TestImageConfig;
  /** Default linux/amd64. */
  platform?: TestPlatform;
}

export interface BuiltImage {
  manifestDigest: string;
  configDigest: string;
  /** Digests of the (compressed) layer blobs, in manifest order. */
  layerDigests: string[];
  /** sha256 of each uncompressed layer tar (the config's rootfs.diff_ids). */
  diffIds: string[];
  manifest: Buffer;
  config: Buffer;
  /** The layer blobs as written (compressed), in manifest order. */
  layerBlobs: Buffer[];
  platform: TestPlatform;
}

export interface WrittenLayout {
  /** Set when several images were written: the image index blob the tag points at. */
  index?: { digest: string; bytes: Buffer };
  images: BuiltImage[];
}

export function sha256(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

function writeBlob(dir: string, bytes: Buffer): { digest: string; size: number } {
  const digest = sha256(bytes);
  const blobs = path.join(dir, 'blobs/sha256');
  mkdirSync(blobs, { recursive: true });
  writeFileSync(path.join(blobs, digest.slice('sha256:'.length)), bytes);
  return { digest, size: bytes.length };
}

function compress(tar: Buffer, how: TestLayer['compression']): { blob: Buffer; mediaType: string } {
  switch (how ?? 'gzip') {
    case 'gzip':
      return { blob: gzipSync(tar), mediaType: MEDIA_TYPES.ociLayerGzip };
    case 'zstd':
      return {
        blob: execFileSync('zstd', ['-q', '-c', '-'], { input: tar, maxBuffer: 1 << 30 }),
        mediaType: MEDIA_TYPES.ociLayerZstd,
      };
    default:
      return { blob: tar, mediaType: MEDIA_TYPES.ociLayer };
  }
}

function buildImage(dir: string, spec: TestImageSpec): BuiltImage {
  const platform = spec.platform ?? { os: 'linux', architecture: 'amd64' };
  const layerDescs: { mediaType: string; digest: string; size: number }[] = [];
  const layerBlobs: Buffer[] = [];
  const diffIds: string[] = [];
  for (const layer of spec.layers) {
    const tar = tarBuffer(layer.entries);
    diffIds.push(sha256(tar));
    const { blob, mediaType } = compress(tar, layer.compression);
    layerBlobs.push(blob);
    layerDescs.push({ mediaType, ...writeBlob(dir, blob) });
  }
  const created = '2024-01-01T00:00:00Z';
  const config = Buffer.from(
    JSON.stringify({
      created,
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: spec.config ?? {},
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: spec.layers.map((_, i) => ({ created, created_by: `isola-test layer ${i}` })),
    }),
  );
  const configDesc = { mediaType: MEDIA_TYPES.ociConfig, ...writeBlob(dir, config) };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: configDesc,
      layers: layerDescs,
    }),
  );
  const manifestDesc = writeBlob(dir, manifest);
  return {
    manifestDigest: manifestDesc.digest,
    configDigest: configDesc.digest,
    layerDigests: layerDescs.map((l) => l.digest),
    diffIds,
    manifest,
    config,
    layerBlobs,
    platform,
  };
}

const REF_NAME = 'org.opencontainers.image.ref.name';

/**
 * Writes images into an OCI image layout at `dir` under `tag`: one image is referenced from
 * index.json directly, several through an image index blob (with each manifest's platform).
 * An existing layout is extended (index.json merged; an earlier entry with the same tag replaced).
 */
export function writeOciLayout(dir: string, tag: string, images: TestImageSpec[]): WrittenLayout {
  if (images.length === 0) throw new Error('writeOciLayout: no images');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const built = images.map((spec) => buildImage(dir, spec));
  let top: { mediaType: string; digest: string; size: number };
  let index: WrittenLayout['index'];
  if (built.length === 1) {
    const img = built[0]!;
    top = {
      mediaType: MEDIA_TYPES.ociManifest,
      digest: img.manifestDigest,
      size: img.manifest.length,
    };
  } else {
    const bytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociIndex,
        manifests: built.map((img) => ({
          mediaType: MEDIA_TYPES.ociManifest,
          digest: img.manifestDigest,
          size: img.manifest.length,
          platform: img.platform,
        })),
      }),
    );
    const desc = writeBlob(dir, bytes);
    index = { digest: desc.digest, bytes };
    top = { mediaType: MEDIA_TYPES.ociIndex, ...desc };
  }
  const indexFile = path.join(dir, 'index.json');
  let manifests: { annotations?: Record<string, string> }[] = [];
  try {
    manifests =
      (JSON.parse(readFileSync(indexFile, 'utf8')) as { manifests?: typeof manifests }).manifests ??
      [];
  } catch {
    // new layout
  }
  manifests = manifests.filter((m) => m.annotations?.[REF_NAME] !== tag);
  manifests.push({ ...top, annotations: { [REF_NAME]: tag } });
  writeFileSync(indexFile, JSON.stringify({ schemaVersion: 2, manifests }));
  return index ? { index, images: built } : { images: built };
}

let busyboxBytes: Buffer | undefined;

/**
 * A layer with Debian's static busybox at /bin/busybox, /bin/{sh,echo,cat,ls} linked to it,
 * /etc, /tmp (1777), /root and an /etc/passwd with root: enough to run a shell.
 */
export function busyboxLayer(compression: TestLayer['compression'] = 'gzip'): TestLayer {
  busyboxBytes ??= readFileSync('/bin/busybox');
  return {
    compression,
    entries: [
      { path: 'bin/', type: 'dir', mode: 0o755 },
      { path: 'bin/busybox', type: 'file', mode: 0o755, data: busyboxBytes },
      ...['sh', 'echo', 'cat', 'ls'].map(
        (n): TarEntryInput => ({ path: `bin/${n}`, type: 'symlink', linkname: 'busybox' }),
      ),
      { path: 'etc/', type: 'dir', mode: 0o755 },
      {
        path: 'etc/passwd',
        type: 'file',
        mode: 0o644,
        data: 'root:x:0:0:root:/root:/bin/sh\n',
      },
      { path: 'etc/group', type: 'file', mode: 0o644, data: 'root:x:0:\n' },
      { path: 'tmp/', type: 'dir', mode: 0o1777 },
      { path: 'root/', type: 'dir', mode: 0o700 },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// Pushing with skopeo

export interface PushOptions {
  /** Copy every image of an index (skopeo --all). Without it skopeo picks linux/amd64. */
  all?: boolean;
  /** Destination manifest format; v2s2 converts to Docker schema 2 (new manifest digests). */
  format?: 'oci' | 'v2s2';
  /** Fail rather than change any manifest digest (skopeo --preserve-digests). */
  preserveDigests?: boolean;
  /** Push through this host (e.g. a fault proxy's 'host') instead of the registry's. */
  host?: string;
}

/** skopeo copy oci:<layoutDir>:<tag> docker://<host>/<dest> (async: the token server is ours). */
export async function pushLayout(
  layoutDir: string,
  tag: string,
  reg: TestRegistry,
  dest: string,
  opts: PushOptions = {},
): Promise<void> {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'isola-test-skopeo-'));
  try {
    const authfile = path.join(tmp, 'auth.json');
    writeFileSync(authfile, '{"auths":{}}');
    const args = ['--insecure-policy', 'copy', '--quiet', '--retry-times', '0'];
    if (opts.all) args.push('--all');
    if (opts.format) args.push('--format', opts.format);
    if (opts.preserveDigests) args.push('--preserve-digests');
    args.push('--dest-tls-verify=false', '--dest-authfile', authfile);
    if (reg.username !== undefined) args.push('--dest-creds', `${reg.username}:${reg.password}`);
    args.push(`oci:${layoutDir}:${tag}`, `docker://${opts.host ?? reg.host}/${dest}`);
    const env = { ...process.env, REGISTRY_AUTH_FILE: authfile, TMPDIR: tmp };
    await new Promise<void>((resolve, reject) => {
      const p = spawnTied('skopeo', args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout?.on('data', (c: Buffer) => {
        out += c.toString('utf8');
      });
      p.stderr?.on('data', (c: Buffer) => {
        out += c.toString('utf8');
      });
      const timer = setTimeout(() => p.kill('SIGKILL'), 120_000);
      p.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      p.once('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else reject(new Error(`skopeo ${args.join(' ')} failed (${code ?? signal}):\n${out}`));
      });
    });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Fault-injecting reverse proxy

export type FaultAction = 'status500' | 'reset' | 'truncate' | 'corrupt';

export interface FaultRule {
  /** Tested against the request's path and query. */
  match: RegExp;
  /** Only requests with this method (e.g. 'GET'); default any. */
  method?: string;
  /** How many matching requests to affect; default Infinity. */
  times?: number;
  /**
   * status500: answer 500 without asking the registry. reset: destroy the socket before any
   * response. truncate: send the registry's headers (Content-Length as it was) and half of the
   * body, then destroy the socket. corrupt: flip one byte of the body, same length.
   * truncate and corrupt affect (and count) only 200/206 responses with a body; other
   * responses (401 challenges, HEAD, redirects) pass through untouched.
   * Each request meets at most one rule: the first in list order that matches (path, method)
   * and has uses left; if that is a truncate/corrupt rule and the response does not qualify,
   * the request passes through and the rule keeps its use.
   */
  action: FaultAction;
}

export interface FaultProxy {
  /** 'http://127.0.0.1:PORT' */
  url: string;
  /** '127.0.0.1:PORT' */
  host: string;
  /**
   * Counters: 'METHOD /path' (query left out) for every request the proxy received, and
   * 'rule:N' for how many times rules[N] was applied.
   */
  hits(): Record<string, number>;
  stop(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade']);

/** A loopback HTTP proxy to `target` (http://127.0.0.1:PORT) that breaks matching requests. */
export async function startFaultProxy(target: string, rules: FaultRule[]): Promise<FaultProxy> {
  const t = new URL(target);
  const agent = new http.Agent({ keepAlive: false });
  const counts: Record<string, number> = {};
  const applied = rules.map(() => 0);
  const bump = (key: string) => {
    counts[key] = (counts[key] ?? 0) + 1;
  };
  const candidate = (url: string, method: string, pred: (r: FaultRule) => boolean) =>
    rules.findIndex((r, i) => {
      r.match.lastIndex = 0;
      return (
        pred(r) &&
        (!r.method || r.method.toUpperCase() === method) &&
        applied[i]! < (r.times ?? Number.POSITIVE_INFINITY) &&
        r.match.test(url)
      );
    });

  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const method = (req.method ?? 'GET').toUpperCase();
    bump(`${method} ${url.split('?')[0]}`);
    // At most one rule per request: the first in list order that matches and has uses left
    // (truncate and corrupt never match a HEAD).
    const chosen = candidate(
      url,
      method,
      (r) => r.action === 'status500' || r.action === 'reset' || method !== 'HEAD',
    );
    const chosenAction = chosen >= 0 ? rules[chosen]!.action : undefined;
    const early = chosenAction === 'status500' || chosenAction === 'reset' ? chosen : -1;
    if (early >= 0) {
      applied[early]!++;
      bump(`rule:${early}`);
      if (rules[early]!.action === 'reset') {
        req.socket.destroy();
      } else {
        req.resume();
        const body = JSON.stringify({ errors: [{ code: 'UNKNOWN', message: 'injected fault' }] });
        res.writeHead(500, { 'content-type': 'application/json', 'content-length': body.length });
        res.end(body);
      }
      return;
    }
    const headers = { ...req.headers };
    for (const h of HOP_BY_HOP) delete headers[h];
    const up = http.request({
      host: t.hostname,
      port: t.port,
      method,
      path: url,
      headers,
      agent,
    });
    up.on('error', () => res.destroy());
    req.on('error', () => up.destroy());
    up.on('response', (ur) => {
      const status = ur.statusCode ?? 502;
      const outHeaders = { ...ur.headers };
      for (const h of HOP_BY_HOP) delete outHeaders[h];
      const late = chosen >= 0 && (status === 200 || status === 206) ? chosen : -1;
      if (late < 0) {
        res.writeHead(status, outHeaders);
        ur.pipe(res);
        ur.on('error', () => res.destroy());
        return;
      }
      const chunks: Buffer[] = [];
      ur.on('data', (c: Buffer) => chunks.push(c));
      ur.on('error', () => res.destroy());
      ur.on('end', () => {
        const body = Buffer.concat(chunks);
        // Re-check: another request may have used up the rule meanwhile.
        if (
          body.length === 0 ||
          applied[late]! >= (rules[late]!.times ?? Number.POSITIVE_INFINITY)
        ) {
          res.writeHead(status, outHeaders);
          res.end(body);
          return;
        }
        applied[late]!++;
        bump(`rule:${late}`);
        const fixed = Object.fromEntries(
          Object.entries(outHeaders).filter(([k]) => k !== 'transfer-encoding'),
        );
        fixed['content-length'] = String(body.length);
        res.writeHead(status, fixed);
        if (rules[late]!.action === 'corrupt') {
          const i = Math.floor(body.length / 2);
          body[i] = body[i]! ^ 0xff;
          res.end(body);
        } else {
          res.write(body.subarray(0, Math.floor(body.length / 2)), () => {
            setTimeout(() => res.socket?.destroy(), 10);
          });
        }
      });
    });
    req.pipe(up);
  });
  const port = await listen(server);
  const host = `127.0.0.1:${port}`;
  return {
    url: `http://${host}`,
    host,
    hits: () => ({ ...counts }),
    stop: async () => {
      await closeServer(server);
      agent.destroy();
    },
  };
}
