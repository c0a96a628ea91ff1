// A client for the OCI distribution API v2 (pull side): manifests and blobs, with
// - https by default; plain http only for loopback registries and an explicit insecure list;
// - auth: anonymous, Basic, and the Bearer token challenge flow (tokens cached per scope);
// - retries with exponential backoff and jitter on 5xx, 429 and broken connections;
// - resumable blob downloads (Range) into a partial file, verified against the digest and size;
// - redirects followed by hand, dropping credentials when the origin changes.

import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, statSync, truncateSync } from 'node:fs';
import { IsolaError } from '../../errors.js';
import { envNumber } from '../../util/env.js';
import { isLoopbackRegistry, registryEndpointHost } from '../reference.js';
import { type Challenge, type Credentials, parseChallenges } from './auth.js';

export interface RegistryClientOptions {
  registry: string;
  credentials?: Credentials | undefined;
  /** Registries (host[:port]) where plain http is allowed besides loopback. */
  insecure?: string[] | undefined;
  /** Attempts per request beyond the first (default 4, ISOLA_PULL_RETRIES). */
  retries?: number | undefined;
  /** First backoff delay; doubles each attempt (default 250 ms, ISOLA_PULL_BACKOFF_MS). */
  backoffMs?: number | undefined;
  /** No response headers, or no body bytes, for this long aborts the attempt (default 60 s). */
  idleTimeoutMs?: number | undefined;
}

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string | undefined;
  /** Docker-Content-Digest from the registry, when it sent one. */
  headerDigest: string | undefined;
}

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const USER_AGENT = 'isola/0.1 (+OCI distribution)';

class Retryable extends Error {}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class RegistryClient {
  readonly base: string;
  private readonly opts: RegistryClientOptions;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly idleMs: number;
  /** Authorization header value per scope ('' = anonymous worked). */
  private readonly authByScope = new Map<string, string>();

  constructor(opts: RegistryClientOptions) {
    this.opts = opts;
    const host = registryEndpointHost(opts.registry);
    const plain =
      isLoopbackRegistry(opts.registry) || (opts.insecure ?? []).includes(opts.registry);
    this.base = `${plain ? 'http' : 'https'}://${host}`;
    this.retries = opts.retries ?? envNumber('ISOLA_PULL_RETRIES', 4);
    this.backoffMs = opts.backoffMs ?? envNumber('ISOLA_PULL_BACKOFF_MS', 250);
    this.idleMs = opts.idleTimeoutMs ?? 60_000;
  }

  /** GET a manifest (by tag or digest) with the given Accept list. */
  async getManifest(
    repository: string,
    reference: string,
    accept: string[],
  ): Promise<FetchedManifest> {
    const url = `${this.base}/v2/${repository}/manifests/${reference}`;
    return this.withRetries(`manifest ${repository}:${reference}`, async () => {
      const res = await this.request(url, repository, { Accept: accept.join(', ') });
      if (res.status === 404) {
        await res.body?.cancel();
        throw new IsolaError(
          'E_IMAGE_NOT_FOUND',
          `${this.opts.registry}/${repository}:${reference} not found in the registry`,
        );
      }
      this.checkStatus(res, `manifest ${repository}:${reference}`);
      const len = Number(res.headers.get('content-length') ?? 0);
      if (len > MAX_MANIFEST_BYTES) {
        await res.body?.cancel();
        throw new IsolaError('E_IMAGE_MANIFEST', `manifest is ${len} bytes, over the 4 MiB limit`);
      }
      const bytes = await this.readAll(res, MAX_MANIFEST_BYTES);
      return {
        bytes,
        mediaType: res.headers.get('content-type') ?? undefined,
        headerDigest: res.headers.get('docker-content-digest') ?? undefined,
      };
    });
  }

