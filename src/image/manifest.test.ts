import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IsolaError } from '../errors.js';
import {
  MT,
  checkManifestMediaTypes,
  parseImageConfig,
  parseManifest,
  parsePlatform,
  referencedDigests,
  selectPlatform,
} from './manifest.js';
import { parseChallenges } from './registry/auth.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const code = (c: string) => (e: unknown) => e instanceof IsolaError && e.code === c;

const manifest = (extra: Record<string, unknown> = {}) =>
  Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.ociManifest,
      config: { mediaType: MT.ociConfig, digest: d('a'), size: 10 },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('b'), size: 20 },
      ],
      ...extra,
    }),
  );

const index = (platforms: Array<Record<string, string>>) => {
  const doc = {
    schemaVersion: 2,
    mediaType: MT.ociIndex,
    manifests: platforms.map((p, i) => ({
      mediaType: MT.ociManifest,
      digest: d(String(i + 1)),
      size: 100,
      platform: p,
    })),
  };
  const parsed = parseManifest(Buffer.from(JSON.stringify(doc)));
  assert.equal(parsed.kind, 'index');
  return parsed.kind === 'index' ? parsed.index : assert.fail();
};

test('manifests and indexes parse; the media type may come from the document, the transport or the shape', () => {
  assert.equal(parseManifest(manifest()).kind, 'manifest');
  const noType = Buffer.from(
    JSON.stringify({ ...JSON.parse(manifest().toString()), mediaType: undefined }),
  );
  assert.equal(parseManifest(noType).mediaType, MT.ociManifest);
  assert.equal(
    parseManifest(noType, `${MT.dockerManifest}; charset=utf-8`).mediaType,
    MT.dockerManifest,
  );
  assert.equal(index([{ os: 'linux', architecture: 'amd64' }]).manifests.length, 1);
});

test('bad manifests: schema 1, unknown type, not JSON, wrong shape, bad digest', () => {
  assert.throws(
    () => parseManifest(Buffer.from('{"schemaVersion":1,"fsLayers":[]}')),
    code('E_IMAGE_MEDIA_TYPE'),
  );
  assert.throws(
    () => parseManifest(manifest({ mediaType: 'application/vnd.example.thing+json' })),
    code('E_IMAGE_MEDIA_TYPE'),
  );
  assert.throws(() => parseManifest(Buffer.from('not json')), code('E_IMAGE_MANIFEST'));
  assert.throws(() => parseManifest(manifest({ layers: 'x' })), code('E_IMAGE_MANIFEST'));
  assert.throws(
    () =>
      parseManifest(
        manifest({ config: { mediaType: MT.ociConfig, digest: 'sha256:xyz', size: 1 } }),
      ),
    code('E_IMAGE_MANIFEST'),
  );
});

test('config and layer media types are checked before anything is downloaded', () => {
  const p = parseManifest(manifest());
  assert.ok(p.kind === 'manifest');
  checkManifestMediaTypes(p.manifest);
  const weird = parseManifest(
    manifest({ layers: [{ mediaType: 'application/vnd.example.layer', digest: d('c'), size: 1 }] }),
  );
  assert.ok(weird.kind === 'manifest');
  assert.throws(() => checkManifestMediaTypes(weird.manifest), code('E_IMAGE_MEDIA_TYPE'));
  const artifact = parseManifest(
    manifest({
      config: { mediaType: 'application/vnd.cncf.helm.config.v1+json', digest: d('a'), size: 1 },
    }),
  );
  assert.ok(artifact.kind === 'manifest');
  assert.throws(() => checkManifestMediaTypes(artifact.manifest), code('E_IMAGE_MEDIA_TYPE'));
});

test('platform selection: exact match, default variants, attestations skipped, clear error', () => {
  const idx = index([
    { os: 'unknown', architecture: 'unknown' },
    { os: 'linux', architecture: 'arm', variant: 'v6' },
    { os: 'linux', architecture: 'arm', variant: 'v7' },
    { os: 'linux', architecture: 'arm64', variant: 'v8' },
    { os: 'linux', architecture: 'amd64' },
    { os: 'windows', architecture: 'amd64' },
  ]);
  assert.equal(selectPlatform(idx, { os: 'linux', architecture: 'amd64' }).digest, d('5'));
  assert.equal(selectPlatform(idx, { os: 'linux', architecture: 'arm64' }).digest, d('4'));
  assert.equal(selectPlatform(idx, { os: 'linux', architecture: 'arm' }).digest, d('3'));
  assert.equal(
    selectPlatform(idx, { os: 'linux', architecture: 'arm', variant: 'v6' }).digest,
    d('2'),
  );
  assert.equal(selectPlatform(idx, { os: 'windows', architecture: 'amd64' }).digest, d('6'));
  assert.throws(
    () => selectPlatform(idx, { os: 'linux', architecture: 's390x' }),
    (e: unknown) =>
      e instanceof IsolaError &&
      e.code === 'E_IMAGE_PLATFORM' &&
      e.message.includes('linux/arm64/v8') &&
      !e.message.includes('unknown/unknown'),
  );
  assert.deepEqual(parsePlatform('linux/arm64/v8'), {
    os: 'linux',
    architecture: 'arm64',
    variant: 'v8',
  });
  assert.throws(() => parsePlatform('linux'), code('E_INVALID_ARGUMENT'));
});

test('image config: diff ids must match the layer count', () => {
  const cfg = Buffer.from(
    JSON.stringify({
      os: 'linux',
      architecture: 'amd64',
      rootfs: { type: 'layers', diff_ids: [d('e')] },
    }),
  );
  assert.equal(parseImageConfig(cfg, 1).os, 'linux');
  assert.throws(() => parseImageConfig(cfg, 2), code('E_IMAGE_MANIFEST'));
  assert.throws(() => parseImageConfig(Buffer.from('{}'), 0), code('E_IMAGE_MANIFEST'));
});

test('referenced digests for garbage collection', () => {
  assert.deepEqual(referencedDigests(manifest()), [d('a'), d('b')]);
  assert.deepEqual(referencedDigests(Buffer.from('garbage')), []);
});

test('WWW-Authenticate challenges', () => {
  const c = parseChallenges(
    'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"',
  );
  assert.equal(c.length, 1);
  assert.equal(c[0]?.scheme, 'bearer');
  assert.deepEqual(c[0]?.params, {
    realm: 'https://auth.example.com/token',
    service: 'registry.example.com',
    scope: 'repository:a/b:pull,push',
  });
  const two = parseChallenges('Basic realm="Registry Realm", Bearer realm="http://x/t",service=s');
  assert.deepEqual(
    two.map((x) => x.scheme),
    ['basic', 'bearer'],
  );
  assert.equal(two[1]?.params.service, 's');
  assert.equal(parseChallenges('Bearer realm="a\\"b"')[0]?.params.realm, 'a"b');
  assert.deepEqual(parseChallenges(''), []);
});
