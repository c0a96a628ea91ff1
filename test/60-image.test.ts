// OCI images against a real registry (Debian's docker-registry on loopback, plain, with htpasswd
// basic auth, and with token auth from a token server of our own); test images are OCI layouts
// written here and pushed with Debian's skopeo. Bad input must give clear errors and leave the
// store consistent.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { IsolaError } from '../src/errors.js';
import { exportImage, importArchive } from '../src/image/archive.js';
import { pruneStore, resolveImage } from '../src/image/images.js';
import { pullImage } from '../src/image/pull.js';
import { ensureRootfsImage, unpackImage } from '../src/image/rootfs.js';
import { ImageStore } from '../src/image/store/store.js';
import { tarBuffer } from '../src/image/tar-write.js';
import { ISOLA_BIN } from './helpers.js';
import {
  type FaultProxy,
  type TestRegistry,
  busyboxLayer,
  pushLayout,
  registryManifestDigest,
  startFaultProxy,
  startRegistry,
  writeOciLayout,
} from './registry-helpers.js';

const base = mkdtempSync(path.join(os.tmpdir(), 'isola-image-test-'));
let plain: TestRegistry;
let basic: TestRegistry;
let token: TestRegistry;
const proxies: FaultProxy[] = [];
const fast = { retries: 3, backoffMs: 20 };

const code = (c: string) => (e: unknown) => {
  if (e instanceof IsolaError && e.code === c) return true;
  throw e;
};

let storeN = 0;
function freshStore(): ImageStore {
  return ImageStore.open(path.join(base, `store-${storeN++}`));
}

/** Every blob in the store matches its name, nothing is half-written, ingest is empty. */
function assertConsistent(s: ImageStore): void {
  for (const hex of readdirSync(path.join(s.dir, 'blobs/sha256'))) {
    const got = createHash('sha256')
      .update(readFileSync(path.join(s.dir, 'blobs/sha256', hex)))
      .digest('hex');
    assert.equal(got, hex, `blob ${hex} is damaged`);
  }
  for (const r of s.listImages()) {
    for (const d of [r.digest, r.manifestDigest, r.configDigest])
      assert.ok(s.hasBlob(d), `${r.name} lacks ${d}`);
  }
  assert.deepEqual(
    readdirSync(path.join(s.dir, 'tmp')).filter((f) => !f.includes(`.${process.pid}.`)),
    [],
    'no scratch files of dead processes',
  );
}

function layout(name: string, images: Parameters<typeof writeOciLayout>[2], tag = 'v1') {
  const dir = path.join(base, 'layouts', name);
  return { dir, written: writeOciLayout(dir, tag, images) };
}

const marker = (text: string) => ({
  entries: [
    { path: 'etc/', type: 'dir' as const },
    { path: 'etc/marker', type: 'file' as const, data: text },
  ],
});