  /**
   * Download a blob into `partialPath`, resuming from whatever that file already holds, and
   * verify it. On return the file is complete and matches `digest` and `size`. A mismatch removes
   * the partial file and throws E_IMAGE_DIGEST_MISMATCH.
   */
  async downloadBlob(
    repository: string,
    digest: string,
    size: number,
    partialPath: string,
    onBytes: (n: number) => void = () => undefined,
  ): Promise<void> {
    const url = `${this.base}/v2/${repository}/blobs/${digest}`;
    await this.withRetries(`blob ${digest}`, async () => {
      let have = 0;
      try {
        have = statSync(partialPath).size;
      } catch {}
      if (have > size) {
        truncateSync(partialPath, 0);
        have = 0;
      }
      const hash = createHash(digest.split(':')[0] ?? 'sha256');
      if (have > 0) {
        for await (const chunk of createReadStream(partialPath, { end: have - 1 }))
          hash.update(chunk as Buffer);
        onBytes(have);
      }
      if (have === size && size > 0) {
        return this.finishVerify(hash, digest, partialPath, size, size);
      }
      const headers: Record<string, string> = {};
      if (have > 0) headers.Range = `bytes=${have}-`;
      const res = await this.request(url, repository, headers);
      if (res.status === 404) {
        await res.body?.cancel();
        throw new IsolaError('E_IMAGE_NOT_FOUND', `blob ${digest} not found in ${repository}`);
      }
      if (res.status === 416 && have > 0) {
        // Our partial file is no good for this range: start over.
        await res.body?.cancel();
        truncateSync(partialPath, 0);
        throw new Retryable('range not satisfiable, restarting');
      }
      this.checkStatus(res, `blob ${digest}`);
      let offset = 0;
      if (res.status === 206) {
        const m = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
        offset = m ? Number(m[1]) : -1;
        if (offset !== have) {
          await res.body?.cancel();
          truncateSync(partialPath, 0);
          throw new Retryable(`registry resumed at ${offset}, not ${have}; restarting`);
        }
      } else if (have > 0) {
        // 200: the registry ignored the Range header; start the file and the hash over.
        onBytes(-have);
        have = 0;
        hash.destroy();
        return this.streamBody(
          res,
          partialPath,
          0,
          createHash(digest.split(':')[0] ?? 'sha256'),
          size,
          digest,
          onBytes,
        );
      }
      return this.streamBody(res, partialPath, have, hash, size, digest, onBytes);
    });
  }

  private async streamBody(
    res: Response,
    partialPath: string,
    have: number,
    hash: ReturnType<typeof createHash>,
    size: number,
    digest: string,
    onBytes: (n: number) => void,
  ): Promise<void> {
    const out = createWriteStream(partialPath, { flags: have > 0 ? 'a' : 'w' });
    const outDone = new Promise<void>((resolve, reject) => {
      out.once('error', reject);
      out.once('close', resolve);
    });
    let total = have;
    try {
      for await (const chunk of this.bodyChunks(res)) {
        total += chunk.length;
        if (total > size) {
          throw new IsolaError(
            'E_IMAGE_DIGEST_MISMATCH',
            `blob ${digest} is longer than its declared size ${size}`,
          );
        }
        hash.update(chunk);
        if (!out.write(chunk))
          await Promise.race([new Promise<void>((r) => out.once('drain', () => r())), outDone]);
        onBytes(chunk.length);
      }
    } catch (err) {
      out.end();
      await outDone.catch(() => undefined);
      if ((err as NodeJS.ErrnoException).code !== undefined && !(err instanceof IsolaError))
        throw storeError(err as NodeJS.ErrnoException, partialPath);
      throw err;
    }
    out.end();
    await outDone.catch((err: NodeJS.ErrnoException) => {
      throw storeError(err, partialPath);
    });
    if (total < size) throw new Retryable(`connection ended after ${total} of ${size} bytes`);
    return this.finishVerify(hash, digest, partialPath, total, size);
  }

  private finishVerify(
    hash: ReturnType<typeof createHash>,
    digest: string,
    partialPath: string,
    total: number,
    size: number,
  ): void {
    const got = `${digest.split(':')[0]}:${hash.digest('hex')}`;
    if (got !== digest || total !== size) {
      try {
        truncateSync(partialPath, 0);
      } catch {}
      throw new IsolaError(
        'E_IMAGE_DIGEST_MISMATCH',
        `blob content does not match its digest: expected ${digest} (${size} bytes), got ${got} (${total} bytes)`,
        { details: { expected: digest, actual: got } },
      );
    }
  }

