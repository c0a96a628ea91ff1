import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { IsolaError } from '../../errors.js';
import { referencedDigests } from '../manifest.js';
import { ImageStore } from './store.js';

const base = mkdtempSync(path.join(os.tmpdir(), 'isola-store-test-'));
after(() => rmSync(base, { recursive: true, force: true }));
const digest = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
let n = 0;
const fresh = () => ImageStore.open(path.join(base, `s${n++}`));

test('blobs: verified on the way in and on the way out, written atomically', () => {
  const s = fresh();
  const b = Buffer.from('hello');
  s.putBlob(digest(b), b);
  assert.deepEqual(s.readBlob(digest(b)), b);
  assert.throws(
    () => s.putBlob(digest(Buffer.from('other')), b),
    (e: unknown) => e instanceof IsolaError && e.code === 'E_IMAGE_DIGEST_MISMATCH',
  );
  assert.equal(readdirSync(path.join(s.dir, 'tmp')).length, 0, 'no temp file left');
  writeFileSync(s.blobPath(digest(b)), 'tampered');
  assert.throws(
    () => s.readBlob(digest(b)),
    (e: unknown) => e instanceof IsolaError && e.code === 'E_STORE_IO',
  );
  assert.throws(
    () => s.readBlob(digest(Buffer.from('absent'))),
    (e: unknown) => e instanceof IsolaError && e.code === 'E_IMAGE_NOT_FOUND',
  );
  s.close();
});

function imageBlobs(s: ImageStore) {
  const layer = Buffer.from('layer');
  const config = Buffer.from('{"rootfs":{"type":"layers","diff_ids":[]}}');
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      config: { mediaType: 'x', digest: digest(config), size: config.length },
      layers: [{ mediaType: 'y', digest: digest(layer), size: layer.length }],
    }),
  );
  for (const b of [layer, config, manifest]) s.putBlob(digest(b), b);
  return { layer: digest(layer), config: digest(config), manifest: digest(manifest) };
}

test('gc keeps what images and live leases reach and removes the rest', () => {
  const s = fresh();
  const d = imageBlobs(s);
  const stray = Buffer.from('stray');
  s.putBlob(digest(stray), stray);
  const leased = Buffer.from('leased');
  const lease = s.lease([digest(leased)]);
  s.putBlob(digest(leased), leased);
  s.putImage({
    name: 'r/a:1',
    digest: d.manifest,
    manifestDigest: d.manifest,
    configDigest: d.config,
    indexDigest: null,
    platform: 'linux/amd64',
    size: 1,
    created: null,
    source: 'import',
    addedAt: new Date().toISOString(),
  });
  writeFileSync(s.ingestPath(digest(Buffer.from('partial'))), 'part');
  const r = s.gc(referencedDigests);
  assert.equal(r.blobs, 1, 'only the stray blob goes');
  assert.equal(r.partials, 1, 'an unowned partial download goes');
  for (const x of [d.layer, d.config, d.manifest, digest(leased)]) assert.ok(s.hasBlob(x), x);
  assert.ok(!s.hasBlob(digest(stray)));
  lease.release();
  s.removeImage('r/a:1');
  const r2 = s.gc(referencedDigests);
  assert.equal(r2.blobs, 4);
  assert.deepEqual(readdirSync(path.join(s.dir, 'blobs/sha256')), []);
  s.close();
});

test('a record cannot name blobs that are not there', () => {
  const s = fresh();
  assert.throws(
    () =>
      s.putImage({
        name: 'r/b:1',
        digest: `sha256:${'1'.repeat(64)}`,
        manifestDigest: `sha256:${'1'.repeat(64)}`,
        configDigest: `sha256:${'2'.repeat(64)}`,
        indexDigest: null,
        platform: 'linux/amd64',
        size: 1,
        created: null,
        source: 'import',
        addedAt: '',
      }),
    (e: unknown) => e instanceof IsolaError && e.code === 'E_STORE_IO',
  );
  assert.equal(s.listImages().length, 0);
  s.close();
});

/** Run a child that opens the store, leases `digest` and claims its ingest, then waits. */
function holder(dir: string, dg: string): Promise<{ kill: () => Promise<void> }> {
  const storeJs = path.join(path.dirname(fileURLToPath(import.meta.url)), 'store.js');
  const code = `
    const { ImageStore } = await import(${JSON.stringify(storeJs)});
    const s = ImageStore.open(${JSON.stringify(dir)});
    const l = s.lease([]);
    console.log(s.claimIngest(l, ${JSON.stringify(dg)}));
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.stdout.once('data', (b: Buffer) => {
      if (b.toString().trim() !== 'owned') reject(new Error(`holder says ${b}`));
      resolve({
        kill: () =>
          new Promise<void>((r) => {
            child.once('exit', () => r());
            child.kill('SIGKILL');
          }),
      });
    });
    child.once('error', reject);
  });
}

test('another live process downloading a blob makes it busy; its death frees it and its lease', async () => {
  const s = fresh();
  const dg = digest(Buffer.from('shared'));
  const h = await holder(s.dir, dg);
  const mine = s.lease([]);
  assert.equal(s.claimIngest(mine, dg), 'busy');
  // The holder's lease keeps its blobs through gc while it lives.
  const held = Buffer.from('held');
  s.putBlob(digest(held), held);
  s.addToLease(mine.id, []);
  await h.kill();
  assert.equal(s.claimIngest(mine, dg), 'owned');
  writeFileSync(s.ingestPath(dg), 'shared');
  s.commitIngest(mine, dg);
  assert.ok(s.hasBlob(dg));
  assert.equal(s.claimIngest(mine, dg), 'present');
  mine.release();
  const r = s.gc(referencedDigests);
  assert.equal(r.blobs, 2);
  assert.ok(!existsSync(s.ingestPath(dg)));
  s.close();
});
