import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { IsolaError } from '../../errors.js';
import { readTar } from '../../image/tar-read.js';
import { type TarEntryInput, tarBuffer } from '../../image/tar-write.js';
import {
  BUNDLE_LIMITS,
  bundleDigest,
  copyBundleDir,
  detectBundleFormat,
  extractBundle,
  packDirectory,
  prepareBundle,
  validateBundle,
} from './bundle.js';

const PKG = JSON.stringify({ name: 'fn', version: '1.0.0' });
const HANDLER = 'export default async (event) => event;\n';

const base = mkdtempSync(path.join(os.tmpdir(), 'isola-bundle-'));
after(() => rmSync(base, { recursive: true, force: true }));
let counter = 0;
/** A path under the test root that does not exist yet. */
function fresh(label = 'd'): string {
  return path.join(base, `${label}-${++counter}`);
}

/** Writes a directory from a map of relative path -> content (or mode + content). */
function makeDir(files: Record<string, string | { data: string; mode: number }>): string {
  const dir = fresh('src');
  mkdirSync(dir);
  for (const [rel, v] of Object.entries(files)) {
    const abs = path.join(dir, rel);
    mkdirSync(path.dirname(abs), { recursive: true });
    const { data, mode } = typeof v === 'string' ? { data: v, mode: 0o644 } : v;
    writeFileSync(abs, data);
    chmodSync(abs, mode);
  }
  return dir;
}

/** Every path of a tree with its type, mode and content: what a bundle "is". */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    for (const name of readdirSync(d).sort()) {
      const abs = path.join(d, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(abs);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        out.push(`${r}/ ${mode}`);
        walk(abs, r);
      } else if (st.isFile()) out.push(`${r} ${mode} ${JSON.stringify(readFileSync(abs, 'utf8'))}`);
      else out.push(`${r} OTHER`);
    }
  };
  walk(dir, '');
  return out;
}

interface PyEntry {
  name: string;
  data?: string;
  mode?: number;
}

const PY_ZIP = `
import base64, io, json, os, sys, zipfile
spec = json.load(sys.stdin)
out = io.BytesIO()
with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as z:
    if 'dir' in spec:
        # What "zip -r" does: every directory, then its files, following the file system.
        src, prefix = spec['dir'], spec['prefix']
        for root, dirs, files in os.walk(src):
            dirs.sort()
            if '.git' in dirs:
                dirs.remove('.git')
            rel = os.path.relpath(root, src)
            arc = prefix + ('' if rel == '.' else rel + '/')
            if arc:
                z.write(root, arc)
            for f in sorted(files):
                z.write(os.path.join(root, f), arc + f)
    for e in spec.get('entries', []):
        info = zipfile.ZipInfo(e['name'], date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        if 'mode' in e:
            info.external_attr = e['mode'] << 16
        z.writestr(info, base64.b64decode(e['data']))
sys.stdout.buffer.write(out.getvalue())
`;

function runPy(spec: object): Buffer {
  return execFileSync('python3', ['-W', 'ignore', '-c', PY_ZIP], {
    input: JSON.stringify(spec),
    maxBuffer: 64 * 1024 * 1024,
  });
}

function pyZip(entries: PyEntry[]): Buffer {
  return runPy({
    entries: entries.map((e) => ({ ...e, data: Buffer.from(e.data ?? '').toString('base64') })),
  });
}

/** A zip of a directory as Python's zipfile (like `zip -r`) makes it, optionally under a folder. */
function zipDir(dir: string, prefix = ''): Buffer {
  return runPy({ dir, prefix });
}

async function rejectsCode(p: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof IsolaError, `not an IsolaError: ${err}`);
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

function throwsCode(fn: () => unknown, code: string, pattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof IsolaError, `not an IsolaError: ${err}`);
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

const basic: TarEntryInput[] = [
  { path: 'package.json', type: 'file', data: PKG },
  { path: 'index.js', type: 'file', data: HANDLER },
];

