import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { type CpioEntry, buildCpio } from './cpio.js';

interface Parsed {
  offset: number;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  size: number;
  rdevMajor: number;
  rdevMinor: number;
  name: string;
  dataOffset: number;
  data: Buffer;
}

/** An independent newc reader that checks magic and 4-byte alignment as it goes. */
function parseNewc(buf: Buffer): Parsed[] {
  const out: Parsed[] = [];
  let off = 0;
  for (;;) {
    assert.equal(off % 4, 0, `entry at ${off} is not 4-byte aligned`);
    assert.ok(off + 110 <= buf.length, `truncated header at ${off}`);
    const magic = buf.toString('ascii', off, off + 6);
    assert.equal(magic, '070701', `bad magic at ${off}`);
    const field = (i: number) => {
      const s = buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8);
      assert.match(s, /^[0-9a-f]{8}$/, `field ${i} at ${off} is not 8 hex digits: ${s}`);
      return Number.parseInt(s, 16);
    };
    const nameSize = field(11);
    const nameStart = off + 110;
    const nameBytes = buf.subarray(nameStart, nameStart + nameSize);
    assert.equal(nameBytes.at(-1), 0, 'name is not NUL-terminated');
    const name = nameBytes.subarray(0, -1).toString('utf8');
    let dataOffset = nameStart + nameSize;
    // The padding must be zero bytes.
    while (dataOffset % 4 !== 0) {
      assert.equal(buf[dataOffset], 0, 'non-zero padding after name');
      dataOffset++;
    }
    const size = field(6);
    const data = buf.subarray(dataOffset, dataOffset + size);
    assert.equal(data.length, size, `truncated data for ${name}`);
    out.push({
      offset: off,
      ino: field(0),
      mode: field(1),
      uid: field(2),
      gid: field(3),
      nlink: field(4),
      mtime: field(5),
      size,
      rdevMajor: field(9),
      rdevMinor: field(10),
      name,
      dataOffset,
      data,
    });
    off = dataOffset + size;
    while (off % 4 !== 0) {
      assert.equal(buf[off], 0, 'non-zero padding after data');
      off++;
    }
    if (name === 'TRAILER!!!') break;
  }
  assert.equal(off, buf.length, 'bytes after the trailer');
  return out;
}

const ENTRIES: CpioEntry[] = [
  { type: 'dir', path: '/bin' },
  { type: 'dir', path: 'etc', mode: 0o700 },
  { type: 'file', path: '/bin/run', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 },
  { type: 'file', path: 'etc/secret', data: Buffer.from([0, 1, 2, 3, 4, 255]), mode: 0o600 },
  { type: 'file', path: 'etc/empty', data: Buffer.alloc(0) },
  { type: 'file', path: 'etc/odd-é', data: Buffer.from('abc') },
  { type: 'symlink', path: 'bin/sh', target: 'run' },
  { type: 'symlink', path: 'etc/abs', target: '/etc/secret' },
];