function cli(args: string[], store: string, env: Record<string, string> = {}) {
  const r = spawnSync(ISOLA_BIN, args, {
    encoding: 'utf8',
    env: { ...process.env, ISOLA_STORE: store, ...env },
    timeout: 120_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

before(async () => {
  [plain, basic, token] = await Promise.all([
    startRegistry({ auth: 'none' }),
    startRegistry({ auth: 'basic' }),
    startRegistry({ auth: 'token' }),
  ]);
  const app = layout('app', [
    {
      layers: [busyboxLayer(), marker('app v1\n')],
      config: { Cmd: ['/bin/cat', '/etc/marker'], Env: ['GREETING=hi'] },
    },
  ]);
  for (const reg of [plain, basic, token]) await pushLayout(app.dir, 'v1', reg, 'test/app:v1');
  await pushLayout(app.dir, 'v1', plain, 'test/app-docker:v1', { format: 'v2s2' });
  const multi = layout('multi', [
    { layers: [marker('amd64\n')], platform: { os: 'linux', architecture: 'amd64' } },
    {
      layers: [marker('arm64\n')],
      platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
    },
  ]);
  await pushLayout(multi.dir, 'v1', plain, 'test/multi:v1', { all: true });
  const armOnly = layout('arm', [
    { layers: [marker('arm\n')], platform: { os: 'linux', architecture: 'arm64' } },
    { layers: [marker('s390x\n')], platform: { os: 'linux', architecture: 's390x' } },
  ]);
  await pushLayout(armOnly.dir, 'v1', plain, 'test/armonly:v1', { all: true });
  const traversal = layout('traversal', [
    {
      layers: [
        {
          entries: [
            { path: 'ok', type: 'file', data: 'x' },
            { path: '../../evil-traversal', type: 'file', data: 'pwned' },
          ],
        },
      ],
    },
  ]);
  await pushLayout(traversal.dir, 'v1', plain, 'test/traversal:v1');
  const escaping = layout('escape', [
    {
      layers: [
        {
          entries: [
            { path: 'link', type: 'symlink', linkname: '../../../../../../../../tmp' },
            { path: 'link/evil-symlink', type: 'file', data: 'pwned' },
          ],
        },
      ],
    },
  ]);
  await pushLayout(escaping.dir, 'v1', plain, 'test/escape:v1');
  // ~6 MB of incompressible data, for the disk-full and resume tests.
  const big = layout('big', [
    {
      layers: [
        {
          entries: [{ path: 'big.bin', type: 'file', data: randomBytes(6 * 1024 * 1024) }],
          compression: 'none',
        },
      ],
    },
  ]);
  await pushLayout(big.dir, 'v1', plain, 'test/big:v1');
});

after(async () => {
  for (const p of proxies) await p.stop();
  await Promise.all([plain?.stop(), basic?.stop(), token?.stop()]);
  rmSync(base, { recursive: true, force: true });
});

async function proxy(
  reg: TestRegistry,
  rules: Parameters<typeof startFaultProxy>[1],
): Promise<FaultProxy> {
  const p = await startFaultProxy(reg.url, rules);
  proxies.push(p);
  return p;
}

describe('pull', () => {
  test('by tag from a plain registry on loopback (no flag), then by digest; inspect shows the digest', async () => {
    const dir = path.join(base, 'cli-store');
    const ref = `${plain.host}/test/app:v1`;
    const r = cli(['image', 'pull', ref], dir);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /pulled .*test\/app:v1/);
    const want = await registryManifestDigest(plain, 'test/app', 'v1');
    const inspect = JSON.parse(cli(['image', 'inspect', ref, '--json'], dir).out);
    assert.equal(inspect.digest, want);
    assert.equal(inspect.layers.length, 2);
    assert.deepEqual(inspect.config.cmd, ['/bin/cat', '/etc/marker']);
    const byDigest = cli(['image', 'pull', '--json', `${plain.host}/test/app@${want}`], dir);
    assert.equal(byDigest.code, 0, byDigest.err);
    assert.equal(JSON.parse(byDigest.out).digest, want);
    const ls = JSON.parse(cli(['image', 'ls', '--json'], dir).out);
    assert.deepEqual(
      ls.map((x: { name: string }) => x.name).sort(),
      [`${plain.host}/test/app:v1`, `${plain.host}/test/app@${want}`].sort(),
    );
    // Inspect by id prefix works too.
    assert.equal(cli(['image', 'inspect', inspect.id.slice(7, 19)], dir).code, 0);
  });

  test('Docker schema 2 manifests', async () => {
    const s = freshStore();
    const rec = await pullImage(s, `${plain.host}/test/app-docker:v1`);
    assert.equal(rec.digest, await registryManifestDigest(plain, 'test/app-docker', 'v1'));
    const tree = path.join(base, 'docker-tree');
    mkdirSync(tree);
    await unpackImage(s, rec, tree);
    assert.equal(readFileSync(path.join(tree, 'etc/marker'), 'utf8'), 'app v1\n');
    s.close();
  });

  test('basic auth: refused without credentials, works with them', async () => {
    const s = freshStore();
    await assert.rejects(pullImage(s, `${basic.host}/test/app:v1`), code('E_REGISTRY_AUTH'));
    await assert.rejects(
      pullImage(s, `${basic.host}/test/app:v1`, {
        credentials: { username: 'nobody', password: 'x' },
      }),
      code('E_REGISTRY_AUTH'),
    );
    const rec = await pullImage(s, `${basic.host}/test/app:v1`, {
      credentials: { username: basic.username as string, password: basic.password as string },
    });
    assert.equal(rec.digest, await registryManifestDigest(basic, 'test/app', 'v1'));
    assertConsistent(s);
    s.close();
  });

  test('token auth: the Bearer challenge flow against our token server', async () => {
    const s = freshStore();
    const before = token.tokenRequests();
    await assert.rejects(pullImage(s, `${token.host}/test/app:v1`), code('E_REGISTRY_AUTH'));
    await assert.rejects(
      pullImage(s, `${token.host}/test/app:v1`, {
        credentials: { username: 'x', password: 'wrong' },
      }),
      code('E_REGISTRY_AUTH'),
    );
    const rec = await pullImage(s, `${token.host}/test/app:v1`, {
      credentials: { username: token.username as string, password: token.password as string },
    });
    assert.equal(rec.digest, await registryManifestDigest(token, 'test/app', 'v1'));
    assert.ok(token.tokenRequests() > before);
    assert.ok(
      token
        .tokenLog()
        .some(
          (t) =>
            t.user === token.username &&
            t.scopes.includes('repository:test/app:pull') &&
            t.status === 200,
        ),
    );
    s.close();
  });

  test('multi-platform index: the host platform by default, --platform picks another', async () => {
    const dir = path.join(base, 'multi-store');
    const amd = JSON.parse(
      cli(['image', 'pull', '--json', `${plain.host}/test/multi:v1`], dir).out,
    );
    assert.equal(amd.platform, 'linux/amd64');
    assert.equal(amd.indexDigest, await registryManifestDigest(plain, 'test/multi', 'v1'));
    const r = cli(
      ['image', 'pull', '--json', '--platform', 'linux/arm64', `${plain.host}/test/multi:v1`],
      dir,
    );
    assert.equal(r.code, 0, r.err);
    const arm = JSON.parse(r.out);
    assert.equal(arm.platform, 'linux/arm64/v8');
    assert.notEqual(arm.manifestDigest, amd.manifestDigest);
    const s = ImageStore.open(dir);
    const tree = path.join(base, 'arm-tree');
    mkdirSync(tree);
    await unpackImage(s, resolveImage(s, `${plain.host}/test/multi:v1`), tree);
    assert.equal(readFileSync(path.join(tree, 'etc/marker'), 'utf8'), 'arm64\n');
    s.close();
  });

  test('an index without our platform: clear error listing what there is', async () => {
    const s = freshStore();
    await assert.rejects(pullImage(s, `${plain.host}/test/armonly:v1`), (e: unknown) => {
      assert.ok(e instanceof IsolaError && e.code === 'E_IMAGE_PLATFORM');
      assert.match(e.message, /linux\/arm64/);
      assert.match(e.message, /linux\/s390x/);
      return true;
    });
    assert.equal(s.listImages().length, 0);
    assertConsistent(s);
    s.close();
  });

  test('references that do not parse, and names the registry does not have', async () => {
    const s = freshStore();
    for (const bad of ['lower/UPPER', 'a:b:c', 'x@sha256:123', '', 'a//b']) {
      await assert.rejects(pullImage(s, bad), code('E_IMAGE_REFERENCE'));
    }
    const r = cli(['image', 'pull', 'Bad Ref'], path.join(base, 'x'));
    assert.equal(r.code, 2);
    assert.match(r.err, /E_IMAGE_REFERENCE/);
    await assert.rejects(pullImage(s, `${plain.host}/test/nope:v1`), code('E_IMAGE_NOT_FOUND'));
    s.close();
  });

  test('a blob that does not match its digest is refused and nothing is kept', async () => {
    const p = await proxy(plain, [{ match: /\/blobs\/sha256:/, action: 'corrupt' }]);
    const s = freshStore();
    await assert.rejects(
      pullImage(s, `${p.host}/test/app:v1`, fast),
      code('E_IMAGE_DIGEST_MISMATCH'),
    );
    assert.equal(s.listImages().length, 0);
    assert.deepEqual(readdirSync(path.join(s.dir, 'ingest')), [], 'the bad download is discarded');
    assertConsistent(s);
    s.close();
  });

  test('a corrupted manifest (pull by digest) is refused', async () => {
    const want = await registryManifestDigest(plain, 'test/app', 'v1');
    const p = await proxy(plain, [{ match: /\/manifests\//, method: 'GET', action: 'corrupt' }]);
    const s = freshStore();
    await assert.rejects(pullImage(s, `${p.host}/test/app@${want}`, fast), (e: unknown) => {
      assert.ok(e instanceof IsolaError);
      assert.ok(['E_IMAGE_DIGEST_MISMATCH', 'E_IMAGE_MANIFEST'].includes(e.code), e.code);
      return true;
    });
    assertConsistent(s);
    s.close();
  });

  test('the registry failing mid-download: retried and resumed with Range', async () => {
    const p = await proxy(plain, [
      { match: /\/blobs\/sha256:/, method: 'GET', action: 'truncate', times: 2 },
      { match: /\/manifests\//, method: 'GET', action: 'status500', times: 1 },
    ]);
    const s = freshStore();
    const rec = await pullImage(s, `${p.host}/test/big:v1`, fast);
    assert.equal(rec.digest, await registryManifestDigest(plain, 'test/big', 'v1'));
    const hits = p.hits();
    assert.equal(hits['rule:0'], 2, 'two downloads were cut');
    assert.equal(hits['rule:1'], 1);
    assertConsistent(s);
    s.close();
  });

  test('the registry failing for good: a clean error after the retries, nothing recorded', async () => {
    const p = await proxy(plain, [
      { match: /\/blobs\/sha256:/, method: 'GET', action: 'status500' },
    ]);
    const s = freshStore();
    await assert.rejects(
      pullImage(s, `${p.host}/test/app:v1`, fast),
      code('E_REGISTRY_UNAVAILABLE'),
    );
    assert.equal(s.listImages().length, 0);
    assertConsistent(s);
    const p2 = await proxy(plain, [{ match: /\/blobs\//, method: 'GET', action: 'reset' }]);
    await assert.rejects(
      pullImage(s, `${p2.host}/test/app:v1`, fast),
      code('E_REGISTRY_UNAVAILABLE'),
    );
    assertConsistent(s);
    s.close();
  });

  test('two processes pulling the same image into one store both succeed', async () => {
    const dir = path.join(base, 'concurrent-store');
    const run = () =>
      new Promise<number | null>((resolve) => {
        const c = spawn(ISOLA_BIN, ['image', 'pull', '-q', `${plain.host}/test/big:v1`], {
          env: { ...process.env, ISOLA_STORE: dir },
          stdio: 'ignore',
        });
        c.once('exit', resolve);
      });
    assert.deepEqual(await Promise.all([run(), run(), run()]), [0, 0, 0]);
    const s = ImageStore.open(dir);
    assert.equal(s.listImages().length, 1);
    assertConsistent(s);
    s.close();
  });

  test('the disk filling up: a clean error, the store stays consistent', async (t) => {
    const dir = path.join(base, 'full-store');
    mkdirSync(dir);
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'isola-test-full', dir]);
    if (m.status !== 0) {
      t.skip(`cannot mount a small tmpfs here (${m.stderr}); the disk-full path needs one`);
      return;
    }
    try {
      const s = ImageStore.open(dir);
      await assert.rejects(
        pullImage(s, `${plain.host}/test/big:v1`, fast),
        code('E_STORE_NO_SPACE'),
      );
      assert.equal(s.listImages().length, 0);
      assert.deepEqual(readdirSync(path.join(s.dir, 'ingest')), []);
      assertConsistent(s);
      // Still usable for something that fits.
      const small = await pullImage(s, `${plain.host}/test/multi:v1`, fast);
      assert.equal(s.listImages().length, 1);
      assert.equal(small.platform, 'linux/amd64');
      s.close();
    } finally {
      execFileSync('umount', [dir]);
    }
  });
});

describe('layers', () => {
  test('a path-traversal entry is rejected and nothing is written outside', async () => {
    const s = freshStore();
    const rec = await pullImage(s, `${plain.host}/test/traversal:v1`);
    const root = path.join(base, 'trav', 'a', 'root');
    mkdirSync(root, { recursive: true });
    await assert.rejects(unpackImage(s, rec, root), code('E_IMAGE_UNSAFE_LAYER'));
    assert.ok(!existsSync(path.join(base, 'trav', 'evil-traversal')));
    assert.ok(!existsSync(path.join(base, 'evil-traversal')));
    await assert.rejects(ensureRootfsImage(s, rec), code('E_IMAGE_UNSAFE_LAYER'));
    assert.deepEqual(readdirSync(path.join(s.dir, 'rootfs')), [], 'no root filesystem left behind');
    assertConsistent(s);
    s.close();
  });

  test('an escaping symlink is rejected and nothing is written through it', async () => {
    const s = freshStore();
    const rec = await pullImage(s, `${plain.host}/test/escape:v1`);
    const root = path.join(base, 'esc-root');
    mkdirSync(root);
    await assert.rejects(unpackImage(s, rec, root), code('E_IMAGE_UNSAFE_LAYER'));
    assert.ok(!existsSync('/tmp/evil-symlink'));
    s.close();
  });
});

describe('store', () => {
  test('rm and prune: shared blobs stay while another image uses them', async () => {
    const dir = path.join(base, 'prune-store');
    assert.equal(cli(['image', 'pull', '-q', `${plain.host}/test/app:v1`], dir).code, 0);
    assert.equal(cli(['image', 'pull', '-q', `${plain.host}/test/app-docker:v1`], dir).code, 0);
    const s = ImageStore.open(dir);
    const before = readdirSync(path.join(dir, 'blobs/sha256')).length;
    s.close();
    const rm = cli(['image', 'rm', `${plain.host}/test/app:v1`], dir);
    assert.equal(rm.code, 0, rm.err);
    const pr = JSON.parse(cli(['image', 'prune', '--json'], dir).out);
    // The OCI and Docker variants share layer and config blobs; only the OCI manifest goes.
    assert.equal(pr.blobs, 1);
    assert.equal(readdirSync(path.join(dir, 'blobs/sha256')).length, before - 1);
    assert.equal(cli(['image', 'rm', `${plain.host}/test/app-docker:v1`], dir).code, 0);
    assert.equal(JSON.parse(cli(['image', 'prune', '--json'], dir).out).blobs, before - 1);
    assert.deepEqual(readdirSync(path.join(dir, 'blobs/sha256')), []);
    const again = cli(['image', 'rm', `${plain.host}/test/app:v1`], dir);
    assert.equal(again.code, 5);
    assert.match(again.err, /E_IMAGE_NOT_FOUND/);
  });
});

describe('import and export', () => {
  test('export is an OCI layout skopeo reads; import gives back the same image', async () => {
    const s = freshStore();
    const rec = await pullImage(s, `${plain.host}/test/app:v1`);
    const tar = path.join(base, 'export.tar');
    await exportImage(s, rec, tar);
    const out = path.join(base, 'skopeo-out');
    execFileSync('skopeo', [
      '--insecure-policy',
      'copy',
      '--quiet',
      `oci-archive:${tar}`,
      `oci:${out}:x`,
    ]);
    assert.ok(existsSync(path.join(out, 'index.json')));
    const s2 = freshStore();
    const [imp] = await importArchive(s2, tar);
    assert.equal(imp?.manifestDigest, rec.manifestDigest);
    assert.equal(imp?.name, rec.name);
    // The layout written by the test imports as a directory too, with a name given.
    const [dirImp] = await importArchive(s2, path.join(base, 'layouts', 'app'), {
      name: 'localhost/app:dir',
    });
    assert.equal(dirImp?.manifestDigest, rec.manifestDigest);
    s.close();
    s2.close();
  });

  test('docker-save archives (plain tar layers, RepoTags)', async () => {
    const layer = tarBuffer([
      { path: 'etc/', type: 'dir' },
      { path: 'etc/marker', type: 'file', data: 'docker-save\n' },
    ]);
    const diff = `sha256:${createHash('sha256').update(layer).digest('hex')}`;
    const config = Buffer.from(
      JSON.stringify({
        os: 'linux',
        architecture: 'amd64',
        config: { Cmd: ['sh'] },
        rootfs: { type: 'layers', diff_ids: [diff] },
      }),
    );
    const cfgName = `${createHash('sha256').update(config).digest('hex')}.json`;
    const archive = tarBuffer([
      { path: cfgName, type: 'file', data: config },
      { path: 'abc/', type: 'dir' },
      { path: 'abc/layer.tar', type: 'file', data: layer },
      {
        path: 'manifest.json',
        type: 'file',
        data: JSON.stringify([
          { Config: cfgName, RepoTags: ['saved/app:1'], Layers: ['abc/layer.tar'] },
        ]),
      },
    ]);
    const file = path.join(base, 'saved.tar');
    writeFileSync(file, archive);
    const dir = path.join(base, 'import-store');
    const r = cli(['image', 'import', '--json', file], dir);
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out)[0].name, 'docker.io/saved/app:1');
    const s = ImageStore.open(dir);
    const tree = path.join(base, 'saved-tree');
    mkdirSync(tree);
    await unpackImage(s, resolveImage(s, 'saved/app:1'), tree);
    assert.equal(readFileSync(path.join(tree, 'etc/marker'), 'utf8'), 'docker-save\n');
    s.close();
    // Damaged archives: clear errors.
    writeFileSync(
      path.join(base, 'junk.tar'),
      tarBuffer([{ path: 'readme', type: 'file', data: 'x' }]),
    );
    const junk = cli(['image', 'import', path.join(base, 'junk.tar')], dir);
    assert.equal(junk.code, 5);
    assert.match(junk.err, /E_IMAGE_ARCHIVE/);
    writeFileSync(path.join(base, 'trunc.tar'), archive.subarray(0, 1500));
    assert.match(
      cli(['image', 'import', path.join(base, 'trunc.tar')], dir).err,
      /E_IMAGE_ARCHIVE/,
    );
  });
});

describe('run', () => {
  test('a pulled image runs in a sandbox, with a private writable layer', async () => {
    const dir = path.join(base, 'run-store');
    const ref = `${plain.host}/test/app:v1`;
    assert.equal(cli(['image', 'pull', '-q', ref], dir).code, 0);
    const r = cli(['run', ref], dir);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'app v1\n');
    const w = cli(
      [
        'run',
        ref,
        'sh',
        '-c',
        'echo changed > /etc/marker; cat /etc/marker; echo $GREETING; exit 7',
      ],
      dir,
    );
    assert.equal(w.code, 7, w.err);
    assert.equal(w.out, 'changed\nhi\n');
    // The write stayed in that container's layer: the shared image is unchanged.
    const again = cli(['run', ref], dir);
    assert.equal(again.out, 'app v1\n', again.err);
    const s = ImageStore.open(dir);
    assert.equal(
      readdirSync(path.join(dir, 'rootfs')).length,
      1,
      'one shared root filesystem image',
    );
    // While a container runs, its image cannot be removed (its monitor holds a lease).
    const rec = resolveImage(s, ref);
    const running = spawn(
      ISOLA_BIN,
      ['run', ref, 'sh', '-c', 'trap "exit 0" TERM; sleep 60 & wait'],
      { env: { ...process.env, ISOLA_STORE: dir }, stdio: 'ignore' },
    );
    const exited = new Promise<number | null>((r) => running.once('exit', (c) => r(c)));
    try {
      for (let i = 0; i < 300 && s.holders([rec.manifestDigest]).length === 0; i++)
        await new Promise((r) => setTimeout(r, 100));
      assert.ok(s.holders([rec.manifestDigest]).length > 0, 'the container holds its image');
      const refused = cli(['image', 'rm', ref], dir);
      assert.equal(refused.code, 5);
      assert.match(refused.err, /E_IMAGE_IN_USE/);
      // Let the guest get to `wait` before asking it to stop.
      await new Promise((r) => setTimeout(r, 6000));
    } finally {
      running.kill('SIGTERM');
    }
    assert.equal(await exited, 0);
    assert.deepEqual(s.holders([rec.manifestDigest]), [], 'the lease went with the container');
    s.close();
    // Prune keeps the root filesystem of a named image.
    pruneStore(ImageStore.open(dir));
    assert.equal(readdirSync(path.join(dir, 'rootfs')).length, 1);
  });
});
