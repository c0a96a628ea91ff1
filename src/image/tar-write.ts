// A tar writer (POSIX ustar with PAX extended headers for long names, large values and xattrs).
// Used to export images (docker-save archives, OCI layouts as tar) and by tests to build layers,
// including deliberately hostile ones: names are written as given, never normalised.

import type { Writable } from 'node:stream';

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarEntryInput {
  /** Entry name exactly as it goes into the archive. */
  path: string;
  type: TarEntryType;
  /** File content (type 'file'); omit when streaming with TarWriter.addStream. */
  data?: Buffer | string;
  /** Target of a symlink or hard link. */
  linkname?: string;
  /** Permission bits (and setuid/setgid/sticky); default 0644 files, 0755 directories. */
  mode?: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  /** Seconds since the epoch; default 0. */
  mtime?: number;
  devmajor?: number;
  devminor?: number;
  /** Extended attributes, written as PAX SCHILY.xattr.<name> records. */
  xattrs?: Record<string, Buffer | string>;
}

const BLOCK = 512;
const TYPEFLAG: Record<TarEntryType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
};

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, '0')}\0`;
}

function fitsOctal(n: number, width: number): boolean {
  return n >= 0 && n < 8 ** (width - 1);
}

function paxRecord(key: string, value: Buffer): Buffer {
  // "<len> <key>=<value>\n", where <len> counts itself.
  const rest = Buffer.byteLength(` ${key}=`) + value.length + 1;
  let len = rest + 1;
  while (String(len).length + rest !== len) len = String(len).length + rest;
  return Buffer.concat([Buffer.from(`${len} ${key}=`), value, Buffer.from('\n')]);
}

function rawHeader(
  name: string,
  type: string,
  size: number,
  e: Partial<TarEntryInput>,
  prefix = '',
): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  h.write(octal((e.mode ?? 0o644) & 0o7777, 8), 100, 'ascii');
  h.write(octal(fitsOctal(e.uid ?? 0, 8) ? (e.uid ?? 0) : 0, 8), 108, 'ascii');
  h.write(octal(fitsOctal(e.gid ?? 0, 8) ? (e.gid ?? 0) : 0, 8), 116, 'ascii');
  h.write(octal(fitsOctal(size, 12) ? size : 0, 12), 124, 'ascii');
  h.write(octal(Math.max(0, Math.floor(e.mtime ?? 0)), 12), 136, 'ascii');
  h.write(type, 156, 'ascii');
  h.write((e.linkname ?? '').slice(0, 100), 157, 100, 'utf8');
  h.write('ustar\x0000', 257, 'binary');
  h.write((e.uname ?? '').slice(0, 31), 265, 32, 'utf8');
  h.write((e.gname ?? '').slice(0, 31), 297, 32, 'utf8');
  h.write(octal(e.devmajor ?? 0, 8), 329, 'ascii');
  h.write(octal(e.devminor ?? 0, 8), 337, 'ascii');
  h.write(prefix, 345, 155, 'utf8');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return h;
}

function padding(size: number): Buffer {
  const rem = size % BLOCK;
  return rem === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - rem);
}

/** Header block(s) for one entry whose body is `size` bytes (PAX header first when needed). */
export function entryHeader(e: TarEntryInput, size: number): Buffer {
  const records: Buffer[] = [];
  const nameBytes = Buffer.byteLength(e.path);
  let name = e.path;
  let prefix = '';
  if (nameBytes > 100) {
    // Try the ustar prefix split before falling back to a PAX path record.
    const cut = e.path.lastIndexOf('/', 155);
    if (
      cut > 0 &&
      Buffer.byteLength(e.path.slice(0, cut)) <= 155 &&
      Buffer.byteLength(e.path.slice(cut + 1)) <= 100 &&
      cut + 1 < e.path.length
    ) {
      prefix = e.path.slice(0, cut);
      name = e.path.slice(cut + 1);
    } else {
      records.push(paxRecord('path', Buffer.from(e.path)));
      name = e.path.slice(0, 100);
    }
  }
  if (e.linkname !== undefined && Buffer.byteLength(e.linkname) > 100)
    records.push(paxRecord('linkpath', Buffer.from(e.linkname)));
  if (!fitsOctal(size, 12)) records.push(paxRecord('size', Buffer.from(String(size))));
  if (!fitsOctal(e.uid ?? 0, 8)) records.push(paxRecord('uid', Buffer.from(String(e.uid))));
  if (!fitsOctal(e.gid ?? 0, 8)) records.push(paxRecord('gid', Buffer.from(String(e.gid))));
  for (const [k, v] of Object.entries(e.xattrs ?? {}))
    records.push(paxRecord(`SCHILY.xattr.${k}`, Buffer.isBuffer(v) ? v : Buffer.from(v)));
  const mode = e.mode ?? (e.type === 'dir' ? 0o755 : 0o644);
  const main = rawHeader(name, TYPEFLAG[e.type], size, { ...e, mode }, prefix);
  if (records.length === 0) return main;
  const pax = Buffer.concat(records);
  const paxName = `PaxHeaders/${name.split('/').pop()}`.slice(0, 100);
  return Buffer.concat([
    rawHeader(paxName, 'x', pax.length, { mode: 0o644 }),
    pax,
    padding(pax.length),
    main,
  ]);
}

/** The two zero blocks that end an archive. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

/** A whole archive in memory (tests, small metadata archives). */
export function tarBuffer(entries: TarEntryInput[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.type === 'file' ? Buffer.from(e.data ?? '') : Buffer.alloc(0);
    parts.push(entryHeader(e, data.length), data, padding(data.length));
  }
  parts.push(TAR_END);
  return Buffer.concat(parts);
}

/** Streams an archive to a Writable, honouring backpressure; bodies may be streams. */
export class TarWriter {
  constructor(private readonly out: Writable) {}

  private write(chunk: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      const ok = this.out.write(chunk, (err) => (err ? reject(err) : undefined));
      if (ok) resolve();
      else this.out.once('drain', resolve);
    });
  }

  async add(e: TarEntryInput): Promise<void> {
    const data = e.type === 'file' ? Buffer.from(e.data ?? '') : Buffer.alloc(0);
    await this.write(entryHeader(e, data.length));
    if (data.length) await this.write(data);
    const pad = padding(data.length);
    if (pad.length) await this.write(pad);
  }

  /** A file entry whose body comes from `body` and is exactly `size` bytes long. */
  async addStream(e: TarEntryInput, size: number, body: AsyncIterable<Buffer>): Promise<void> {
    await this.write(entryHeader({ ...e, type: 'file' }, size));
    let n = 0;
    for await (const chunk of body) {
      n += chunk.length;
      if (n > size) throw new Error(`tar entry ${e.path}: body longer than ${size} bytes`);
      await this.write(chunk);
    }
    if (n !== size) throw new Error(`tar entry ${e.path}: body is ${n} bytes, expected ${size}`);
    const pad = padding(size);
    if (pad.length) await this.write(pad);
  }

  async finish(): Promise<void> {
    await this.write(TAR_END);
    await new Promise<void>((resolve, reject) => {
      this.out.once('error', reject);
      this.out.end(resolve);
    });
  }
}