describe('detectBundleFormat', () => {
  test('tells zip, tar and tar.gz apart by their magic bytes', () => {
    const tar = tarBuffer(basic);
    assert.equal(detectBundleFormat(tar), 'tar');
    assert.equal(detectBundleFormat(gzipSync(tar)), 'tar.gz');
    assert.equal(detectBundleFormat(pyZip([{ name: 'a', data: 'a' }])), 'zip');
    assert.equal(detectBundleFormat(pyZip([])), 'zip');
  });

  test('refuses anything else', () => {
    for (const buf of [
      Buffer.alloc(0),
      Buffer.from('PK'),
      Buffer.from('PK\x01\x02xxxxxxxx'),
      Buffer.from('{"name":"not an archive"}'),
      Buffer.alloc(1024),
    ])
      throwsCode(() => detectBundleFormat(buf), 'E_BAD_BUNDLE', /not a zip, tar or tar\.gz/);
  });
});

describe('extractBundle', () => {
  const rich: TarEntryInput[] = [
    { path: './', type: 'dir', mode: 0o755 },
    { path: './package.json', type: 'file', data: PKG, mode: 0o600, uid: 1000, mtime: 12345 },
    { path: 'index.js', type: 'file', data: HANDLER, mode: 0o644 },
    { path: 'lib/', type: 'dir', mode: 0o700 },
    { path: 'lib/tool', type: 'file', data: '#!/bin/sh\n', mode: 0o4755 },
    { path: 'lib/user-exec.sh', type: 'file', data: 'x', mode: 0o744 },
    { path: 'deep/er/file.txt', type: 'file', data: 'implicit parents', mode: 0o666 },
    { path: 'sticky/', type: 'dir', mode: 0o1777 },
  ];
  const richTree = [
    'deep/ 755',
    'deep/er/ 755',
    'deep/er/file.txt 644 "implicit parents"',
    `index.js 644 ${JSON.stringify(HANDLER)}`,
    'lib/ 755',
    'lib/tool 755 "#!/bin/sh\\n"',
    'lib/user-exec.sh 755 "x"',
    `package.json 644 ${JSON.stringify(PKG)}`,
    'sticky/ 755',
  ];

  test('unpacks a tar: files, directories, implicit parents, normalised modes', async () => {
    const dest = fresh();
    const stats = await extractBundle(tarBuffer(rich), dest);
    assert.deepEqual(tree(dest), richTree);
    assert.deepEqual(stats, {
      files: 5,
      bytes: PKG.length + HANDLER.length + '#!/bin/sh\n'.length + 1 + 'implicit parents'.length,
    });
  });

  test('unpacks a tar.gz and a zip to the same tree', async () => {
    const gz = fresh();
    await extractBundle(gzipSync(tarBuffer(rich)), gz);
    assert.deepEqual(tree(gz), richTree);
    const zip = pyZip(
      rich.map((e) => ({
        name: e.path,
        data: typeof e.data === 'string' ? e.data : '',
        mode: (e.type === 'dir' ? 0o040000 : 0o100000) | (e.mode ?? 0o644),
      })),
    );
    const z = fresh();
    await extractBundle(zip, z);
    assert.deepEqual(tree(z), richTree);
  });

  test('refuses names that are absolute, contain ".." or use backslashes', async () => {
    const outside = path.join(base, 'evil.js');
    for (const name of [
      '../evil.js',
      'a/../../evil.js',
      'a/../b.js',
      '..',
      `${base}/evil.js`,
      '/evil.js',
      '..\\evil.js',
    ]) {
      const entries: TarEntryInput[] = [...basic, { path: name, type: 'file', data: 'pwned' }];
      for (const archive of [
        tarBuffer(entries),
        gzipSync(tarBuffer(entries)),
        pyZip(entries.map((e) => ({ name: e.path, data: String(e.data) }))),
      ])
        await rejectsCode(
          extractBundle(archive, fresh()),
          'E_BAD_BUNDLE',
          /absolute|"\.\."|backslash/,
        );
      assert.equal(existsSync(outside), false, `${name} wrote outside`);
    }
  });

  test('refuses symbolic links, hard links, devices and fifos', async () => {
    const hostile: [TarEntryInput, RegExp][] = [
      [{ path: 'etc', type: 'symlink', linkname: '/etc' }, /symbolic link/],
      [{ path: 'lib.js', type: 'symlink', linkname: 'index.js' }, /symbolic link/],
      [{ path: 'hard.js', type: 'hardlink', linkname: 'index.js' }, /hard link/],
      [{ path: 'null', type: 'char', devmajor: 1, devminor: 3 }, /device or fifo/],
      [{ path: 'sda', type: 'block', devmajor: 8, devminor: 0 }, /device or fifo/],
      [{ path: 'pipe', type: 'fifo' }, /device or fifo/],
    ];
    for (const [entry, pattern] of hostile)
      await rejectsCode(
        extractBundle(tarBuffer([...basic, entry]), fresh()),
        'E_BAD_BUNDLE',
        pattern,
      );
    const zip = pyZip([
      { name: 'package.json', data: PKG },
      { name: 'etc', data: '/etc', mode: 0o120777 },
    ]);
    await rejectsCode(extractBundle(zip, fresh()), 'E_BAD_BUNDLE', /symbolic link/);
  });

  test('stops at the entry limit, before writing the rest', async () => {
    const many: TarEntryInput[] = [...basic];
    for (let i = 0; i < 50; i++) many.push({ path: `f${i}.js`, type: 'file', data: 'x' });
    const dest = fresh();
    await rejectsCode(
      extractBundle(tarBuffer(many), dest, { maxEntries: 5 }),
      'E_PAYLOAD_TOO_LARGE',
      /more than 5 files and directories/,
    );
    assert.equal(readdirSync(dest).length, 5);
    const gz = fresh();
    await rejectsCode(
      extractBundle(gzipSync(tarBuffer(many)), gz, { maxEntries: 5 }),
      'E_PAYLOAD_TOO_LARGE',
    );
    assert.equal(readdirSync(gz).length, 5);
    // A zip says how many entries it has up front, so nothing is written at all.
    const zip = pyZip(many.map((e) => ({ name: e.path, data: String(e.data) })));
    const z = fresh();
    await rejectsCode(extractBundle(zip, z, { maxEntries: 5 }), 'E_PAYLOAD_TOO_LARGE');
    assert.deepEqual(readdirSync(z), []);
  });

  test('refuses content over the unpacked limit before writing it', async () => {
    const entries: TarEntryInput[] = [
      ...basic,
      { path: 'big.bin', type: 'file', data: Buffer.alloc(10_000) },
    ];
    const dest = fresh();
    await rejectsCode(
      extractBundle(tarBuffer(entries), dest, { maxUnpackedBytes: 5000 }),
      'E_PAYLOAD_TOO_LARGE',
      /more than 5000 bytes \(at "big\.bin"\)/,
    );
    assert.deepEqual(readdirSync(dest).sort(), ['index.js', 'package.json']);
    const zip = pyZip(entries.map((e) => ({ name: e.path, data: String(e.data) })));
    await rejectsCode(
      extractBundle(zip, fresh(), { maxUnpackedBytes: 5000 }),
      'E_PAYLOAD_TOO_LARGE',
    );
    // A gzip bomb: 64 MiB of zeros is 64 KiB compressed; the tar header's size stops it.
    const bomb = gzipSync(
      tarBuffer([...basic, { path: 'zeros', type: 'file', data: Buffer.alloc(64 * 1024 * 1024) }]),
    );
    assert.ok(bomb.length < 1024 * 1024);
    const b = fresh();
    await rejectsCode(
      extractBundle(bomb, b, { maxUnpackedBytes: 1024 * 1024 }),
      'E_PAYLOAD_TOO_LARGE',
    );
    assert.equal(existsSync(path.join(b, 'zeros')), false);
  });

  test('refuses an archive over the upload limit', async () => {
    const tar = tarBuffer(basic);
    await rejectsCode(
      extractBundle(tar, fresh(), { maxArchiveBytes: tar.length - 1 }),
      'E_PAYLOAD_TOO_LARGE',
      /limit is/,
    );
    assert.ok(BUNDLE_LIMITS.maxArchiveBytes === 50 * 1024 * 1024);
  });

  test('refuses paths over the length limit and over-long components', async () => {
    const long: TarEntryInput = { path: `lib/${'a'.repeat(40)}.js`, type: 'file', data: 'x' };
    await rejectsCode(
      extractBundle(tarBuffer([...basic, long]), fresh(), { maxPathBytes: 32 }),
      'E_BAD_BUNDLE',
      /path over 32 bytes/,
    );
    const component: TarEntryInput = { path: `${'b'.repeat(256)}.js`, type: 'file', data: 'x' };
    await rejectsCode(
      extractBundle(tarBuffer([...basic, component]), fresh()),
      'E_BAD_BUNDLE',
      /component over 255 bytes/,
    );
  });

  test('strips a single top-level directory that holds package.json', async () => {
    const tar = tarBuffer([
      { path: 'app/', type: 'dir' },
      { path: 'app/package.json', type: 'file', data: PKG },
      { path: 'app/index.js', type: 'file', data: HANDLER },
      { path: 'app/app/nested.js', type: 'file', data: 'same name as the folder' },
    ]);
    const dest = fresh();
    await extractBundle(tar, dest);
    assert.deepEqual(readdirSync(dest).sort(), ['app', 'index.js', 'package.json']);
    assert.equal(readFileSync(path.join(dest, 'app/nested.js'), 'utf8'), 'same name as the folder');
    // GitHub's "Download ZIP", and a Finder zip with its __MACOSX folder beside the top folder.
    const zip = pyZip([
      { name: 'fn-main/', mode: 0o040755 },
      { name: 'fn-main/package.json', data: PKG },
      { name: 'fn-main/index.js', data: HANDLER },
      { name: '__MACOSX/fn-main/._index.js', data: 'resource fork' },
    ]);
    const z = fresh();
    await extractBundle(zip, z);
    assert.deepEqual(readdirSync(z).sort(), ['index.js', 'package.json']);
  });

  test('does not strip when the root has package.json, or the folder does not, or there are two', async () => {
    const cases: [TarEntryInput[], string[]][] = [
      [
        [
          { path: 'package.json', type: 'file', data: PKG },
          { path: 'app/package.json', type: 'file', data: PKG },
        ],
        ['app', 'package.json'],
      ],
      [[{ path: 'app/index.js', type: 'file', data: HANDLER }], ['app']],
      [
        [
          { path: 'a/package.json', type: 'file', data: PKG },
          { path: 'b/package.json', type: 'file', data: PKG },
        ],
        ['a', 'b'],
      ],
    ];
    for (const [entries, top] of cases) {
      const dest = fresh();
      await extractBundle(tarBuffer(entries), dest);
      assert.deepEqual(readdirSync(dest).sort(), top);
    }
  });

  test('refuses duplicate entries and a name that is both a file and a directory', async () => {
    await rejectsCode(
      extractBundle(
        tarBuffer([...basic, { path: './index.js', type: 'file', data: 'again' }]),
        fresh(),
      ),
      'E_BAD_BUNDLE',
      /"index\.js" appears more than once/,
    );
    await rejectsCode(
      extractBundle(
        tarBuffer([...basic, { path: 'index.js/x', type: 'file', data: 'x' }]),
        fresh(),
      ),
      'E_BAD_BUNDLE',
      /both a file and a directory/,
    );
    await rejectsCode(
      extractBundle(
        tarBuffer([
          { path: 'lib/', type: 'dir' },
          { path: 'lib', type: 'file', data: 'x' },
        ]),
        fresh(),
      ),
      'E_BAD_BUNDLE',
      /appears more than once/,
    );
  });

  test('leaves .git out', async () => {
    const dest = fresh();
    const stats = await extractBundle(
      tarBuffer([
        ...basic,
        { path: '.git/config', type: 'file', data: '[core]' },
        { path: 'vendor/dep/.git/HEAD', type: 'file', data: 'ref' },
        { path: 'vendor/dep/index.js', type: 'file', data: 'x' },
      ]),
      dest,
    );
    assert.deepEqual(
      tree(dest).map((l) => l.split(' ')[0]),
      ['index.js', 'package.json', 'vendor/', 'vendor/dep/', 'vendor/dep/index.js'],
    );
    assert.equal(stats.files, 3);
  });

  test('reports damaged archives as E_BAD_BUNDLE', async () => {
    const tar = tarBuffer(basic);
    const gz = gzipSync(tar);
    await rejectsCode(
      extractBundle(gz.subarray(0, gz.length >> 1), fresh()),
      'E_BAD_BUNDLE',
      /tar\.gz archive is damaged/,
    );
    const badSum = Buffer.from(tar);
    badSum[0] = 'X'.charCodeAt(0);
    await rejectsCode(extractBundle(badSum, fresh()), 'E_BAD_BUNDLE', /checksum/);
    await rejectsCode(
      extractBundle(tar.subarray(0, 700), fresh()),
      'E_BAD_BUNDLE',
      /tar archive is damaged/,
    );
    await rejectsCode(
      extractBundle(gzipSync(Buffer.from('not a tar at all'.repeat(100))), fresh()),
      'E_BAD_BUNDLE',
    );
    const zip = pyZip([{ name: 'package.json', data: PKG }]);
    await rejectsCode(extractBundle(zip.subarray(0, zip.length - 5), fresh()), 'E_BAD_BUNDLE');
  });

  test('refuses a destination that is not empty', async () => {
    const dest = makeDir({ 'keep.txt': 'mine' });
    await rejectsCode(extractBundle(tarBuffer(basic), dest), 'E_INTERNAL', /not empty/);
    assert.deepEqual(readdirSync(dest), ['keep.txt']);
  });
});

