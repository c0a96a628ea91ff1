// A streaming tar reader: POSIX ustar and pax (local and global extended headers), GNU long
// names and base-256 numbers, and old v7 headers. Layers can be hundreds of megabytes, so input
// chunks are never concatenated: headers and bodies are subarrays of the chunks as they arrive,
// and only a header that straddles two chunks is copied. Damage (bad checksum, truncation,
// malformed pax records) is E_IMAGE_BAD_LAYER; errors of the source pass through unchanged.

import { IsolaError } from '../errors.js';

export type TarType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'other';

export interface TarHeader {
  path: string;
  type: TarType;
  /** Body length in bytes (0 for the header-only types: links, directories, devices, fifos). */
  size: number;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Seconds since the epoch; fractional when a pax header gives it. */
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  xattrs: Record<string, Buffer>;
}

export interface TarEntry {
  header: TarHeader;
  /**
   * The entry's content. It must be read before asking for the next entry, or not at all:
   * whatever is left unread is skipped when the archive moves on.
   */
  body: AsyncIterable<Buffer>;
}

const BLOCK = 512;
/**
 * Largest pax or GNU long-name body we accept. Real ones are a few hundred bytes (a path, some
 * xattrs); the cap stops a hostile layer from making us buffer gigabytes of "metadata". Same
 * value as Go's archive/tar.
 */
const MAX_META_SIZE = 1024 * 1024;

function bad(message: string): IsolaError {
  return new IsolaError('E_IMAGE_BAD_LAYER', `invalid tar archive: ${message}`);
}

/** Input chunks not yet consumed; the first one starts at `off`. */
class Input {
  private readonly chunks: Buffer[] = [];
  private off = 0;
  private buffered = 0;
  private done = false;
  /** Bytes consumed so far, for error messages. */
  position = 0;

  constructor(private readonly it: AsyncIterator<Buffer>) {}

  /** Pulls one more chunk; false at end of input. */
  private async pull(): Promise<boolean> {
    if (this.done) return false;
    for (;;) {
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        return false;
      }
      const v = r.value as Buffer | Uint8Array | string;
      const chunk = Buffer.isBuffer(v)
        ? v
        : typeof v === 'string'
          ? Buffer.from(v)
          : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      if (chunk.length === 0) continue;
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      return true;
    }
  }

  /** Buffers at least n bytes; false if the input ends first. */
  async fill(n: number): Promise<boolean> {
    while (this.buffered < n) if (!(await this.pull())) return false;
    return true;
  }

  /** The next n bytes (n must be buffered); a copy only when they span chunks. */
  take(n: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length - this.off >= n) {
      out = first.subarray(this.off, this.off + n);
      this.advance(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let got = 0;
      while (got < n) {
        const c = this.chunks[0]!;
        const k = Math.min(n - got, c.length - this.off);
        c.copy(out, got, this.off, this.off + k);
        got += k;
        this.advance(k);
      }
    }
    return out;
  }

  private advance(k: number): void {
    this.off += k;
    this.buffered -= k;
    this.position += k;
    if (this.off === this.chunks[0]!.length) {
      this.chunks.shift();
      this.off = 0;
    }
  }

  /** Up to `max` bytes without copying; null at end of input. */
  async piece(max: number): Promise<Buffer | null> {
    if (this.buffered === 0 && !(await this.pull())) return null;
    const first = this.chunks[0]!;
    const k = Math.min(max, first.length - this.off);
    const out = first.subarray(this.off, this.off + k);
    this.advance(k);
    return out;
  }

  async skip(count: number): Promise<boolean> {
    let n = count;
    while (n > 0) {
      if (this.buffered === 0 && !(await this.pull())) return false;
      const first = this.chunks[0]!;
      const k = Math.min(n, first.length - this.off);
      this.advance(k);
      n -= k;
    }
    return true;
  }

  async close(): Promise<void> {
    if (!this.done) {
      this.done = true;
      await this.it.return?.();
    }
  }
}

/** A NUL-terminated string field. */
function str(b: Buffer, off: number, len: number): string {
  const end = b.indexOf(0, off);
  return b.toString('utf8', off, end === -1 || end > off + len ? off + len : end);
}