describe('buildCpio', () => {
  test('starts with 070701 and ends with the TRAILER!!! entry', () => {
    const buf = buildCpio(ENTRIES);
    assert.equal(buf.toString('ascii', 0, 6), '070701');
    const entries = parseNewc(buf);
    assert.equal(entries.at(-1)?.name, 'TRAILER!!!');
    assert.equal(entries.at(-1)?.size, 0);
    assert.equal(entries.length, ENTRIES.length + 1);
    assert.equal(buf.length % 4, 0);
  });

  test('headers, names and data are 4-byte aligned; names lose the leading slash', () => {
    const entries = parseNewc(buildCpio(ENTRIES));
    for (const e of entries) {
      assert.equal(e.offset % 4, 0);
      assert.equal(e.dataOffset % 4, 0, `data of ${e.name} at ${e.dataOffset}`);
    }
    assert.deepEqual(
      entries.map((e) => e.name),
      [
        'bin',
        'etc',
        'bin/run',
        'etc/secret',
        'etc/empty',
        'etc/odd-é',
        'bin/sh',
        'etc/abs',
        'TRAILER!!!',
      ],
    );
  });

  test('every data length from 0 to 8 keeps the alignment', () => {
    const entries: CpioEntry[] = [];
    for (let n = 0; n <= 8; n++) {
      entries.push({ type: 'file', path: `f${'x'.repeat(n)}`, data: Buffer.alloc(n, 0x41 + n) });
    }
    const parsed = parseNewc(buildCpio(entries));
    for (let n = 0; n <= 8; n++) assert.deepEqual(parsed[n]?.data, Buffer.alloc(n, 0x41 + n));
  });

  test('file, dir and symlink modes, sizes, link counts and unique inodes', () => {
    const byName = new Map(parseNewc(buildCpio(ENTRIES)).map((e) => [e.name, e]));
    assert.equal(byName.get('bin')?.mode, 0o040755);
    assert.equal(byName.get('bin')?.nlink, 2);
    assert.equal(byName.get('etc')?.mode, 0o040700);
    assert.equal(byName.get('bin/run')?.mode, 0o100755);
    assert.equal(byName.get('etc/empty')?.mode, 0o100644);
    assert.equal(byName.get('etc/secret')?.nlink, 1);
    assert.deepEqual(byName.get('etc/secret')?.data, Buffer.from([0, 1, 2, 3, 4, 255]));
    assert.equal(byName.get('bin/sh')?.mode, 0o120777);
    assert.equal(byName.get('bin/sh')?.data.toString(), 'run');
    for (const e of byName.values()) {
      assert.equal(e.uid, 0);
      assert.equal(e.gid, 0);
      assert.equal(e.mtime, 0);
    }
    const inos = [...byName.values()].filter((e) => e.name !== 'TRAILER!!!').map((e) => e.ino);
    assert.equal(new Set(inos).size, inos.length);
    assert.ok(inos.every((i) => i > 0));
  });

  test('a char device carries its major and minor in the rdev fields', () => {
    const [e] = parseNewc(buildCpio([{ type: 'char', path: 'dev/console', major: 5, minor: 1 }]));
    assert.equal(e?.mode, 0o020600);
    assert.equal(e?.rdevMajor, 5);
    assert.equal(e?.rdevMinor, 1);
    assert.equal(e?.size, 0);
    const [n] = parseNewc(
      buildCpio([{ type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 }]),
    );
    assert.equal(n?.mode, 0o020666);
    assert.equal(n?.rdevMajor, 1);
    assert.equal(n?.rdevMinor, 3);
  });

  test('is reproducible', () => {
    assert.deepEqual(buildCpio(ENTRIES), buildCpio(ENTRIES));
  });

  test('rejects ".." components and empty paths', () => {
    for (const p of ['../etc/passwd', 'a/../../b', '/..', '..', '', '/']) {
      assert.throws(() => buildCpio([{ type: 'dir', path: p }]), /bad cpio path/, p);
    }
    // A name that merely contains dots is fine.
    assert.doesNotThrow(() =>
      buildCpio([{ type: 'file', path: 'a/..b/c..', data: Buffer.from('x') }]),
    );
  });

  test('the cpio tool extracts the same tree', (t) => {
    if (spawnSync('sh', ['-c', 'command -v cpio']).status !== 0) {
      t.skip('cpio not installed');
      return;
    }
    const dir = mkdtempSync(path.join(os.tmpdir(), 'isola-cpio-test-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const archive = path.join(dir, 'archive.cpio');
    const root = path.join(dir, 'root');
    writeFileSync(archive, buildCpio(ENTRIES));
    const r = spawnSync(
      'sh',
      [
        '-c',
        `mkdir -p "${root}" && cd "${root}" && cpio -idm --no-absolute-filenames < "${archive}"`,
      ],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(r.status, 0, `cpio failed: ${r.stderr}`);
    const mode = (p: string) => lstatSync(path.join(root, p)).mode;
    assert.ok(lstatSync(path.join(root, 'bin')).isDirectory());
    assert.equal(mode('bin') & 0o7777, 0o755);
    assert.equal(mode('etc') & 0o7777, 0o700);
    assert.equal(readFileSync(path.join(root, 'bin/run'), 'utf8'), '#!/bin/sh\necho hi\n');
    assert.equal(mode('bin/run') & 0o7777, 0o755);
    assert.deepEqual(
      readFileSync(path.join(root, 'etc/secret')),
      Buffer.from([0, 1, 2, 3, 4, 255]),
    );
    assert.equal(mode('etc/secret') & 0o7777, 0o600);
    assert.equal(readFileSync(path.join(root, 'etc/empty')).length, 0);
    assert.equal(readFileSync(path.join(root, 'etc/odd-é'), 'utf8'), 'abc');
    assert.ok(lstatSync(path.join(root, 'bin/sh')).isSymbolicLink());
    assert.equal(readlinkSync(path.join(root, 'bin/sh')), 'run');
    assert.equal(readlinkSync(path.join(root, 'etc/abs')), '/etc/secret');
    // Following the relative link reaches the file.
    assert.equal(readFileSync(path.join(root, 'bin/sh'), 'utf8'), '#!/bin/sh\necho hi\n');
  });
});
