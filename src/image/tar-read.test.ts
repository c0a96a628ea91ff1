import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { linkSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { IsolaError } from '../errors.js';
import { type TarHeader, readTar } from './tar-read.js';
import { type TarEntryInput, tarBuffer } from './tar-write.js';

async function* chunked(buf: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

interface Read {
  header: TarHeader;
  data: Buffer;
}

async function readAll(source: AsyncIterable<Buffer>): Promise<Read[]> {
  const out: Read[] = [];
  for await (const e of readTar(source)) {
    const parts: Buffer[] = [];
    for await (const c of e.body) parts.push(Buffer.from(c));
    out.push({ header: e.header, data: Buffer.concat(parts) });
  }
  return out;
}

/** A header block written independently of tar-write, for fields it never produces. */
function block(fields: {
  name: string;
  flag: string;
  size?: number;
  magic?: 'ustar' | 'gnu' | 'v7';
  uid?: Buffer;
  prefix?: string;
  mtime?: number;
}): Buffer {
  const h = Buffer.alloc(512);
  h.write(fields.name, 0, 100, 'utf8');
  h.write('0000644\0', 100, 'ascii');
  if (fields.uid) fields.uid.copy(h, 108);
  else h.write('0000000\0', 108, 'ascii');
  h.write('0000000\0', 116, 'ascii');
  h.write(`${(fields.size ?? 0).toString(8).padStart(11, '0')}\0`, 124, 'ascii');
  h.write(`${(fields.mtime ?? 0).toString(8).padStart(11, '0')}\0`, 136, 'ascii');
  h.write(fields.flag, 156, 'latin1');
  if (fields.magic !== 'v7')
    h.write(fields.magic === 'gnu' ? 'ustar  \0' : 'ustar\x0000', 257, 'latin1');
  if (fields.prefix) h.write(fields.prefix, 345, 155, 'utf8');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return h;
}

function pad(b: Buffer): Buffer {
  const rem = b.length % 512;
  return rem ? Buffer.concat([b, Buffer.alloc(512 - rem)]) : b;
}

function paxBody(records: Record<string, string>): Buffer {
  let out = '';
  for (const [k, v] of Object.entries(records)) {
    const rest = ` ${k}=${v}\n`.length;
    let len = rest + 1;
    while (String(len).length + rest !== len) len = String(len).length + rest;
    out += `${len} ${k}=${v}\n`;
  }
  return Buffer.from(out);
}

async function rejectsBadLayer(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof IsolaError, `not an IsolaError: ${err}`);
    assert.equal(err.code, 'E_IMAGE_BAD_LAYER');
    assert.match(err.message, pattern);
    return true;
  });
}