describe('copyBundleDir', () => {
  test('copies files and directories with normalised modes, leaving .git out', async () => {
    const src = makeDir({
      'package.json': { data: PKG, mode: 0o600 },
      'index.js': HANDLER,
      'bin/run': { data: 'run', mode: 0o4750 },
      '.git/HEAD': 'ref',
      'sub/.git': 'gitdir: ../.git/modules/sub',
      'sub/a.js': 'a',
    });
    mkdirSync(path.join(src, 'empty'), { mode: 0o700 });
    const dest = fresh();
    const stats = await copyBundleDir(src, dest);
    assert.deepEqual(tree(dest), [
      'bin/ 755',
      'bin/run 755 "run"',
      'empty/ 755',
      `index.js 644 ${JSON.stringify(HANDLER)}`,
      `package.json 644 ${JSON.stringify(PKG)}`,
      'sub/ 755',
      'sub/a.js 644 "a"',
    ]);
    assert.deepEqual(stats, { files: 4, bytes: PKG.length + HANDLER.length + 3 + 1 });
  });

  test('copies what symlinks inside the tree point to as plain files and directories', async () => {
    const src = makeDir({
      'package.json': PKG,
      'node_modules/.pnpm/dep@1/index.js': 'dep',
      'node_modules/dep-pkg/bin.js': { data: 'bin', mode: 0o755 },
    });
    symlinkSync('.pnpm/dep@1', path.join(src, 'node_modules/dep'));
    mkdirSync(path.join(src, 'node_modules/.bin'));
    symlinkSync('../dep-pkg/bin.js', path.join(src, 'node_modules/.bin/dep'));
    symlinkSync(path.join(src, 'package.json'), path.join(src, 'abs-link.json'));
    const dest = fresh();
    await copyBundleDir(src, dest);
    assert.deepEqual(
      tree(dest).filter((l) => !l.includes('OTHER')),
      tree(dest),
      'no symlink was copied as a symlink',
    );
    assert.ok(tree(dest).includes('node_modules/dep/ 755'));
    assert.ok(tree(dest).includes('node_modules/dep/index.js 644 "dep"'));
    assert.ok(tree(dest).includes('node_modules/.bin/dep 755 "bin"'));
    assert.ok(tree(dest).includes(`abs-link.json 644 ${JSON.stringify(PKG)}`));
  });

  test('refuses symlinks that leave the tree, dangle or loop', async () => {
    const outsideFile = path.join(base, 'secret.txt');
    writeFileSync(outsideFile, 'secret');
    const cases: [string, string, RegExp][] = [
      ['leak', outsideFile, /"leak" points outside the bundle/],
      ['up', '../secret.txt', /"up" points outside the bundle/],
      ['root', '/', /points outside the bundle/],
      ['gone', 'missing.js', /"gone" in the bundle cannot be resolved/],
      ['lib/self', '..', /"lib\/self" makes a loop/],
    ];
    for (const [name, target, pattern] of cases) {
      const src = makeDir({ 'package.json': PKG, 'lib/a.js': 'a' });
      symlinkSync(target, path.join(src, name));
      const dest = fresh();
      await rejectsCode(copyBundleDir(src, dest), 'E_BAD_BUNDLE', pattern);
    }
    const lstat = lstatSync(outsideFile);
    assert.equal(lstat.isFile(), true);
  });

  test('refuses fifos and other special files', async () => {
    const src = makeDir({ 'package.json': PKG });
    execFileSync('mkfifo', [path.join(src, 'pipe')]);
    await rejectsCode(
      copyBundleDir(src, fresh()),
      'E_BAD_BUNDLE',
      /not a file, directory or symlink/,
    );
  });

  test('applies the limits', async () => {
    const src = makeDir({ 'package.json': PKG, 'a.js': 'a', 'b.js': 'b'.repeat(1000) });
    await rejectsCode(copyBundleDir(src, fresh(), { maxEntries: 2 }), 'E_PAYLOAD_TOO_LARGE');
    await rejectsCode(
      copyBundleDir(src, fresh(), { maxUnpackedBytes: 500 }),
      'E_PAYLOAD_TOO_LARGE',
    );
  });

  test('refuses a source that is not a directory, and a destination inside the source', async () => {
    await rejectsCode(
      copyBundleDir(path.join(base, 'nope'), fresh()),
      'E_BAD_BUNDLE',
      /not a directory/,
    );
    const src = makeDir({ 'package.json': PKG });
    await rejectsCode(copyBundleDir(src, path.join(src, 'out')), 'E_INVALID_ARGUMENT');
  });
});