/** A numeric field: octal text, or GNU base-256 when the high bit of the first byte is set. */
function num(b: Buffer, off: number, len: number, field: string): number {
  const first = b[off]!;
  if (first & 0x80) {
    // Base-256, big-endian two's complement; 0xff marks a negative number.
    const negative = first === 0xff;
    let v = negative ? -1 : first & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + b[off + i]!;
    if (!Number.isSafeInteger(v)) throw bad(`${field} does not fit a safe integer`);
    return v;
  }
  let i = off;
  const end = off + len;
  while (i < end && b[i] === 0x20) i++;
  let v = 0;
  for (; i < end; i++) {
    const c = b[i]!;
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) throw bad(`${field} is not an octal number`);
    v = v * 8 + (c - 0x30);
  }
  return v;
}

function checksumOk(b: Buffer): boolean {
  const want = num(b, 148, 8, 'checksum');
  // The checksum field counts as eight spaces. Some old tars summed signed bytes; accept both.
  let unsigned = 8 * 0x20;
  let signed = 8 * 0x20;
  for (let i = 0; i < BLOCK; i++) {
    if (i >= 148 && i < 156) continue;
    const c = b[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return want === unsigned || want === signed;
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

const TYPES: Record<string, TarType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

/** Types whose size field says nothing about a body (Go's archive/tar reads them the same way). */
const HEADER_ONLY = new Set<TarType>(['hardlink', 'symlink', 'char', 'block', 'dir', 'fifo']);

type Pax = Map<string, Buffer>;

function parsePax(body: Buffer): Pax {
  const out: Pax = new Map();
  let off = 0;
  while (off < body.length) {
    // Trailing NUL padding after the last record happens in the wild.
    if (body[off] === 0) break;
    const space = body.indexOf(0x20, off);
    if (space === -1 || space - off > 20) throw bad('malformed pax record length');
    const lenText = body.toString('ascii', off, space);
    if (!/^[0-9]+$/.test(lenText)) throw bad('malformed pax record length');
    const len = Number(lenText);
    const end = off + len;
    if (len <= space - off + 1 || end > body.length || body[end - 1] !== 0x0a)
      throw bad('malformed pax record');
    const eq = body.indexOf(0x3d, space + 1);
    if (eq === -1 || eq >= end) throw bad('pax record without =');
    out.set(body.toString('utf8', space + 1, eq), body.subarray(eq + 1, end - 1));
    off = end;
  }
  return out;
}

function paxNumber(v: Buffer, key: string, fractional = false): number {
  const s = v.toString('ascii');
  const ok = fractional ? /^-?[0-9]+(\.[0-9]+)?$/.test(s) : /^[0-9]+$/.test(s);
  const n = Number(s);
  if (!ok || !Number.isFinite(n) || (!fractional && !Number.isSafeInteger(n)))
    throw bad(`pax ${key} is not a number: ${JSON.stringify(s.slice(0, 40))}`);
  return n;
}

/** Keywords that only make sense for one entry, ignored in a global header. */
const LOCAL_ONLY = new Set(['path', 'linkpath', 'size']);

/** Applies pax records over the fields of the ustar header. */
function applyPax(h: TarHeader, pax: Pax, global: boolean): void {
  for (const [key, v] of pax) {
    // An empty value cancels the keyword (for a local header: use the ustar field).
    if (v.length === 0 || (global && LOCAL_ONLY.has(key))) continue;
    switch (key) {
      case 'path':
        h.path = v.toString('utf8');
        break;
      case 'linkpath':
        h.linkname = v.toString('utf8');
        break;
      case 'size':
        h.size = paxNumber(v, key);
        break;
      case 'uid':
        h.uid = paxNumber(v, key);
        break;
      case 'gid':
        h.gid = paxNumber(v, key);
        break;
      case 'uname':
        h.uname = v.toString('utf8');
        break;
      case 'gname':
        h.gname = v.toString('utf8');
        break;
      case 'mtime':
        h.mtime = paxNumber(v, key, true);
        break;
      default:
        if (key.startsWith('SCHILY.xattr.')) h.xattrs[key.slice('SCHILY.xattr.'.length)] = v;
    }
  }
}

function parseHeader(b: Buffer): { header: TarHeader; flag: string } {
  const flag = String.fromCharCode(b[156]!);
  const magic = b.toString('latin1', 257, 265);
  const posix = magic.startsWith('ustar\0');
  const gnu = magic === 'ustar  \0';
  let path = str(b, 0, 100);
  // Only POSIX ustar has the prefix field; GNU keeps atime/ctime in those bytes.
  if (posix && b[345] !== 0) path = `${str(b, 345, 155)}/${path}`;
  let type = TYPES[flag] ?? 'other';
  // v7 archives mark directories only by the trailing slash.
  if (flag === '\0' && path.endsWith('/')) type = 'dir';
  const ext = posix || gnu;
  const header: TarHeader = {
    path,
    type,
    size: num(b, 124, 12, 'size'),
    mode: num(b, 100, 8, 'mode') & 0o7777,
    uid: num(b, 108, 8, 'uid'),
    gid: num(b, 116, 8, 'gid'),
    uname: ext ? str(b, 265, 32) : '',
    gname: ext ? str(b, 297, 32) : '',
    mtime: num(b, 136, 12, 'mtime'),
    linkname: str(b, 157, 100),
    devmajor: ext ? num(b, 329, 8, 'devmajor') : 0,
    devminor: ext ? num(b, 337, 8, 'devminor') : 0,
    xattrs: {},
  };
  return { header, flag };
}

/** The body of one entry, read straight from the archive input. */
class Body implements AsyncIterable<Buffer> {
  remaining: number;
  constructor(
    private readonly input: Input,
    size: number,
    private readonly path: string,
  ) {
    this.remaining = size;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    while (this.remaining > 0) {
      const p = await this.input.piece(this.remaining);
      if (p === null) throw bad(`truncated in the body of ${this.path}`);
      this.remaining -= p.length;
      yield p;
    }
  }
}

/** Reads the whole body of a metadata entry (pax header, GNU long name). */
async function metaBody(input: Input, size: number, what: string): Promise<Buffer> {
  if (size > MAX_META_SIZE) throw bad(`${what} of ${size} bytes exceeds ${MAX_META_SIZE}`);
  if (size === 0) return Buffer.alloc(0);
  const padded = Math.ceil(size / BLOCK) * BLOCK;
  if (!(await input.fill(padded))) throw bad(`truncated in a ${what}`);
  // Copied: pax values are kept (xattrs, global headers) past the chunk they came from.
  return Buffer.from(input.take(padded).subarray(0, size));
}

/** Entries of a tar archive, in order. Ends at the end-of-archive marker or at end of input. */
export async function* readTar(source: AsyncIterable<Buffer>): AsyncGenerator<TarEntry> {
  const input = new Input(source[Symbol.asyncIterator]());
  const global: Pax = new Map();
  try {
    let local: Pax | null = null;
    let longName: string | null = null;
    let longLink: string | null = null;
    for (;;) {
      const at = input.position;
      if (!(await input.fill(BLOCK))) {
        // End of input exactly between entries: an archive without its end marker, which Go's
        // archive/tar (and so containerd) accepts too. Anything else is a cut-off archive.
        if (await input.fill(1)) throw bad(`truncated header at offset ${at}`);
        if (local || longName !== null || longLink !== null)
          throw bad('archive ends after an extended header');
        return;
      }
      const block = input.take(BLOCK);
      if (isZero(block)) {
        // End of archive. A second zero block normally follows, then record padding; neither
        // is read, so an archive cut after the first, or with trailing garbage, is accepted.
        return;
      }
      if (!checksumOk(block)) throw bad(`header checksum mismatch at offset ${at}`);
      const { header, flag } = parseHeader(block);
      const size = header.size;
      if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
        const what =
          flag === 'x' || flag === 'g' ? 'pax header' : flag === 'L' ? 'long name' : 'long link';
        const body = await metaBody(input, size, what);
        if (flag === 'x') local = parsePax(body);
        else if (flag === 'g') {
          for (const [k, v] of parsePax(body)) {
            if (v.length === 0) global.delete(k);
            else global.set(k, v);
          }
        } else {
          const end = body.indexOf(0);
          const text = body.toString('utf8', 0, end === -1 ? body.length : end);
          if (flag === 'L') longName = text;
          else longLink = text;
        }
        continue;
      }
      if (longName !== null) header.path = longName;
      if (longLink !== null) header.linkname = longLink;
      if (global.size) applyPax(header, global, true);
      if (local) applyPax(header, local, false);
      local = null;
      longName = null;
      longLink = null;
      if (HEADER_ONLY.has(header.type)) header.size = 0;
      const body = new Body(input, header.size, header.path);
      yield { header, body };
      // Skip whatever the consumer left unread, then the padding to the next block.
      const pad = (BLOCK - (header.size % BLOCK)) % BLOCK;
      if (!(await input.skip(body.remaining + pad)))
        throw bad(`truncated in the body of ${header.path}`);
      body.remaining = 0;
    }
  } finally {
    await input.close();
  }
}
