import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { IsolaError } from '../errors.js';
import { isLayerMediaType, openLayerStream, sniffCompression } from './decompress.js';
import { readTar } from './tar-read.js';
import { tarBuffer } from './tar-write.js';

const OCI = 'application/vnd.oci.image.layer.v1.tar';
const DOCKER = 'application/vnd.docker.image.rootfs.diff.tar.gzip';

async function* chunked(buf: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

/** Single bytes first (so sniffing has to gather the magic), then big chunks. */
async function* ragged(buf: Buffer): AsyncGenerator<Buffer> {
  for (let i = 0; i < 3 && i < buf.length; i++) yield buf.subarray(i, i + 1);
  yield* chunked(buf.subarray(3), 4096);
}

async function collect(s: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c);
  return Buffer.concat(parts);
}

function zstd(data: Buffer): Buffer {
  const r = spawnSync('zstd', ['-q', '-c'], { input: data, maxBuffer: 256 * 1024 * 1024 });
  assert.equal(r.status, 0, r.stderr?.toString());
  return r.stdout;
}

/** zstd processes whose parent is this test process. */
function zstdChildren(): number[] {
  const out: number[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const m = /^\d+ \((.*)\) \S+ (\d+)/.exec(stat);
      if (m?.[1] === 'zstd' && Number(m[2]) === process.pid) out.push(Number(pid));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

async function noZstdLeft(): Promise<void> {
  for (let i = 0; i < 50 && zstdChildren().length; i++) await sleep(20);
  assert.deepEqual(zstdChildren(), [], 'a zstd child outlived its stream');
}

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof IsolaError, `not an IsolaError: ${err}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

const layer = tarBuffer([
  { path: 'etc/', type: 'dir' },
  { path: 'etc/motd', type: 'file', data: 'hello\n' },
  { path: 'random', type: 'file', data: randomBytes(300_000) },
]);

describe('openLayerStream', () => {
  test('passes uncompressed tar through (OCI tar and nondistributable tar)', async () => {
    for (const mt of [OCI, 'application/vnd.oci.image.layer.nondistributable.v1.tar']) {
      assert.deepEqual(await collect(openLayerStream(mt, chunked(layer, 4096))), layer);
    }
  });

  test('gunzips the gzip media types, from iterables and from Readables', async () => {
    const gz = gzipSync(layer);
    for (const mt of [
      `${OCI}+gzip`,
      'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
      DOCKER,
      'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
    ]) {
      assert.deepEqual(await collect(openLayerStream(mt, chunked(gz, 1000))), layer, mt);
    }
    assert.deepEqual(await collect(openLayerStream(`${OCI}+gzip`, Readable.from([gz]))), layer);
    // And the result reads as a tar.
    const names: string[] = [];
    for await (const e of readTar(openLayerStream(`${OCI}+gzip`, chunked(gz, 777))))
      names.push(e.header.path);
    assert.deepEqual(names, ['etc/', 'etc/motd', 'random']);
  });

  test('decompresses zstd through the zstd CLI', async () => {
    const z = zstd(layer);
    for (const mt of [
      `${OCI}+zstd`,
      'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
    ])
      assert.deepEqual(await collect(openLayerStream(mt, chunked(z, 5000))), layer, mt);
    await noZstdLeft();
  });

  test('x-tar and docker layers are sniffed: plain, gzip or zstd', async () => {
    for (const [data, what] of [
      [layer, 'plain'],
      [gzipSync(layer), 'gzip'],
      [zstd(layer), 'zstd'],
    ] as const) {
      for (const mt of ['application/x-tar', DOCKER])
        assert.deepEqual(await collect(openLayerStream(mt, ragged(data))), layer, `${mt} ${what}`);
    }
    // Fewer bytes than the magic is still a stream (of what there is).
    assert.deepEqual(
      await collect(openLayerStream('application/x-tar', chunked(Buffer.from('ab'), 1))),
      Buffer.from('ab'),
    );
    await noZstdLeft();
  });

  test('corrupt or truncated gzip is E_IMAGE_BAD_LAYER', async () => {
    const gz = gzipSync(layer);
    const corrupt = Buffer.from(gz);
    for (let i = 100; i < 400; i++) corrupt[i] = corrupt[i]! ^ 0x5a;
    await rejectsCode(
      collect(openLayerStream(`${OCI}+gzip`, chunked(corrupt, 1000))),
      'E_IMAGE_BAD_LAYER',
    );
    await rejectsCode(
      collect(openLayerStream(`${OCI}+gzip`, chunked(gz.subarray(0, gz.length - 100), 1000))),
      'E_IMAGE_BAD_LAYER',
    );
    // The media type says gzip; plain tar is not accepted in its place.
    await rejectsCode(
      collect(openLayerStream(`${OCI}+gzip`, chunked(layer, 1000))),
      'E_IMAGE_BAD_LAYER',
    );
  });

  test('corrupt or truncated zstd is E_IMAGE_BAD_LAYER, and no zstd process is left', async () => {
    const z = zstd(layer);
    const corrupt = Buffer.from(z);
    for (let i = 50; i < 300; i++) corrupt[i] = corrupt[i]! ^ 0x5a;
    await rejectsCode(
      collect(openLayerStream(`${OCI}+zstd`, chunked(corrupt, 1000))),
      'E_IMAGE_BAD_LAYER',
    );
    await rejectsCode(
      collect(openLayerStream(`${OCI}+zstd`, chunked(z.subarray(0, z.length - 100), 1000))),
      'E_IMAGE_BAD_LAYER',
    );
    await noZstdLeft();
  });

  test('stopping early kills zstd; a failing source fails the stream with its own error', async () => {
    const big = zstd(randomBytes(8 * 1024 * 1024));
    for await (const chunk of openLayerStream(`${OCI}+zstd`, chunked(big, 64 * 1024))) {
      assert.ok(chunk.length > 0);
      assert.equal(zstdChildren().length, 1, 'zstd runs while streaming');
      break;
    }
    await noZstdLeft();
    const boom = new Error('network went away');
    async function* failing(data: Buffer): AsyncGenerator<Buffer> {
      yield data.subarray(0, 20_000);
      throw boom;
    }
    for (const [mt, data] of [
      [`${OCI}+zstd`, big],
      [`${OCI}+gzip`, gzipSync(randomBytes(1024 * 1024))],
      [OCI, layer],
    ] as const)
      await assert.rejects(collect(openLayerStream(mt, failing(data))), (err) => err === boom, mt);
    await noZstdLeft();
  });

  test('an unknown media type is E_IMAGE_MEDIA_TYPE, at once', () => {
    for (const mt of ['application/vnd.oci.image.config.v1+json', 'application/octet-stream', ''])
      assert.throws(
        () => openLayerStream(mt, chunked(layer, 10)),
        (err: unknown) => err instanceof IsolaError && err.code === 'E_IMAGE_MEDIA_TYPE',
      );
    assert.equal(isLayerMediaType(`${OCI}+zstd`), true);
    assert.equal(isLayerMediaType('application/json'), false);
  });

  test('sniffCompression reads the magic bytes', () => {
    assert.equal(sniffCompression(gzipSync(Buffer.from('x'))), 'gzip');
    assert.equal(sniffCompression(zstd(Buffer.from('x'))), 'zstd');
    assert.equal(sniffCompression(layer), 'none');
    assert.equal(sniffCompression(Buffer.from([0x1f])), 'none');
    assert.equal(sniffCompression(Buffer.alloc(0)), 'none');
  });
});