describe('validateBundle', () => {
  test('refuses a bundle without package.json, or with one that does not parse', () => {
    throwsCode(
      () => validateBundle(makeDir({ 'index.js': HANDLER })),
      'E_BAD_BUNDLE',
      /^bundle has no package\.json$/,
    );
    throwsCode(
      () => validateBundle(makeDir({ 'package.json': '{"name": ', 'index.js': HANDLER })),
      'E_BAD_BUNDLE',
      /^package\.json is not valid JSON: /,
    );
    throwsCode(
      () => validateBundle(makeDir({ 'package.json': '[1, 2]', 'index.js': HANDLER })),
      'E_BAD_BUNDLE',
      /package\.json is not valid JSON: it must hold an object/,
    );
  });

  test('finds the handler: isola.handler, then main, then index.mjs, index.js, index.cjs', () => {
    const pkg = (o: object) => JSON.stringify({ name: 'fn', ...o });
    const all = {
      'index.mjs': 'm',
      'index.js': 'j',
      'index.cjs': 'c',
      'src/h.js': 'h',
      'lib/main.js': 'x',
    };
    const cases: [Record<string, string>, string][] = [
      [
        { ...all, 'package.json': pkg({ isola: { handler: './src/h.js' }, main: 'lib/main.js' }) },
        'src/h.js',
      ],
      [{ ...all, 'package.json': pkg({ main: 'lib/main.js' }) }, 'lib/main.js'],
      [{ ...all, 'package.json': pkg({ main: 'lib/main' }) }, 'lib/main.js'],
      [{ 'lib/index.js': 'i', 'package.json': pkg({ main: './lib' }) }, 'lib/index.js'],
      [{ ...all, 'package.json': pkg({}) }, 'index.mjs'],
      [{ 'index.js': 'j', 'index.cjs': 'c', 'package.json': pkg({}) }, 'index.js'],
      [{ 'index.cjs': 'c', 'package.json': pkg({}) }, 'index.cjs'],
    ];
    for (const [files, handler] of cases) {
      const r = validateBundle(makeDir(files));
      assert.equal(r.handler, handler);
      assert.equal(r.packageJson.name, 'fn');
    }
  });

  test('refuses a bundle whose handler is missing, outside or not a file', () => {
    const hint = /\(set "main" in package\.json or add index\.js\)$/;
    const none = makeDir({ 'package.json': PKG, 'lib/x.js': 'x' });
    throwsCode(
      () => validateBundle(none),
      'E_BAD_BUNDLE',
      /^bundle has no handler: none of index\.mjs, index\.js, index\.cjs exists/,
    );
    throwsCode(() => validateBundle(none), 'E_BAD_BUNDLE', hint);
    const cases: [object, RegExp][] = [
      [{ main: 'missing.js' }, /main "missing\.js" is not a file in the bundle/],
      [{ main: '../x.js' }, /main "\.\.\/x\.js" points outside the bundle/],
      [{ main: 'lib/../../x.js' }, /points outside the bundle/],
      [{ main: '/etc/passwd' }, /is not a relative path/],
      [{ main: 42 }, /"main" in package\.json is not a string/],
      [{ isola: { handler: 'lib' } }, /isola\.handler "lib" is not a file in the bundle/],
      [{ isola: { handler: 'lib/x' } }, /isola\.handler "lib\/x" is not a file/],
      [{ isola: { handler: 7 } }, /isola\.handler in package\.json is not a string/],
    ];
    writeFileSync(path.join(base, 'x.js'), 'outside');
    for (const [pkg, pattern] of cases) {
      const dir = fresh('in');
      mkdirSync(path.join(dir, 'lib'), { recursive: true });
      writeFileSync(path.join(dir, 'lib/x.js'), 'x');
      writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg));
      throwsCode(() => validateBundle(dir), 'E_BAD_BUNDLE', pattern);
      throwsCode(() => validateBundle(dir), 'E_BAD_BUNDLE', hint);
    }
    const linked = makeDir({ 'package.json': JSON.stringify({ main: 'h.js' }) });
    symlinkSync(path.join(base, 'x.js'), path.join(linked, 'h.js'));
    throwsCode(() => validateBundle(linked), 'E_BAD_BUNDLE', /bundle has no handler/);
  });
});

