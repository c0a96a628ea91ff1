import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import zlib from 'node:zlib';
import { IsolaError } from '../../errors.js';
import { readZip, tableCrc32, zipEntries } from './zip.js';

interface PyEntry {
  name: string;
  data?: Buffer | string;
  method?: 'stored' | 'deflate' | 'bzip2';
  /** Unix st_mode, stored in the high half of the external attributes. */
  mode?: number;
  /** ZipInfo.create_system: 3 Unix (Python's default here), 0 MS-DOS. */
  system?: number;
}

// Archives come from Python's zipfile, an independent implementation, so the reader is tested
// against what real tools write rather than against our own idea of the format.
const PY_ZIP = `
import base64, io, json, sys, zipfile
spec = json.load(sys.stdin)
methods = {'stored': zipfile.ZIP_STORED, 'deflate': zipfile.ZIP_DEFLATED, 'bzip2': zipfile.ZIP_BZIP2}
out = io.BytesIO()
with zipfile.ZipFile(out, 'w') as z:
    for e in spec['entries']:
        info = zipfile.ZipInfo(e['name'], date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = methods[e.get('method', 'deflate')]
        if 'mode' in e:
            info.external_attr = e['mode'] << 16
        if 'system' in e:
            info.create_system = e['system']
        z.writestr(info, base64.b64decode(e['data']))
    z.comment = base64.b64decode(spec['comment'])
sys.stdout.buffer.write(out.getvalue())
`;

