// Self-test of the registry harness (test/registry-helpers.ts) the image-pull tests stand on:
// a real docker-registry in each auth mode, layouts pushed with skopeo in OCI and Docker
// schema 2 form, a two-platform index, and the fault proxy in front of the registry.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  type BuiltImage,
  MEDIA_TYPES,
  type TestRegistry,
  busyboxLayer,
  pushLayout,
  registryChildPids,
  registryManifestDigest,
  registryRequest,
  requestToken,
  sha256,
  startFaultProxy,
  startRegistry,
  writeOciLayout,
} from './registry-helpers.js';

const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const missing = ['docker-registry', 'skopeo', 'htpasswd', 'openssl', 'zstd'].filter(
  (c) => !have(c),
);
const skip = missing.length ? `not installed: ${missing.join(', ')}` : false;

describe('registry harness', { skip }, () => {
  let base = '';
  let layout = '';
  let one: BuiltImage | undefined;
  const registries: TestRegistry[] = [];

  before(() => {
    base = mkdtempSync(path.join(os.tmpdir(), 'isola-test-harness-'));
    layout = path.join(base, 'layout');
    one = writeOciLayout(layout, 'one', [
      { layers: [busyboxLayer()], config: { Cmd: ['/bin/sh', '-c', 'echo hello'] } },
    ]).images[0];
    writeOciLayout(layout, 'multi', [
      {
        layers: [{ entries: [{ path: 'arch', type: 'file', data: 'amd64\n' }] }],
        platform: { os: 'linux', architecture: 'amd64' },
      },
      {
        layers: [
          { entries: [{ path: 'arch', type: 'file', data: 'arm64\n' }], compression: 'zstd' },
        ],
        platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
      },
    ]);
  });

  after(async () => {
    await Promise.all(registries.map((r) => r.stop()));
    if (base) rmSync(base, { recursive: true, force: true });
  });

  async function start(auth: 'none' | 'basic' | 'token'): Promise<TestRegistry> {
    const reg = await startRegistry({ auth });
    registries.push(reg);
    return reg;
  }

  test('layout: one tag per image, several tags merged into index.json', () => {
    const dir = path.join(base, 'l2');
    const a = writeOciLayout(dir, 'a', [{ layers: [{ entries: [], compression: 'none' }] }]);
    const b = writeOciLayout(dir, 'b', [
      { layers: [{ entries: [{ path: 'x', type: 'file', data: 'x' }] }] },
      {
        layers: [{ entries: [{ path: 'y', type: 'file', data: 'y' }] }],
        platform: { os: 'linux', architecture: 'arm64' },
      },
    ]);
    assert.equal(a.index, undefined);
    assert.ok(b.index);
    assert.equal(b.index.digest, sha256(b.index.bytes));
    const built = b.images[0]!;
    assert.equal(built.manifestDigest, sha256(built.manifest));
    assert.equal(built.configDigest, sha256(built.config));
    assert.deepEqual(
      (JSON.parse(built.config.toString()) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids,
      built.diffIds,
    );
  });

  test('no auth: push OCI (digests kept) and v2s2 (converted), index with --all', async () => {
    const reg = await start('none');
    const built = one!;

    await pushLayout(layout, 'one', reg, 'isola/busybox:oci');
    assert.equal(await registryManifestDigest(reg, 'isola/busybox', 'oci'), built.manifestDigest);

    await pushLayout(layout, 'one', reg, 'isola/busybox:v2s2', { format: 'v2s2' });
    const v2 = await registryManifestDigest(reg, 'isola/busybox', 'v2s2');
    assert.notEqual(v2, built.manifestDigest);
    const m = await registryRequest(reg, 'GET', '/v2/isola/busybox/manifests/v2s2', {
      headers: { accept: MEDIA_TYPES.dockerManifest },
    });
    assert.equal(m.status, 200);
    assert.equal(m.headers.get('content-type'), MEDIA_TYPES.dockerManifest);
    assert.equal(sha256(m.body), v2);
    // The busybox layer blob itself is the same gzip stream in both forms.
    const doc = JSON.parse(m.body.toString()) as { layers: { digest: string }[] };
    assert.deepEqual(
      doc.layers.map((l) => l.digest),
      built.layerDigests,
    );

    await pushLayout(layout, 'multi', reg, 'isola/multi:latest', {
      all: true,
      preserveDigests: true,
    });
    const idx = await registryRequest(reg, 'GET', '/v2/isola/multi/manifests/latest', {
      headers: { accept: MEDIA_TYPES.ociIndex },
    });
    assert.equal(idx.status, 200);
    assert.equal(idx.headers.get('content-type'), MEDIA_TYPES.ociIndex);
    const index = JSON.parse(idx.body.toString()) as {
      manifests: { digest: string; platform: { architecture: string } }[];
    };
    assert.equal(index.manifests.length, 2);
    assert.deepEqual(
      index.manifests.map((x) => x.platform.architecture),
      ['amd64', 'arm64'],
    );
    // distribution 2.8 will not serve an OCI index to a client that does not accept one.
    const noAccept = await registryRequest(reg, 'GET', '/v2/isola/multi/manifests/latest', {
      headers: { accept: MEDIA_TYPES.ociManifest },
    });
    assert.equal(noAccept.status, 404);
    for (const x of index.manifests) {
      const r = await registryRequest(reg, 'HEAD', `/v2/isola/multi/manifests/${x.digest}`, {
        headers: { accept: MEDIA_TYPES.ociManifest },
      });
      assert.equal(r.status, 200, x.digest);
    }
  });

  test('basic auth: anonymous 401, push and read back with credentials', async () => {
    const reg = await start('basic');
    const anon = await registryRequest(reg, 'GET', '/v2/', { anonymous: true });
    assert.equal(anon.status, 401);
    assert.match(anon.headers.get('www-authenticate') ?? '', /^Basic realm=/);
    assert.equal((await registryRequest(reg, 'GET', '/v2/')).status, 200);
    await pushLayout(layout, 'one', reg, 'private/busybox:1');
    assert.match(
      await registryManifestDigest(reg, 'private/busybox', '1'),
      /^sha256:[0-9a-f]{64}$/,
    );
    const wrong = await fetch(`${reg.url}/v2/private/busybox/manifests/1`, {
      headers: { authorization: `Basic ${Buffer.from('isola:nope').toString('base64')}` },
    });
    assert.equal(wrong.status, 401);
  });

  test('token auth: Bearer challenge, refused and anonymous tokens, push', async () => {
    const reg = await start('token');
    const anon = await registryRequest(reg, 'GET', '/v2/', { anonymous: true });
    assert.equal(anon.status, 401);
    const challenge = anon.headers.get('www-authenticate') ?? '';
    assert.match(challenge, /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token"/);
    assert.match(challenge, /service="isola-test-registry"/);

    const wrong = await requestToken(reg, ['repository:private/busybox:pull'], {
      username: 'isola',
      password: 'wrong',
    });
    assert.equal(wrong.status, 401);

    assert.equal((await registryRequest(reg, 'GET', '/v2/')).status, 200);
    await pushLayout(layout, 'one', reg, 'private/busybox:1', { format: 'v2s2' });
    const digest = await registryManifestDigest(reg, 'private/busybox', '1');
    assert.match(digest, /^sha256:/);

    // An anonymous token carries no access: the registry refuses it for a pull.
    const anonToken = await requestToken(reg, ['repository:private/busybox:pull'], null);
    assert.equal(anonToken.status, 200);
    const denied = await fetch(`${reg.url}/v2/private/busybox/manifests/1`, {
      headers: { authorization: `Bearer ${anonToken.token}`, accept: MEDIA_TYPES.dockerManifest },
    });
    assert.equal(denied.status, 401);
    assert.match(
      denied.headers.get('www-authenticate') ?? '',
      /scope="repository:private\/busybox:pull"/,
    );
    assert.ok(reg.tokenRequests() >= 4, `token requests: ${reg.tokenRequests()}`);
    // skopeo asked with the registry's credentials for push access to the repository.
    assert.ok(
      reg
        .tokenLog()
        .some(
          (e) =>
            e.user === 'isola' &&
            e.status === 200 &&
            e.scopes.includes('repository:private/busybox:pull,push'),
        ),
      JSON.stringify(reg.tokenLog()),
    );
  });

  test('fault proxy: one 500 then through, corrupt, truncate, reset, ranges', async () => {
    const reg = await start('none');
    await pushLayout(layout, 'one', reg, 'isola/faults:1');
    const manifest = await registryRequest(reg, 'GET', '/v2/isola/faults/manifests/1', {
      headers: { accept: MEDIA_TYPES.ociManifest },
    });
    const layer = (JSON.parse(manifest.body.toString()) as { layers: { digest: string }[] })
      .layers[0]!.digest;
    const blobPath = `/v2/isola/faults/blobs/${layer}`;

    const proxy = await startFaultProxy(reg.url, [
      { match: /\/manifests\//, times: 1, action: 'status500' },
      { match: /\/blobs\//, method: 'GET', times: 1, action: 'corrupt' },
      { match: /\/blobs\//, method: 'GET', times: 1, action: 'truncate' },
      { match: /\/blobs\//, method: 'GET', times: 1, action: 'reset' },
    ]);
    try {
      const via = { base: proxy.url, headers: { accept: MEDIA_TYPES.ociManifest } };
      const m1 = await registryRequest(reg, 'GET', '/v2/isola/faults/manifests/1', via);
      assert.equal(m1.status, 500);
      const m2 = await registryRequest(reg, 'GET', '/v2/isola/faults/manifests/1', via);
      assert.equal(m2.status, 200);
      assert.deepEqual(m2.body, manifest.body);

      const bad = await registryRequest(reg, 'GET', blobPath, { base: proxy.url });
      assert.equal(bad.status, 200);
      assert.equal(sha256(bad.body) === layer, false);
      const good = await registryRequest(reg, 'GET', blobPath);
      assert.equal(sha256(good.body), layer);
      assert.equal(bad.body.length, good.body.length);

      await assert.rejects(registryRequest(reg, 'GET', blobPath, { base: proxy.url }));
      await assert.rejects(registryRequest(reg, 'GET', blobPath, { base: proxy.url }));

      const ranged = await registryRequest(reg, 'GET', blobPath, {
        base: proxy.url,
        headers: { range: 'bytes=100-' },
      });
      assert.equal(ranged.status, 206);
      assert.deepEqual(ranged.body, good.body.subarray(100));
      const whole = await registryRequest(reg, 'GET', blobPath, { base: proxy.url });
      assert.equal(sha256(whole.body), layer);

      const hits = proxy.hits();
      assert.equal(hits['rule:0'], 1);
      assert.equal(hits['rule:1'], 1);
      assert.equal(hits['rule:2'], 1);
      assert.equal(hits['rule:3'], 1);
      assert.equal(hits[`GET ${blobPath}`], 5);
    } finally {
      await proxy.stop();
    }
  });

  test('stop leaves no docker-registry child', async () => {
    await Promise.all(registries.map((r) => r.stop()));
    assert.deepEqual(registryChildPids(), []);
  });
});