describe('packDirectory and bundleDigest', () => {
  test('packs a directory deterministically: sorted, mtime 0, owner 0, normalised modes, no .git', async () => {
    const dir = makeDir({
      'package.json': PKG,
      'z.js': 'z',
      'b/run.sh': { data: 'run', mode: 0o700 },
      'a.js': { data: 'a', mode: 0o640 },
      '.git/HEAD': 'ref',
    });
    const first = packDirectory(dir);
    utimesSync(path.join(dir, 'z.js'), 1_000_000, 1_000_000);
    assert.ok(packDirectory(dir).equals(first), 'the same tree packs to the same bytes');
    const seen: string[] = [];
    async function* once(): AsyncGenerator<Buffer> {
      yield first;
    }
    for await (const { header } of readTar(once())) {
      assert.equal(header.mtime, 0);
      assert.equal(header.uid, 0);
      assert.equal(header.gid, 0);
      seen.push(`${header.path} ${header.mode.toString(8)}`);
    }
    assert.deepEqual(seen, ['a.js 644', 'b/ 755', 'b/run.sh 755', 'package.json 644', 'z.js 644']);
  });

  test('the digest is the sha256 of the packed tar and follows content and the executable bit', () => {
    const dir = makeDir({ 'package.json': PKG, 'index.js': HANDLER });
    const digest = bundleDigest(dir);
    assert.equal(digest, `sha256:${createHash('sha256').update(packDirectory(dir)).digest('hex')}`);
    chmodSync(path.join(dir, 'index.js'), 0o600);
    assert.equal(bundleDigest(dir), digest, 'read and write bits do not count');
    chmodSync(path.join(dir, 'index.js'), 0o755);
    const exec = bundleDigest(dir);
    assert.notEqual(exec, digest);
    writeFileSync(path.join(dir, 'index.js'), `${HANDLER} `);
    assert.notEqual(bundleDigest(dir), exec);
  });
});

