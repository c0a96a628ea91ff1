// Turns a layer blob into its uncompressed tar stream, by media type. gzip runs in-process
// (node:zlib); zstd runs in the `zstd` CLI, since Node 20 has no zstd, and the child is killed
// whenever the consumer stops early or anything fails, so no process outlives the stream.
// Damaged compressed data is E_IMAGE_BAD_LAYER; errors of the source pass through unchanged.

import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { IsolaError } from '../errors.js';

export type Compression = 'gzip' | 'zstd' | 'none';

/**
 * Layer media types and how their blobs are compressed. 'sniff' means the magic bytes decide:
 * docker-save archives hold tars that may or may not be compressed, and some tools label
 * uncompressed (or zstd) layers with the docker `.tar.gzip` types; containerd sniffs all of
 * these too. The OCI types say exactly what the blob is, so they are taken at their word.
 */
const LAYER_MEDIA_TYPES: Record<string, Compression | 'sniff'> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'sniff',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'sniff',
  'application/x-tar': 'sniff',
};

/** Whether openLayerStream knows this media type. */
export function isLayerMediaType(mediaType: string): boolean {
  return Object.hasOwn(LAYER_MEDIA_TYPES, mediaType);
}

/** How a blob is compressed, from its first bytes (at least 4 for a certain answer). */
export function sniffCompression(first: Buffer): Compression {
  if (first.length >= 2 && first[0] === 0x1f && first[1] === 0x8b) return 'gzip';
  if (first.length >= 4 && first.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return 'none';
}

/** Bytes of stderr kept from `zstd` for the error message. */
const STDERR_KEEP = 2048;

function badLayer(what: string, cause: unknown): IsolaError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new IsolaError('E_IMAGE_BAD_LAYER', `corrupt ${what} layer data: ${detail}`, { cause });
}

/**
 * The uncompressed tar stream of a layer blob. Throws E_IMAGE_MEDIA_TYPE at once for a media
 * type that is not a layer; decompression errors surface while iterating.
 */
export function openLayerStream(
  mediaType: string,
  compressed: AsyncIterable<Buffer> | NodeJS.ReadableStream,
): AsyncIterable<Buffer> {
  const kind = LAYER_MEDIA_TYPES[mediaType];
  if (kind === undefined)
    throw new IsolaError('E_IMAGE_MEDIA_TYPE', `unknown layer media type ${mediaType}`, {
      details: { mediaType },
    });
  return decompress(kind, compressed as AsyncIterable<Buffer>);
}

async function* decompress(
  declared: Compression | 'sniff',
  source: AsyncIterable<Buffer>,
): AsyncGenerator<Buffer> {
  let input = source;
  let kind = declared;
  if (kind === 'sniff') {
    const peeked = await peek(source, 4);
    kind = sniffCompression(peeked.head);
    input = peeked.stream;
  }
  if (kind === 'gzip') yield* gunzip(input);
  else if (kind === 'zstd') yield* unzstd(input);
  else yield* input;
}

/** The first `n` bytes (fewer at end of input) and a stream that still yields all of them. */
async function peek(
  source: AsyncIterable<Buffer>,
  n: number,
): Promise<{ head: Buffer; stream: AsyncIterable<Buffer> }> {
  const it = source[Symbol.asyncIterator]();
  const seen: Buffer[] = [];
  let total = 0;
  let done = false;
  while (total < n) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    seen.push(r.value);
    total += r.value.length;
  }
  async function* stream(): AsyncGenerator<Buffer> {
    let finished = done;
    try {
      yield* seen;
      while (!finished) {
        const r = await it.next();
        if (r.done) finished = true;
        else yield r.value;
      }
    } finally {
      if (!finished) await it.return?.();
    }
  }
  return { head: Buffer.concat(seen), stream: stream() };
}

async function* gunzip(input: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const src = Readable.from(input, { objectMode: false });
  const z = createGunzip();
  // Errors of the source reach the consumer unchanged through the gunzip stream.
  src.on('error', (err) => z.destroy(err));
  src.pipe(z);
  try {
    for await (const chunk of z) yield chunk as Buffer;
  } catch (err) {
    // zlib's own errors carry Z_* codes (Z_DATA_ERROR, Z_BUF_ERROR for a cut-off stream).
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('Z_')) throw badLayer('gzip', err);
    throw err;
  } finally {
    src.destroy();
    z.destroy();
  }
}

async function* unzstd(input: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let child: ChildProcessByStdio<Writable, Readable, Readable>;
  try {
    child = spawn('zstd', ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (err) {
    throw noZstd(err);
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
    (resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code, signal) => resolve({ code, signal }));
    },
  );
  exited.catch(() => {});
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s: string) => {
    if (stderr.length < STDERR_KEEP) stderr += s.slice(0, STDERR_KEEP - stderr.length);
  });
  // Feeding stops with EPIPE when zstd exits early (bad data, or we killed it): not the
  // source's fault, the exit status tells what happened.
  let feedError: unknown;
  const feed = pipeline(Readable.from(input, { objectMode: false }), child.stdin).catch((err) => {
    feedError = err;
  });
  try {
    try {
      for await (const chunk of child.stdout) yield chunk as Buffer;
    } catch (err) {
      // stdout only fails when the process could not be started.
      await exited.catch((e) => {
        throw noZstd(e);
      });
      throw err;
    }
    const { code, signal } = await exited.catch((e) => {
      throw noZstd(e);
    });
    await feed;
    if (feedError !== undefined && (feedError as NodeJS.ErrnoException).code !== 'EPIPE')
      throw feedError;
    if (code !== 0)
      throw badLayer('zstd', `zstd exited with ${code ?? signal}: ${stderr.trim() || 'no output'}`);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    child.stdin.destroy();
    child.stdout.destroy();
    await exited.catch(() => {});
  }
}

function noZstd(err: unknown): IsolaError {
  const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
  return new IsolaError(
    'E_IMAGE_MEDIA_TYPE',
    missing
      ? 'zstd-compressed layers need the zstd command, which is not installed'
      : `cannot run zstd: ${err instanceof Error ? err.message : String(err)}`,
    { cause: err },
  );
}