  private async *bodyChunks(res: Response): AsyncGenerator<Buffer> {
    if (!res.body) return;
    const reader = res.body.getReader();
    try {
      for (;;) {
        const r = await this.withIdle(reader.read(), () => reader.cancel().catch(() => undefined));
        if (r.done) return;
        yield Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      }
    } catch (err) {
      if (err instanceof IsolaError) throw err;
      throw new Retryable(`download broke: ${describe(err)}`);
    } finally {
      reader.releaseLock();
      await res.body.cancel().catch(() => undefined);
    }
  }

  private withIdle<T>(p: Promise<T>, onTimeout: () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => {
        onTimeout();
        reject(new Retryable(`no data for ${this.idleMs} ms`));
      }, this.idleMs);
      p.then(
        (v) => {
          clearTimeout(t);
          resolve(v);
        },
        (e) => {
          clearTimeout(t);
          reject(e);
        },
      );
    });
  }

  private async readAll(res: Response, limit: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of this.bodyChunks(res)) {
      n += c.length;
      if (n > limit) throw new IsolaError('E_IMAGE_MANIFEST', `response over ${limit} bytes`);
      parts.push(c);
    }
    return Buffer.concat(parts);
  }

  private checkStatus(res: Response, what: string): void {
    if (res.status === 200 || res.status === 206) return;
    void res.body?.cancel().catch(() => undefined);
    if (res.status === 401 || res.status === 403) {
      throw new IsolaError(
        'E_REGISTRY_AUTH',
        `${this.opts.registry} refused access to ${what} (HTTP ${res.status})${this.opts.credentials ? '' : '; no credentials were given (--creds or an auth file)'}`,
      );
    }
    if (res.status >= 500 || res.status === 429 || res.status === 408) {
      throw new Retryable(`HTTP ${res.status} for ${what}`);
    }
    throw new IsolaError('E_REGISTRY_PROTOCOL', `unexpected HTTP ${res.status} for ${what}`);
  }

  private async withRetries<T>(what: string, fn: () => Promise<T>): Promise<T> {
    let last: unknown;
    for (let attempt = 0; attempt <= this.retries; attempt++) {
      if (attempt > 0) {
        const delay = this.backoffMs * 2 ** (attempt - 1);
        await sleep(delay / 2 + Math.random() * delay);
      }
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof Retryable)) throw err;
        last = err;
      }
    }
    throw new IsolaError(
      'E_REGISTRY_UNAVAILABLE',
      `${what} from ${this.opts.registry} failed after ${this.retries + 1} attempts: ${(last as Error).message}`,
    );
  }

  /**
   * One HTTP GET with auth: try with what we know for this scope; on 401 follow the challenge
   * (Basic or Bearer token) once. Redirects are followed by hand.
   */
  private async request(
    url: string,
    repository: string,
    headers: Record<string, string>,
  ): Promise<Response> {
    const scope = `repository:${repository}:pull`;
    let res = await this.send(url, headers, this.authByScope.get(scope));
    if (res.status === 401) {
      const header = res.headers.get('www-authenticate') ?? '';
      await res.body?.cancel().catch(() => undefined);
      const auth = await this.authorize(parseChallenges(header), scope);
      this.authByScope.set(scope, auth);
      res = await this.send(url, headers, auth);
    }
    return res;
  }

  private async send(
    url: string,
    headers: Record<string, string>,
    authorization: string | undefined,
  ): Promise<Response> {
    let target = url;
    for (let hop = 0; hop < 6; hop++) {
      const h: Record<string, string> = { 'User-Agent': USER_AGENT, ...headers };
      const sameOrigin = new URL(target).origin === new URL(this.base).origin;
      if (authorization && sameOrigin) h.Authorization = authorization;
      const ctl = new AbortController();
      let res: Response;
      try {
        res = await this.withIdle(
          fetch(target, { headers: h, redirect: 'manual', signal: ctl.signal }),
          () => ctl.abort(),
        );
      } catch (err) {
        if (err instanceof Retryable) throw err;
        throw new Retryable(`cannot reach ${new URL(target).host}: ${describe(err)}`);
      }
      if ([301, 302, 303, 307, 308].includes(res.status)) {
        const loc = res.headers.get('location');
        await res.body?.cancel().catch(() => undefined);
        if (!loc)
          throw new IsolaError('E_REGISTRY_PROTOCOL', `redirect without Location from ${target}`);
        const next = new URL(loc, target);
        if (next.protocol === 'http:' && new URL(target).protocol === 'https:') {
          throw new IsolaError(
            'E_REGISTRY_INSECURE',
            `refusing a redirect from https to ${next.href}`,
          );
        }
        target = next.href;
        continue;
      }
      return res;
    }
    throw new IsolaError('E_REGISTRY_PROTOCOL', `too many redirects for ${url}`);
  }

  private async authorize(challenges: Challenge[], scope: string): Promise<string> {
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const creds = this.opts.credentials;
    if (bearer?.params.realm) return `Bearer ${await this.fetchToken(bearer, scope)}`;
    if (challenges.some((c) => c.scheme === 'basic')) {
      if (!creds) {
        throw new IsolaError(
          'E_REGISTRY_AUTH',
          `${this.opts.registry} requires a login (Basic auth) and no credentials were given (--creds or an auth file)`,
        );
      }
      return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    }
    throw new IsolaError(
      'E_REGISTRY_AUTH',
      `${this.opts.registry} answered 401 without a usable challenge (${challenges.map((c) => c.scheme).join(', ') || 'none'})`,
    );
  }

  private async fetchToken(ch: Challenge, scope: string): Promise<string> {
    const realm = new URL(ch.params.realm as string);
    const creds = this.opts.credentials;
    if (realm.protocol === 'http:' && creds) {
      const host = realm.host;
      if (!isLoopbackRegistry(host) && !(this.opts.insecure ?? []).includes(host)) {
        throw new IsolaError(
          'E_REGISTRY_INSECURE',
          `token realm ${realm.href} is plain http; refusing to send credentials (add ${host} to the insecure registries to allow it)`,
        );
      }
    }
    if (ch.params.service) realm.searchParams.set('service', ch.params.service);
    realm.searchParams.set('scope', scope);
    const headers: Record<string, string> = { 'User-Agent': USER_AGENT };
    if (creds)
      headers.Authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    return this.withRetries(`token from ${realm.host}`, async () => {
      let res: Response;
      try {
        res = await fetch(realm, { headers });
      } catch (err) {
        throw new Retryable(`cannot reach token server ${realm.host}: ${describe(err)}`);
      }
      if (res.status === 401 || res.status === 403) {
        await res.body?.cancel();
        throw new IsolaError(
          'E_REGISTRY_AUTH',
          `token server ${realm.host} refused the credentials (HTTP ${res.status})`,
        );
      }
      if (res.status >= 500) throw new Retryable(`token server HTTP ${res.status}`);
      if (res.status !== 200)
        throw new IsolaError('E_REGISTRY_PROTOCOL', `token server answered HTTP ${res.status}`);
      let body: { token?: string; access_token?: string };
      try {
        body = (await res.json()) as typeof body;
      } catch {
        throw new IsolaError(
          'E_REGISTRY_PROTOCOL',
          'token server answered something that is not JSON',
        );
      }
      const token = body.token ?? body.access_token;
      if (!token)
        throw new IsolaError('E_REGISTRY_PROTOCOL', 'token server answered without a token');
      return token;
    });
  }
}

function describe(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}

export function storeError(err: NodeJS.ErrnoException, file: string): IsolaError {
  if (err.code === 'ENOSPC' || err.code === 'EDQUOT') {
    return new IsolaError('E_STORE_NO_SPACE', `no space left writing ${file}`, { cause: err });
  }
  return new IsolaError('E_STORE_IO', `writing ${file}: ${err.message}`, { cause: err });
}