describe('prepareBundle', () => {
  const files = {
    'package.json': JSON.stringify({ name: 'fn', main: 'src/handler.js' }),
    'src/handler.js': HANDLER,
    'src/util.js': 'export const x = 1;\n',
    'bin/tool': { data: '#!/bin/sh\n', mode: 0o755 },
    [`deep/${'n'.repeat(120)}/file.js`]: 'long path',
  };

  test('gives the same digest for a directory, its tar, tar.gz and zip, and a GitHub-style zip', async () => {
    const dir = makeDir(files);
    mkdirSync(path.join(dir, '.git'));
    writeFileSync(path.join(dir, '.git/HEAD'), 'ref');
    const fromDir = await prepareBundle({ kind: 'dir', path: dir }, fresh('out'));
    assert.equal(fromDir.handler, 'src/handler.js');
    assert.match(fromDir.digest, /^sha256:[0-9a-f]{64}$/);
    // The same code as another tool might tar it: other order, owners, times and modes.
    const foreign = tarBuffer([
      { path: `./deep/${'n'.repeat(120)}/file.js`, type: 'file', data: 'long path', mode: 0o600 },
      { path: './src/util.js', type: 'file', data: 'export const x = 1;\n', uid: 501, mtime: 1e9 },
      { path: './src/handler.js', type: 'file', data: HANDLER, mode: 0o664, gid: 20 },
      { path: './bin/tool', type: 'file', data: '#!/bin/sh\n', mode: 0o775 },
      { path: './package.json', type: 'file', data: files['package.json'], mode: 0o444 },
    ]);
    const archives: [string, Buffer][] = [
      ['tar', packDirectory(dir)],
      ['tar.gz', gzipSync(packDirectory(dir))],
      ['zip', zipDir(dir)],
      ['github zip', zipDir(dir, 'fn-main/')],
      ['foreign tar', foreign],
    ];
    for (const [label, data] of archives) {
      const r = await prepareBundle({ kind: 'archive', data }, fresh('out'));
      assert.deepEqual(r, fromDir, label);
    }
  });

  test('refuses a destination that exists, and leaves it alone', async () => {
    const dest = makeDir({ 'keep.txt': 'mine' });
    await rejectsCode(
      prepareBundle({ kind: 'archive', data: tarBuffer(basic) }, dest),
      'E_INTERNAL',
      /already exists/,
    );
    assert.deepEqual(readdirSync(dest), ['keep.txt']);
  });

  test('removes the destination when anything fails', async () => {
    const failing: [Buffer, string][] = [
      [tarBuffer([{ path: 'package.json', type: 'file', data: PKG }]), 'E_BAD_BUNDLE'],
      [tarBuffer([{ path: 'index.js', type: 'file', data: HANDLER }]), 'E_BAD_BUNDLE'],
      [tarBuffer([...basic, { path: '../x.js', type: 'file', data: 'x' }]), 'E_BAD_BUNDLE'],
      [tarBuffer([...basic, { path: 'l', type: 'symlink', linkname: '/' }]), 'E_BAD_BUNDLE'],
      [
        tarBuffer([...basic, { path: 'big', type: 'file', data: Buffer.alloc(5000) }]),
        'E_PAYLOAD_TOO_LARGE',
      ],
      [Buffer.from('garbage'), 'E_BAD_BUNDLE'],
    ];
    for (const [data, code] of failing) {
      const dest = fresh('out');
      await rejectsCode(
        prepareBundle({ kind: 'archive', data }, dest, { maxUnpackedBytes: 4000 }),
        code,
      );
      assert.equal(existsSync(dest), false);
    }
    const missing = fresh('out');
    await rejectsCode(
      prepareBundle({ kind: 'dir', path: path.join(base, 'nope') }, missing),
      'E_BAD_BUNDLE',
    );
    assert.equal(existsSync(missing), false);
  });
});