const longDir = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(60)}`;
const sample: TarEntryInput[] = [
  { path: 'etc/', type: 'dir', mode: 0o755, mtime: 1_700_000_000, uname: 'root', gname: 'root' },
  { path: 'etc/hosts', type: 'file', data: '127.0.0.1 localhost\n', mode: 0o644, uid: 0 },
  { path: `${longDir}/short.txt`, type: 'file', data: 'prefix split' },
  { path: `${'x'.repeat(150)}.txt`, type: 'file', data: 'pax path' },
  { path: 'bin/su', type: 'file', data: Buffer.alloc(1000, 7), mode: 0o4755 },
  { path: 'big-ids', type: 'file', data: 'ids', uid: 3_000_000, gid: 2_097_152 },
  {
    path: 'caps',
    type: 'file',
    data: 'x',
    xattrs: { 'security.capability': Buffer.from([1, 0, 0, 2, 0xff]), 'user.note': 'hi' },
  },
  { path: 'link', type: 'symlink', linkname: `/${'t'.repeat(180)}` },
  { path: 'hard', type: 'hardlink', linkname: 'etc/hosts' },
  { path: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
  { path: 'pipe', type: 'fifo' },
  { path: 'empty', type: 'file', data: '' },
];

describe('readTar', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'isola-tar-read-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  test('reads back what tar-write wrote, whatever the chunking', async () => {
    const archive = tarBuffer(sample);
    for (const size of [1, 7, 511, 512, 4096, archive.length]) {
      const got = await readAll(chunked(archive, size));
      assert.deepEqual(
        got.map((e) => e.header.path),
        sample.map((e) => e.path),
        `chunk size ${size}`,
      );
      const by = new Map(got.map((e) => [e.header.path, e]));
      assert.equal(by.get('etc/')!.header.type, 'dir');
      assert.equal(by.get('etc/')!.header.mtime, 1_700_000_000);
      assert.equal(by.get('etc/')!.header.uname, 'root');
      assert.equal(by.get('etc/hosts')!.data.toString(), '127.0.0.1 localhost\n');
      assert.equal(by.get(`${longDir}/short.txt`)!.data.toString(), 'prefix split');
      assert.equal(by.get(`${'x'.repeat(150)}.txt`)!.data.toString(), 'pax path');
      assert.equal(by.get('bin/su')!.header.mode, 0o4755);
      assert.deepEqual(by.get('bin/su')!.data, Buffer.alloc(1000, 7));
      assert.equal(by.get('big-ids')!.header.uid, 3_000_000);
      assert.equal(by.get('big-ids')!.header.gid, 2_097_152);
      assert.deepEqual(by.get('caps')!.header.xattrs, {
        'security.capability': Buffer.from([1, 0, 0, 2, 0xff]),
        'user.note': Buffer.from('hi'),
      });
      assert.equal(by.get('link')!.header.type, 'symlink');
      assert.equal(by.get('link')!.header.linkname, `/${'t'.repeat(180)}`);
      assert.equal(by.get('hard')!.header.type, 'hardlink');
      assert.equal(by.get('hard')!.header.linkname, 'etc/hosts');
      const dev = by.get('dev/null')!.header;
      assert.deepEqual([dev.type, dev.devmajor, dev.devminor], ['char', 1, 3]);
      assert.equal(by.get('pipe')!.header.type, 'fifo');
      assert.equal(by.get('empty')!.header.size, 0);
    }
  });

  test('reads archives made by GNU tar in gnu, posix, ustar and v7 formats', async () => {
    const src = path.join(tmp, 'src');
    const deep = path.join(src, 'a'.repeat(90), 'b'.repeat(90), 'c'.repeat(90));
    mkdirSync(deep, { recursive: true });
    const longFile = path.join(deep, `${'n'.repeat(120)}.txt`);
    writeFileSync(longFile, 'deep content\n');
    writeFileSync(path.join(src, 'small'), Buffer.alloc(70_000, 0x61));
    symlinkSync(`../${'t'.repeat(120)}`, path.join(src, 'longlink'));
    linkSync(path.join(src, 'small'), path.join(src, 'small-hard'));
    const rel = path.relative(src, longFile);
    for (const format of ['gnu', 'posix'] as const) {
      const r = spawnSync(
        'tar',
        [`--format=${format}`, '-C', src, '--owner=big:3000000', '--group=g:7', '-cf', '-', '.'],
        { maxBuffer: 64 * 1024 * 1024 },
      );
      assert.equal(r.status, 0, r.stderr?.toString());
      const got = await readAll(chunked(r.stdout, 10_000));
      const by = new Map(
        got.map((e) => [e.header.path.replace(/^\.\//, '').replace(/\/$/, ''), e]),
      );
      assert.equal(by.get(rel)?.data.toString(), 'deep content\n', `${format}: long name`);
      assert.equal(by.get(rel)!.header.uid, 3_000_000, `${format}: big uid`);
      assert.equal(by.get(rel)!.header.uname, 'big');
      assert.equal(by.get(rel)!.header.gid, 7);
      assert.equal(by.get('small')!.data.length, 70_000);
      assert.equal(by.get('longlink')!.header.linkname, `../${'t'.repeat(120)}`);
      const hard = got.find((e) => e.header.type === 'hardlink');
      assert.ok(hard, `${format}: hard link entry`);
      assert.deepEqual(
        [hard.header.path, hard.header.linkname].map((p) => p.replace(/^\.\//, '')).sort(),
        ['small', 'small-hard'],
      );
      assert.ok(by.get(path.relative(src, deep))?.header.type === 'dir');
    }
    // ustar splits long names into prefix + name.
    const short = path.join(tmp, 'short');
    mkdirSync(path.join(short, 'p'.repeat(80)), { recursive: true });
    writeFileSync(path.join(short, 'p'.repeat(80), 'q'.repeat(60)), 'split');
    const ustar = spawnSync('tar', ['--format=ustar', '-C', short, '-cf', '-', 'p'.repeat(80)]);
    assert.equal(ustar.status, 0, ustar.stderr?.toString());
    const u = (await readAll(chunked(ustar.stdout, 512))).find((e) => e.header.type === 'file');
    assert.equal(u?.header.path, `${'p'.repeat(80)}/${'q'.repeat(60)}`);
    assert.equal(u?.data.toString(), 'split');
    // v7 has no magic and no directory type: a directory is a name ending in '/'.
    mkdirSync(path.join(short, 'v7'));
    writeFileSync(path.join(short, 'v7', 'f'), 'old');
    const v7 = spawnSync('tar', ['--format=v7', '-C', short, '-cf', '-', 'v7']);
    assert.equal(v7.status, 0, v7.stderr?.toString());
    const old = await readAll(chunked(v7.stdout, 512));
    assert.deepEqual(
      old.map((e) => [e.header.path, e.header.type, e.data.toString()]),
      [
        ['v7/', 'dir', ''],
        ['v7/f', 'file', 'old'],
      ],
    );
  });

  test('GNU long names, base-256 numbers and typeflag 7 from hand-made headers', async () => {
    const longName = `${'L'.repeat(300)}/file`;
    const uid = Buffer.alloc(8);
    uid[0] = 0x80;
    uid.writeUIntBE(5_000_000_000, 2, 6);
    const archive = Buffer.concat([
      block({ name: '././@LongLink', flag: 'L', size: longName.length + 1, magic: 'gnu' }),
      pad(Buffer.from(`${longName}\0`)),
      block({ name: 'truncated', flag: '7', size: 3, magic: 'gnu', uid }),
      pad(Buffer.from('abc')),
      block({ name: 'v7file', flag: '\0', size: 2, magic: 'v7' }),
      pad(Buffer.from('hi')),
      Buffer.alloc(1024),
    ]);
    const got = await readAll(chunked(archive, 100));
    assert.equal(got.length, 2);
    assert.equal(got[0]!.header.path, longName);
    assert.equal(got[0]!.header.type, 'file');
    assert.equal(got[0]!.header.uid, 5_000_000_000);
    assert.equal(got[0]!.data.toString(), 'abc');
    assert.equal(got[1]!.header.path, 'v7file');
    assert.equal(got[1]!.header.type, 'file');
    assert.equal(got[1]!.data.toString(), 'hi');
  });

  test('pax global headers apply to later entries; local ones override them', async () => {
    const global = paxBody({ uname: 'gu', mtime: '1234.5', 'SCHILY.xattr.user.g': 'G' });
    const local = paxBody({ uname: 'lu', path: 'renamed', size: '4' });
    const cancel = paxBody({ uname: '' });
    const archive = Buffer.concat([
      block({ name: 'global', flag: 'g', size: global.length }),
      pad(global),
      block({ name: 'PaxHeaders/a', flag: 'x', size: local.length }),
      pad(local),
      block({ name: 'a', flag: '0', size: 0 }),
      pad(Buffer.from('data')),
      block({ name: 'b', flag: '0' }),
      block({ name: 'global2', flag: 'g', size: cancel.length }),
      pad(cancel),
      block({ name: 'c', flag: '0', mtime: 9 }),
      Buffer.alloc(1024),
    ]);
    const got = await readAll(chunked(archive, 333));
    assert.deepEqual(
      got.map((e) => [e.header.path, e.header.uname, e.header.mtime, e.data.toString()]),
      [
        ['renamed', 'lu', 1234.5, 'data'],
        ['b', 'gu', 1234.5, ''],
        ['c', '', 1234.5, ''],
      ],
    );
    assert.deepEqual(got[1]!.header.xattrs, { 'user.g': Buffer.from('G') });
  });

  test('ustar prefix field joins the name', async () => {
    const archive = Buffer.concat([
      block({ name: 'name.txt', flag: '0', prefix: 'some/prefix' }),
      Buffer.alloc(1024),
    ]);
    const got = await readAll(chunked(archive, 512));
    assert.equal(got[0]!.header.path, 'some/prefix/name.txt');
  });

  test('skips bodies the consumer does not read, or reads only in part', async () => {
    const archive = tarBuffer([
      { path: 'a', type: 'file', data: Buffer.alloc(5000, 1) },
      { path: 'b', type: 'file', data: Buffer.alloc(3000, 2) },
      { path: 'c', type: 'file', data: 'end' },
    ]);
    const seen: string[] = [];
    for await (const e of readTar(chunked(archive, 1000))) {
      seen.push(e.header.path);
      if (e.header.path === 'b') {
        for await (const c of e.body) {
          assert.equal(c[0], 2);
          break;
        }
      }
      if (e.header.path === 'c') {
        const parts: Buffer[] = [];
        for await (const c of e.body) parts.push(c);
        assert.equal(Buffer.concat(parts).toString(), 'end');
      }
    }
    assert.deepEqual(seen, ['a', 'b', 'c']);
  });

  test('a bad header checksum is E_IMAGE_BAD_LAYER', async () => {
    const archive = tarBuffer([{ path: 'a', type: 'file', data: 'x' }]);
    archive[10] = 0x41; // inside the name field
    await rejectsBadLayer(readAll(chunked(archive, 512)), /checksum/);
  });

  test('a truncated archive is E_IMAGE_BAD_LAYER', async () => {
    const archive = tarBuffer([
      { path: 'a', type: 'file', data: Buffer.alloc(2000, 1) },
      { path: 'b', type: 'file', data: 'x' },
    ]);
    await rejectsBadLayer(readAll(chunked(archive.subarray(0, 1500), 512)), /truncated/);
    await rejectsBadLayer(readAll(chunked(archive.subarray(0, 2048 + 512 + 100), 512)), /trunc/);
    // Cut inside the second header.
    await rejectsBadLayer(readAll(chunked(archive.subarray(0, 2560 + 200), 512)), /truncated/);
  });

  test('malformed and oversized pax headers are E_IMAGE_BAD_LAYER', async () => {
    const junk = Buffer.from('99 path=nope\n');
    await rejectsBadLayer(
      readAll(
        chunked(
          Buffer.concat([block({ name: 'p', flag: 'x', size: junk.length }), pad(junk)]),
          512,
        ),
      ),
      /pax/,
    );
    const huge = block({ name: 'p', flag: 'x', size: 64 * 1024 * 1024 });
    await rejectsBadLayer(readAll(chunked(huge, 512)), /exceeds/);
    const nonNum = paxBody({ uid: '12x' });
    await rejectsBadLayer(
      readAll(
        chunked(
          Buffer.concat([
            block({ name: 'p', flag: 'x', size: nonNum.length }),
            pad(nonNum),
            block({ name: 'f', flag: '0' }),
          ]),
          512,
        ),
      ),
      /not a number/,
    );
  });

  test('ends at one zero block, ignores trailing garbage, tolerates a missing end marker', async () => {
    const one = tarBuffer([{ path: 'a', type: 'file', data: 'x' }]);
    const body = one.subarray(0, one.length - 1024);
    for (const archive of [
      Buffer.concat([body, Buffer.alloc(512)]),
      Buffer.concat([body, Buffer.alloc(1024), Buffer.from('garbage after the end'.repeat(50))]),
      body,
      Buffer.alloc(0),
    ]) {
      const got = await readAll(chunked(archive, 512));
      assert.deepEqual(
        got.map((e) => e.header.path),
        archive.length ? ['a'] : [],
      );
    }
  });

  test('hands the source back (return) when the consumer stops early', async () => {
    const archive = tarBuffer([
      { path: 'a', type: 'file', data: 'x' },
      { path: 'b', type: 'file', data: 'y' },
    ]);
    let closed = false;
    async function* source(): AsyncGenerator<Buffer> {
      try {
        yield* chunked(archive, 512);
      } finally {
        closed = true;
      }
    }
    for await (const e of readTar(source())) {
      assert.equal(e.header.path, 'a');
      break;
    }
    assert.equal(closed, true);
  });
});
