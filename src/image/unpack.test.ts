import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, beforeEach, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { IsolaError } from '../errors.js';
import { openLayerStream } from './decompress.js';
import { type TarEntryInput, tarBuffer } from './tar-write.js';
import { applyLayer, splitEntryName, symlinkEscapes } from './unpack.js';

const isRoot = process.getuid?.() === 0;

async function* chunked(buf: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

function layer(entries: TarEntryInput[]): AsyncGenerator<Buffer> {
  return chunked(tarBuffer(entries), 64 * 1024);
}

async function rejectsCode(p: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof IsolaError, `not an IsolaError: ${err}`);
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

function mode(p: string): number {
  return lstatSync(p).mode & 0o7777;
}

describe('applyLayer', () => {
  const base = mkdtempSync(path.join(os.tmpdir(), 'isola-unpack-'));
  // `outside` sits next to the root: hostile layers aim at it, and it must stay empty.
  const root = path.join(base, 'root');
  const outside = path.join(base, 'outside');
  const r = (...p: string[]) => path.join(root, ...p);
  after(() => rmSync(base, { recursive: true, force: true }));
  beforeEach(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
    mkdirSync(root);
    mkdirSync(outside, { mode: 0o755 });
    chmodSync(outside, 0o755);
  });
  function assertOutsideUntouched(): void {
    assert.deepEqual(readdirSync(outside), [], 'something was written outside the root');
    assert.equal(mode(outside), 0o755, 'the outside directory was chmod-ed');
    assert.deepEqual(readdirSync(base).sort(), ['outside', 'root']);
  }

  test('creates files, directories, symlinks and hard links with content, modes and mtimes', async () => {
    const big = randomBytes(3 * 1024 * 1024 + 17);
    const stats = await applyLayer(
      root,
      layer([
        { path: './', type: 'dir', mode: 0o755, mtime: 1000 },
        { path: './etc/', type: 'dir', mode: 0o750, mtime: 2000 },
        { path: './etc/hosts', type: 'file', data: 'localhost\n', mode: 0o640, mtime: 3000 },
        { path: 'usr/bin/su', type: 'file', data: 'su', mode: 0o4755, mtime: 4000 },
        { path: 'usr/bin/wall', type: 'file', data: 'w', mode: 0o2755 },
        { path: 'tmp/', type: 'dir', mode: 0o1777, mtime: 5000 },
        { path: 'ro/', type: 'dir', mode: 0o555, mtime: 6000 },
        { path: 'ro/inside', type: 'file', data: 'written after its read-only parent' },
        { path: 'big', type: 'file', data: big, mode: 0o600 },
        { path: 'empty', type: 'file', data: '' },
        {
          path: 'etc/localtime',
          type: 'symlink',
          linkname: '/usr/share/zoneinfo/UTC',
          mtime: 7000,
        },
        { path: 'etc/rel', type: 'symlink', linkname: '../usr/bin/su' },
        { path: 'usr/bin/su-hard', type: 'hardlink', linkname: 'usr/bin/su' },
        { path: 'pipe', type: 'fifo', mode: 0o620 },
      ]),
    );
    assert.equal(readFileSync(r('etc/hosts'), 'utf8'), 'localhost\n');
    assert.deepEqual(readFileSync(r('big')), big);
    assert.equal(readFileSync(r('empty')).length, 0);
    assert.equal(mode(r('etc')), 0o750);
    assert.equal(mode(r('etc/hosts')), 0o640);
    assert.equal(mode(r('usr/bin/su')), 0o4755);
    assert.equal(mode(r('usr/bin/wall')), 0o2755);
    assert.equal(mode(r('tmp')), 0o1777);
    assert.equal(mode(r('usr')), 0o755, 'implicit parent');
    assert.equal(mode(r('ro')), isRoot ? 0o555 : 0o755);
    assert.equal(readFileSync(r('ro/inside'), 'utf8'), 'written after its read-only parent');
    // Directory mtimes hold although children were added after them.
    assert.equal(lstatSync(root).mtimeMs, 1000_000);
    assert.equal(lstatSync(r('etc')).mtimeMs, 2000_000);
    assert.equal(lstatSync(r('tmp')).mtimeMs, 5000_000);
    assert.equal(lstatSync(r('ro')).mtimeMs, 6000_000);
    assert.equal(lstatSync(r('etc/hosts')).mtimeMs, 3000_000);
    assert.equal(lstatSync(r('usr/bin/su')).mtimeMs, 4000_000);
    assert.equal(readlinkSync(r('etc/localtime')), '/usr/share/zoneinfo/UTC');
    assert.equal(lstatSync(r('etc/localtime')).mtimeMs, 7000_000, 'symlink mtime (lutimes)');
    assert.equal(readlinkSync(r('etc/rel')), '../usr/bin/su');
    assert.equal(lstatSync(r('usr/bin/su-hard')).ino, lstatSync(r('usr/bin/su')).ino);
    assert.equal(lstatSync(r('usr/bin/su')).nlink, 2);
    assert.ok(lstatSync(r('pipe')).isFIFO());
    assert.equal(mode(r('pipe')), 0o620);
    assert.deepEqual(stats, {
      entries: 14,
      files: 6,
      dirs: 4,
      symlinks: 2,
      hardlinks: 1,
      fifos: 1,
      whiteouts: 0,
      opaques: 0,
      skippedDevices: 0,
      skippedOther: 0,
      xattrs: 0,
      xattrsSkipped: 0,
      bytes:
        'localhost\n'.length + 2 + 1 + 'written after its read-only parent'.length + big.length,
    });
  });

  test('sets ownership when running as root, and not when told not to', async (t) => {
    if (!isRoot) return t.skip('needs root to chown');
    await applyLayer(
      root,
      layer([
        { path: 'home/', type: 'dir', uid: 1000, gid: 1000 },
        { path: 'home/su', type: 'file', data: 'x', mode: 0o6755, uid: 1000, gid: 1001 },
        { path: 'big-ids', type: 'file', data: 'x', uid: 3_000_000, gid: 2_097_152 },
        { path: 'home/l', type: 'symlink', linkname: 'su', uid: 1002, gid: 1003 },
      ]),
    );
    const owner = (p: string) => [lstatSync(p).uid, lstatSync(p).gid];
    assert.deepEqual(owner(r('home')), [1000, 1000]);
    assert.deepEqual(owner(r('home/su')), [1000, 1001]);
    assert.equal(mode(r('home/su')), 0o6755, 'setuid/setgid survive the chown');
    assert.deepEqual(owner(r('big-ids')), [3_000_000, 2_097_152]);
    assert.deepEqual(owner(r('home/l')), [1002, 1003], 'lchown, not the target');
    await applyLayer(root, layer([{ path: 'mine', type: 'file', data: 'x', uid: 1234 }]), {
      chown: false,
    });
    assert.deepEqual(owner(r('mine')), [0, 0]);
  });

  test('whiteouts and opaque directories hide lower layers but not this layer', async () => {
    await applyLayer(
      root,
      layer([
        { path: 'a/x', type: 'file', data: 'lower' },
        { path: 'a/sub/z', type: 'file', data: 'lower' },
        { path: 'a/lnk', type: 'symlink', linkname: '/' },
        { path: 'b/keep', type: 'file', data: 'lower' },
        { path: 'c/file', type: 'file', data: 'lower' },
        { path: 'gone', type: 'file', data: 'lower' },
        { path: 'gonedir/deep/f', type: 'file', data: 'lower' },
        { path: 'mixed/old', type: 'file', data: 'lower' },
      ]),
    );
    const stats = await applyLayer(
      root,
      layer([
        { path: 'a/new', type: 'file', data: 'upper, before the marker' },
        { path: 'a/sub/made', type: 'file', data: 'upper, inside a lower dir' },
        { path: 'a/.wh..wh..opq', type: 'file' },
        { path: 'a/after', type: 'file', data: 'upper, after the marker' },
        { path: '.wh.gone', type: 'file' },
        { path: '.wh.gonedir', type: 'file' },
        { path: 'b/.wh.missing', type: 'file' },
        { path: 'c/.wh.file', type: 'file' },
        { path: 'mixed/new', type: 'file', data: 'same layer' },
        { path: 'mixed/.wh.new', type: 'file' },
        { path: 'nowhere/.wh.x', type: 'file' },
        { path: '.wh..wh.plnk/123', type: 'file', data: 'aufs' },
      ]),
    );
    assert.deepEqual(readdirSync(r('a')).sort(), ['after', 'new', 'sub']);
    assert.deepEqual(readdirSync(r('a/sub')), ['made'], 'lower child of a kept dir removed');
    assert.ok(!existsSync(r('gone')));
    assert.ok(!existsSync(r('gonedir')));
    assert.deepEqual(readdirSync(r('b')), ['keep']);
    assert.deepEqual(readdirSync(r('c')), []);
    assert.deepEqual(readdirSync(r('mixed')).sort(), ['new', 'old'], 'same-layer file stays');
    assert.ok(!existsSync(r('nowhere')), 'a whiteout creates nothing');
    assert.ok(!existsSync(r('.wh..wh.plnk')));
    assert.deepEqual(
      [stats.whiteouts, stats.opaques, stats.files, stats.skippedOther],
      [6, 1, 4, 1],
    );
    // Whiteout names themselves never appear anywhere.
    const all = spawnSync('find', [root], { encoding: 'utf8' }).stdout;
    assert.ok(!all.includes('.wh.'), all);
  });

  test('replaces what lies in the way: file by dir, dir by file, symlink by dir, dir kept', async () => {
    await applyLayer(
      root,
      layer([
        { path: 'p', type: 'file', data: 'was a file' },
        { path: 'q/inner/deep', type: 'file', data: 'was under a dir' },
        { path: 'lib', type: 'symlink', linkname: 'usr/lib' },
        { path: 'usr/lib/libc.so', type: 'file', data: 'libc' },
        { path: 'keep/', type: 'dir', mode: 0o700 },
        { path: 'keep/child', type: 'file', data: 'stays' },
        { path: 'f', type: 'file', data: 'old content' },
        { path: 'g', type: 'hardlink', linkname: 'f' },
        { path: 'parentfile', type: 'file', data: 'in the way of a parent' },
      ]),
    );
    await applyLayer(
      root,
      layer([
        { path: 'p/', type: 'dir', mode: 0o711 },
        { path: 'p/c', type: 'file', data: 'child' },
        { path: 'q', type: 'file', data: 'now a file' },
        { path: 'lib/', type: 'dir' },
        { path: 'keep/', type: 'dir', mode: 0o751, mtime: 42 },
        { path: 'f', type: 'file', data: 'new content' },
        { path: 'parentfile/x', type: 'file', data: 'parent became a dir' },
      ]),
    );
    assert.equal(mode(r('p')), 0o711);
    assert.equal(readFileSync(r('p/c'), 'utf8'), 'child');
    assert.equal(readFileSync(r('q'), 'utf8'), 'now a file');
    assert.ok(lstatSync(r('lib')).isDirectory(), 'the symlink was replaced, not followed');
    assert.deepEqual(readdirSync(r('lib')), []);
    assert.equal(readFileSync(r('usr/lib/libc.so'), 'utf8'), 'libc');
    assert.equal(readFileSync(r('keep/child'), 'utf8'), 'stays');
    assert.equal(mode(r('keep')), 0o751);
    assert.equal(lstatSync(r('keep')).mtimeMs, 42_000);
    assert.equal(readFileSync(r('f'), 'utf8'), 'new content');
    assert.equal(readFileSync(r('g'), 'utf8'), 'old content', 'the other hard link is untouched');
    assert.equal(readFileSync(r('parentfile/x'), 'utf8'), 'parent became a dir');
  });

  test('writes through symlinked parents inside the root (usr-merge)', async () => {
    await applyLayer(
      root,
      layer([
        { path: 'usr/bin/', type: 'dir' },
        { path: 'bin', type: 'symlink', linkname: 'usr/bin' },
        { path: 'sbin', type: 'symlink', linkname: '/usr/bin' },
      ]),
    );
    await applyLayer(
      root,
      layer([
        { path: 'bin/ls', type: 'file', data: 'ls' },
        { path: 'sbin/init', type: 'file', data: 'init' },
        { path: 'bin/ll', type: 'symlink', linkname: '../../x' },
      ]),
    );
    assert.ok(lstatSync(r('bin')).isSymbolicLink());
    assert.equal(readFileSync(r('usr/bin/ls'), 'utf8'), 'ls');
    assert.equal(readFileSync(r('usr/bin/init'), 'utf8'), 'init');
    // Checked from where the link really lives (usr/bin), "../../x" stays inside.
    assert.equal(readlinkSync(r('usr/bin/ll')), '../../x');
  });

  test('device nodes are skipped; xattrs are applied where the kernel accepts them', async () => {
    const stats = await applyLayer(
      root,
      layer([
        { path: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
        { path: 'dev/sda', type: 'block', devmajor: 8, devminor: 0 },
        {
          path: 'ping',
          type: 'file',
          data: 'x',
          xattrs: { 'security.capability': 'caps', 'user.a': 'b' },
        },
      ]),
    );
    assert.ok(!existsSync(r('dev/null')));
    assert.ok(!existsSync(r('dev/sda')));
    assert.equal(stats.skippedDevices, 2);
    // user.a is set; 'caps' is not a valid capability blob, so the kernel refuses that one.
    assert.equal(stats.xattrs, 1);
    assert.equal(stats.xattrsSkipped, 1);
    const got = execFileSync(
      'python3',
      ['-c', 'import os,sys;print(os.getxattr(sys.argv[1],"user.a").decode())', r('ping')],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(got.trim(), 'b');
    assert.equal(readFileSync(r('ping'), 'utf8'), 'x');
  });

  test('rejects names that climb out of the root or are absolute', async () => {
    for (const name of ['../x', 'a/../../x', './../x', '/x', '/etc/passwd', 'a/b/../../../x']) {
      for (const type of ['file', 'dir', 'symlink'] as const) {
        await rejectsCode(
          applyLayer(root, layer([{ path: name, type, data: 'pwned', linkname: 'x' }])),
          'E_IMAGE_UNSAFE_LAYER',
        );
      }
    }
    await rejectsCode(
      applyLayer(root, layer([{ path: 'a/.wh...', type: 'file' }])),
      'E_IMAGE_UNSAFE_LAYER',
    );
    // `..` that stays inside is only a roundabout name.
    await applyLayer(root, layer([{ path: 'a/../b', type: 'file', data: 'inside' }]));
    assert.equal(readFileSync(r('b'), 'utf8'), 'inside');
    assertOutsideUntouched();
  });

  test('rejects a relative symlink that climbs above the root', async () => {
    for (const [name, target] of [
      ['a/l', '../../etc'],
      ['l', '..'],
      ['l', '../outside'],
      ['a/b/l', 'x/../../../../y'],
    ]) {
      await rejectsCode(
        applyLayer(root, layer([{ path: name!, type: 'symlink', linkname: target }])),
        'E_IMAGE_UNSAFE_LAYER',
        /climbs above the root/,
      );
      assert.ok(!existsSync(r(name!)), `${name} -> ${target} was created`);
    }
    await applyLayer(
      root,
      layer([
        { path: 'a/up', type: 'symlink', linkname: '../etc' },
        { path: 'abs', type: 'symlink', linkname: '/etc/../../..' },
      ]),
    );
    assert.equal(readlinkSync(r('a/up')), '../etc');
    assertOutsideUntouched();
  });

  test('symlinked parents pointing out of the root land inside it', async () => {
    // Layers can hold absolute links (they mean the container root); a damaged or hostile
    // lower layer may even hold a relative one that climbs out.
    symlinkSync('../../..', r('rel'));
    await applyLayer(
      root,
      layer([
        { path: 'lnk', type: 'symlink', linkname: '/' },
        { path: 'out', type: 'symlink', linkname: outside },
        { path: 'chain', type: 'symlink', linkname: 'lnk/out' },
      ]),
    );
    await applyLayer(
      root,
      layer([
        { path: 'lnk/etc/pwned', type: 'file', data: '1' },
        { path: 'out/pwned', type: 'file', data: '2' },
        { path: 'rel/pwned', type: 'file', data: '3' },
        { path: 'chain/deeper/pwned', type: 'file', data: '4' },
      ]),
    );
    assert.equal(readFileSync(r('etc/pwned'), 'utf8'), '1');
    assert.equal(readFileSync(r(outside, 'pwned'), 'utf8'), '2');
    assert.equal(readFileSync(r('pwned'), 'utf8'), '3');
    assert.equal(readFileSync(r(outside, 'deeper/pwned'), 'utf8'), '4');
    assertOutsideUntouched();
  });

  test('a directory swapped for a symlink mid-layer is not written through', async () => {
    await applyLayer(
      root,
      layer([
        { path: 'a/', type: 'dir', mode: 0o700, mtime: 1 },
        { path: 'a/sub/', type: 'dir', mode: 0o700, mtime: 1 },
        { path: 'a/x', type: 'file', data: 'x' },
        { path: 'a', type: 'symlink', linkname: outside },
        { path: 'a/pwned', type: 'file', data: 'inside' },
        { path: 'a/sub/', type: 'dir', mode: 0o700 },
      ]),
    );
    assert.ok(lstatSync(r('a')).isSymbolicLink());
    assert.equal(readFileSync(r(outside, 'pwned'), 'utf8'), 'inside');
    assertOutsideUntouched();
  });

  test('symlink loops are refused', async () => {
    await applyLayer(
      root,
      layer([
        { path: 'loop1', type: 'symlink', linkname: 'loop2' },
        { path: 'loop2', type: 'symlink', linkname: '/loop1' },
      ]),
    );
    await rejectsCode(
      applyLayer(root, layer([{ path: 'loop1/x', type: 'file', data: 'x' }])),
      'E_IMAGE_UNSAFE_LAYER',
      /too many levels/,
    );
  });

  test('hard links must point at an entry inside the root', async () => {
    writeFileSync(path.join(outside, '..', 'secret'), 'host file');
    try {
      for (const target of ['../../etc/passwd', '/etc/passwd', '../secret']) {
        await rejectsCode(
          applyLayer(root, layer([{ path: 'h', type: 'hardlink', linkname: target }])),
          'E_IMAGE_UNSAFE_LAYER',
        );
      }
      // Through a symlink, the target is looked up inside the root: the host file is not found.
      await applyLayer(root, layer([{ path: 'up', type: 'symlink', linkname: base }]));
      await rejectsCode(
        applyLayer(root, layer([{ path: 'h', type: 'hardlink', linkname: 'up/secret' }])),
        'E_IMAGE_BAD_LAYER',
        /does not exist/,
      );
      assert.ok(!existsSync(r('h')));
      // A copy inside the root is what a link through the symlink gets.
      mkdirSync(r(base.slice(1)), { recursive: true });
      writeFileSync(r(base.slice(1), 'secret'), 'container file');
      await applyLayer(root, layer([{ path: 'h', type: 'hardlink', linkname: 'up/secret' }]));
      assert.equal(readFileSync(r('h'), 'utf8'), 'container file');
      assert.equal(statSync(path.join(base, 'secret')).nlink, 1);
      // A link to a symlink is a second symlink, not a link to what it points at.
      await applyLayer(root, layer([{ path: 'h2', type: 'hardlink', linkname: 'up' }]));
      assert.equal(readlinkSync(r('h2')), base);
      await rejectsCode(
        applyLayer(root, layer([{ path: 'h3', type: 'hardlink', linkname: base.slice(1) }])),
        'E_IMAGE_BAD_LAYER',
        /is a directory/,
      );
    } finally {
      rmSync(path.join(base, 'secret'));
    }
    assertOutsideUntouched();
  });

  test('unpacks gzip and zstd layers from openLayerStream', async () => {
    const tar = tarBuffer([
      { path: 'etc/os-release', type: 'file', data: 'ID=test\n' },
      { path: 'data', type: 'file', data: randomBytes(500_000) },
    ]);
    const z = spawnSync('zstd', ['-q', '-c'], { input: tar }).stdout;
    for (const [mt, blob] of [
      ['application/vnd.oci.image.layer.v1.tar+gzip', gzipSync(tar)],
      ['application/vnd.oci.image.layer.v1.tar+zstd', z],
    ] as const) {
      rmSync(root, { recursive: true });
      mkdirSync(root);
      const stats = await applyLayer(root, openLayerStream(mt, chunked(blob, 16_384)));
      assert.equal(readFileSync(r('etc/os-release'), 'utf8'), 'ID=test\n', mt);
      assert.equal(stats.bytes, 8 + 500_000);
    }
  });

  test('a damaged layer is E_IMAGE_BAD_LAYER; a missing root is E_STORE_IO', async () => {
    const tar = tarBuffer([{ path: 'f', type: 'file', data: randomBytes(10_000) }]);
    await rejectsCode(applyLayer(root, chunked(tar.subarray(0, 5000), 1000)), 'E_IMAGE_BAD_LAYER');
    await rejectsCode(
      applyLayer(path.join(base, 'nope'), chunked(tar, 1000)),
      'E_STORE_IO',
      /nope/,
    );
  });

  test('entry names and symlink targets are checked lexically', () => {
    assert.deepEqual(splitEntryName('./a//b/./c/'), ['a', 'b', 'c']);
    assert.deepEqual(splitEntryName('a/../b'), ['b']);
    assert.deepEqual(splitEntryName('./'), []);
    assert.throws(() => splitEntryName('a/../../b'), /climbs/);
    assert.throws(() => splitEntryName('/a'), /absolute/);
    assert.equal(symlinkEscapes(1, '../etc'), false);
    assert.equal(symlinkEscapes(1, '../../etc'), true);
    assert.equal(symlinkEscapes(0, 'a/../../b'), true);
    assert.equal(symlinkEscapes(0, '/../../..'), false);
  });
});