function pyZip(entries: PyEntry[], comment: Buffer | string = ''): Buffer {
  const spec = {
    entries: entries.map((e) => ({ ...e, data: Buffer.from(e.data ?? '').toString('base64') })),
    comment: Buffer.from(comment).toString('base64'),
  };
  return execFileSync('python3', ['-W', 'ignore', '-c', PY_ZIP], {
    input: JSON.stringify(spec),
    maxBuffer: 64 * 1024 * 1024,
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

/** Offsets of the central directory entries of an archive without a comment. */
function centralOffsets(zip: Buffer): number[] {
  const eocd = zip.length - 22;
  const out: number[] = [];
  let p = zip.readUInt32LE(eocd + 16);
  for (let i = 0; i < zip.readUInt16LE(eocd + 10); i++) {
    out.push(p);
    p += 46 + zip.readUInt16LE(p + 28) + zip.readUInt16LE(p + 30) + zip.readUInt16LE(p + 32);
  }
  return out;
}

describe('readZip', () => {
  test('reads stored and deflated files, directories and Unix modes', () => {
    const big = randomBytes(300 * 1024);
    const text = 'export default async () => "hi";\n'.repeat(500);
    const zip = pyZip([
      { name: 'lib/', method: 'stored', mode: 0o040755 },
      { name: 'lib/big.bin', data: big, method: 'stored', mode: 0o100644 },
      { name: 'lib/text.js', data: text, mode: 0o100600 },
      { name: 'bin/run', data: '#!/bin/sh\n', mode: 0o104755 },
      { name: 'empty.txt', data: '' },
      { name: 'ünïcode.js', data: 'x' },
    ]);
    const entries = readZip(zip);
    assert.deepEqual(
      entries.map((e) => [e.name, e.type, e.mode.toString(8)]),
      [
        ['lib/', 'dir', '755'],
        ['lib/big.bin', 'file', '644'],
        ['lib/text.js', 'file', '600'],
        ['bin/run', 'file', '4755'],
        // Python gives entries without a mode 0600.
        ['empty.txt', 'file', '600'],
        ['ünïcode.js', 'file', '600'],
      ],
    );
    assert.ok(entries[1]!.data.equals(big));
    assert.equal(entries[2]!.data.toString(), text);
    assert.ok(zip.length < big.length + text.length / 10, 'the text entry was really deflated');
    assert.equal(entries[4]!.data.length, 0);
  });

  test('reads archives written as a stream, with data descriptors', () => {
    // On a pipe zipfile cannot seek back to fill in sizes, so it sets flag bit 3 and writes
    // them after the data, leaving zeros in the local headers, as streaming zippers do.
    const script = `
import sys, zipfile
with zipfile.ZipFile(sys.stdout.buffer, 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr('package.json', '{"name": "streamed"}')
    z.writestr('index.js', 'exports.handler = async () => 1;\\n' * 50)
`;
    const zip = execFileSync('python3', ['-c', script]);
    assert.equal(zip.readUInt16LE(6) & 0x08, 0x08, 'the archive really uses data descriptors');
    assert.equal(zip.readUInt32LE(22), 0, 'the local header leaves the size out');
    assert.deepEqual(
      readZip(zip).map((e) => [e.name, e.data.toString()]),
      [
        ['package.json', '{"name": "streamed"}'],
        ['index.js', 'exports.handler = async () => 1;\n'.repeat(50)],
      ],
    );
  });

  test('computes CRC-32 without zlib.crc32 too', () => {
    assert.equal(tableCrc32(Buffer.from('123456789')), 0xcbf43926);
    assert.equal(tableCrc32(Buffer.alloc(0)), 0);
    const data = randomBytes(100_000);
    const native = (zlib as Partial<typeof zlib>).crc32;
    if (native) assert.equal(tableCrc32(data), native(data) >>> 0);
  });

  test('uses default modes when the creator is not Unix', () => {
    const zip = pyZip([
      { name: 'a.js', data: 'a', system: 0, mode: 0o100700 },
      { name: 'd/', method: 'stored', system: 0 },
    ]);
    assert.deepEqual(
      readZip(zip).map((e) => [e.name, e.type, e.mode.toString(8)]),
      [
        ['a.js', 'file', '644'],
        ['d/', 'dir', '755'],
      ],
    );
  });

  test('reads an empty archive', () => {
    const zip = pyZip([]);
    assert.equal(zip.readUInt32LE(0), 0x06054b50);
    assert.deepEqual(readZip(zip), []);
  });

  test('finds the end record behind a comment, even one holding its signature', () => {
    const fake = Buffer.concat([Buffer.from('PK\x05\x06'), Buffer.alloc(30, 0x41)]);
    for (const comment of ['built by hand', fake]) {
      const zip = pyZip([{ name: 'a.js', data: 'a' }], comment);
      assert.deepEqual(
        readZip(zip).map((e) => e.name),
        ['a.js'],
      );
    }
  });

  test('refuses an entry whose CRC-32 does not match', () => {
    const zip = pyZip([{ name: 'a.js', data: 'hello world', method: 'stored' }]);
    const at = zip.indexOf('hello world');
    zip[at] = zip[at]! ^ 0x01;
    throwsCode(() => readZip(zip), 'E_BAD_BUNDLE', /"a\.js" fails its CRC-32 check/);
  });

  test('refuses damaged deflate data', () => {
    const zip = pyZip([{ name: 'a.js', data: 'abc'.repeat(1000) }]);
    const dataStart = 30 + 'a.js'.length;
    for (let i = 0; i < 8; i++) zip[dataStart + i] = 0xff;
    throwsCode(() => readZip(zip), 'E_BAD_BUNDLE', /"a\.js"/);
  });

  test('refuses every truncation of an archive with E_BAD_BUNDLE', () => {
    const zip = pyZip([
      { name: 'package.json', data: '{"name":"x"}' },
      { name: 'index.js', data: 'module.exports.handler = async () => 1;\n', method: 'stored' },
    ]);
    for (let len = 0; len < zip.length; len++)
      throwsCode(() => readZip(zip.subarray(0, len)), 'E_BAD_BUNDLE');
  });

  test('refuses symbolic links, devices and fifos', () => {
    throwsCode(
      () => readZip(pyZip([{ name: 'link', data: '/etc/passwd', mode: 0o120777 }])),
      'E_BAD_BUNDLE',
      /"link" is a symbolic link/,
    );
    for (const mode of [0o020644, 0o060644, 0o010644, 0o140644])
      throwsCode(
        () => readZip(pyZip([{ name: 'dev', mode }])),
        'E_BAD_BUNDLE',
        /device, fifo or socket/,
      );
  });

  test('refuses compression methods other than stored and deflate', () => {
    throwsCode(
      () => readZip(pyZip([{ name: 'a.js', data: 'a', method: 'bzip2' }])),
      'E_BAD_BUNDLE',
      /compression method 12 \(bzip2\); only stored and deflate/,
    );
  });

  test('refuses encrypted entries', () => {
    const zip = pyZip([{ name: 'a.js', data: 'a' }]);
    zip.writeUInt16LE(zip.readUInt16LE(6) | 1, 6);
    const cen = centralOffsets(zip)[0]!;
    zip.writeUInt16LE(zip.readUInt16LE(cen + 8) | 1, cen + 8);
    throwsCode(() => readZip(zip), 'E_BAD_BUNDLE', /"a\.js" is encrypted/);
  });

  test('refuses ZIP64 archives and entries', () => {
    const entry = pyZip([{ name: 'a.js', data: 'a' }]);
    entry.writeUInt32LE(0xffffffff, centralOffsets(entry)[0]! + 24);
    throwsCode(() => readZip(entry), 'E_BAD_BUNDLE', /"a\.js" uses ZIP64/);
    const count = pyZip([{ name: 'a.js', data: 'a' }]);
    count.writeUInt16LE(0xffff, count.length - 22 + 8);
    count.writeUInt16LE(0xffff, count.length - 22 + 10);
    throwsCode(() => readZip(count), 'E_BAD_BUNDLE', /archive uses ZIP64/);
  });

  test('refuses archives split over several disks', () => {
    const zip = pyZip([{ name: 'a.js', data: 'a' }]);
    zip.writeUInt16LE(1, zip.length - 22 + 4);
    throwsCode(() => readZip(zip), 'E_BAD_BUNDLE', /several disks/);
  });

  test('refuses names that are not UTF-8', () => {
    const zip = pyZip([{ name: 'a.js', data: 'a' }]);
    zip[30] = 0xff;
    zip[centralOffsets(zip)[0]! + 46] = 0xff;
    throwsCode(() => readZip(zip), 'E_BAD_BUNDLE', /not UTF-8/);
  });

  test('refuses a local header that disagrees with the central directory', () => {
    const zip = pyZip([{ name: 'a.js', data: 'a' }]);
    zip[30] = 'b'.charCodeAt(0);
    throwsCode(() => readZip(zip), 'E_BAD_BUNDLE', /names a different file/);
  });

  test('refuses entries that share their data (overlapping-file bombs)', () => {
    const zip = pyZip([
      { name: 'a.js', data: 'one' },
      { name: 'a.js', data: 'two' },
    ]);
    const [first, second] = centralOffsets(zip);
    zip.writeUInt32LE(zip.readUInt32LE(first! + 42), second! + 42);
    throwsCode(() => readZip(zip), 'E_BAD_BUNDLE', /overlap/);
  });

  test('does not inflate past the declared size', () => {
    const zip = pyZip([{ name: 'a.js', data: 'x'.repeat(100_000) }]);
    zip.writeUInt32LE(1000, centralOffsets(zip)[0]! + 24);
    throwsCode(() => readZip(zip), 'E_BAD_BUNDLE', /inflates to more than its declared 1000 bytes/);
  });

  test('applies the limits before inflating anything', () => {
    const zip = pyZip([
      { name: 'a.js', data: 'a'.repeat(600) },
      { name: 'b.js', data: 'b'.repeat(600) },
      { name: 'c.js', data: 'c' },
    ]);
    throwsCode(() => zipEntries(zip, { maxEntries: 2 }), 'E_PAYLOAD_TOO_LARGE', /3 entries/);
    throwsCode(() => zipEntries(zip, { maxUnpackedBytes: 1000 }), 'E_PAYLOAD_TOO_LARGE');
    assert.equal(readZip(zip, { maxEntries: 3, maxUnpackedBytes: 1201 }).length, 3);
  });

  test('inflates each entry only when the iteration reaches it', () => {
    const zip = pyZip([
      { name: 'good.js', data: 'good', method: 'stored' },
      { name: 'bad.js', data: 'damaged', method: 'stored' },
    ]);
    const at = zip.indexOf('damaged');
    zip[at] = zip[at]! ^ 0x01;
    const it = zipEntries(zip);
    assert.equal(it.next().value?.name, 'good.js');
    throwsCode(() => it.next(), 'E_BAD_BUNDLE', /"bad\.js" fails its CRC-32 check/);
  });

  test('refuses what is not a zip at all', () => {
    throwsCode(() => readZip(Buffer.alloc(0)), 'E_BAD_BUNDLE', /too short/);
    throwsCode(() => readZip(randomBytes(4096)), 'E_BAD_BUNDLE');
  });
});
