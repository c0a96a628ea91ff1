// A minimal ZIP reader for function bundles: stored and deflated entries of a single-disk,
// unencrypted, non-ZIP64 archive held in memory. Uploads are capped well below 4 GiB, so ZIP64
// only shows up in archives we would refuse anyway, and every other feature we skip (encryption,
// exotic methods, spanning) is refused by name rather than misread.
//
// The central directory is the source of truth (as for unzip and Python's zipfile); each local
// header is still checked against it, because readers that trust different copies of a name or
// method are how "one archive, two contents" tricks work. Entry data may not overlap another
// entry or the central directory, which is what "overlapping file" zip bombs rely on. Sizes are
// checked against the limits from the central directory before anything is inflated, and
// inflation is capped at the declared size, so a lying header cannot make us allocate more.
//
// Anything malformed or unsupported is E_BAD_BUNDLE; going over a limit is E_PAYLOAD_TOO_LARGE.

import zlib from 'node:zlib';
import { IsolaError } from '../../errors.js';

export type ZipEntryType = 'file' | 'dir';

export interface ZipEntry {
  /** The name as stored (UTF-8); directories usually end with '/'. Not normalised or checked. */
  name: string;
  type: ZipEntryType;
  /** Permission bits (with setuid/setgid/sticky) from a Unix creator; else 0644 / 0755. */
  mode: number;
  /** Uncompressed content, CRC-checked; empty for directories. May share memory with the input. */
  data: Buffer;
}

export interface ZipLimits {
  /** Most entries the central directory may list. */
  maxEntries?: number;
  /** Most bytes all entries may declare uncompressed, together. */
  maxUnpackedBytes?: number;
}

const EOCD_SIG = 0x06054b50;
const CEN_SIG = 0x02014b50;
const LOC_SIG = 0x04034b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const EOCD_SIZE = 22;
const CEN_SIZE = 46;
const LOC_SIZE = 30;
const ZIP64_LOCATOR_SIZE = 20;
const MAX_COMMENT = 0xffff;

const FLAG_ENCRYPTED = 0x0001;
const FLAG_STRONG_ENCRYPTION = 0x0040;
const METHOD_STORED = 0;
const METHOD_DEFLATE = 8;
const METHOD_AES = 99;
/** Names for the methods people actually meet, so the refusal says what the archive used. */
const METHOD_NAMES: Record<number, string> = {
  9: 'deflate64',
  12: 'bzip2',
  14: 'lzma',
  93: 'zstd',
  95: 'xz',
  98: 'ppmd',
};

/** "Version made by" hosts whose external attributes carry a Unix st_mode (Unix, and OS X). */
const UNIX_HOSTS = new Set([3, 19]);
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const DOS_DIRECTORY = 0x10;

function bad(message: string): IsolaError {
  return new IsolaError('E_BAD_BUNDLE', `invalid zip archive: ${message}`);
}

function tooLarge(message: string): IsolaError {
  return new IsolaError('E_PAYLOAD_TOO_LARGE', `zip archive is too large: ${message}`);
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

let crcTable: Uint32Array | undefined;

/** Table-driven CRC-32 (IEEE), for Node releases before 20.15 that lack zlib.crc32. */
export function tableCrc32(data: Buffer): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (const b of data) c = crcTable[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** The engines field allows Node 20 releases from before zlib.crc32 (added in 20.15). */
const nativeCrc32 = (zlib as Partial<typeof zlib>).crc32;

function crc32(data: Buffer): number {
  return nativeCrc32 ? nativeCrc32(data) >>> 0 : tableCrc32(data);
}

/**
 * Offset of the End Of Central Directory record. It ends the archive but is followed by a
 * comment of up to 64 KiB that may itself contain the signature, so a candidate only counts
 * when its comment length reaches exactly to the end.
 */
function findEocd(buf: Buffer): number {
  if (buf.length < EOCD_SIZE) throw bad(`${buf.length} bytes is too short for a zip archive`);
  const stop = Math.max(0, buf.length - EOCD_SIZE - MAX_COMMENT);
  for (let i = buf.length - EOCD_SIZE; i >= stop; i--) {
    if (buf[i] !== 0x50 || buf.readUInt32LE(i) !== EOCD_SIG) continue;
    if (i + EOCD_SIZE + buf.readUInt16LE(i + 20) === buf.length) return i;
  }
  throw bad('no end of central directory record (the archive is truncated or not a zip)');
}

interface CentralEntry {
  name: string;
  type: ZipEntryType;
  mode: number;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localOffset: number;
  dataStart: number;
}

function decodeName(raw: Buffer, index: number): string {
  try {
    return utf8.decode(raw);
  } catch {
    // Names without the UTF-8 flag are officially CP437, but Linux and macOS tools write UTF-8
    // there anyway; a name that is not UTF-8 comes from a legacy Windows code page we cannot
    // guess, and writing it under a wrong name would be worse than refusing.
    throw bad(
      `entry ${index} has a name that is not UTF-8 (legacy code-page names are not supported)`,
    );
  }
}

function parseCentral(
  buf: Buffer,
  p: number,
  index: number,
): { entry: CentralEntry; next: number } {
  if (buf.readUInt32LE(p) !== CEN_SIG) throw bad(`central directory entry ${index} is damaged`);
  const madeBy = buf.readUInt16LE(p + 4);
  const flags = buf.readUInt16LE(p + 8);
  const method = buf.readUInt16LE(p + 10);
  const crc = buf.readUInt32LE(p + 16);
  const compressedSize = buf.readUInt32LE(p + 20);
  const size = buf.readUInt32LE(p + 24);
  const nameLen = buf.readUInt16LE(p + 28);
  const extraLen = buf.readUInt16LE(p + 30);
  const commentLen = buf.readUInt16LE(p + 32);
  const diskStart = buf.readUInt16LE(p + 34);
  const external = buf.readUInt32LE(p + 38);
  const localOffset = buf.readUInt32LE(p + 42);
  const next = p + CEN_SIZE + nameLen + extraLen + commentLen;
  if (next > buf.length) throw bad(`central directory entry ${index} is truncated`);
  const name = decodeName(buf.subarray(p + CEN_SIZE, p + CEN_SIZE + nameLen), index);
  const what = JSON.stringify(name);

  if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION) || method === METHOD_AES)
    throw bad(`entry ${what} is encrypted; bundles must not be password-protected`);
  if (
    compressedSize === 0xffffffff ||
    size === 0xffffffff ||
    localOffset === 0xffffffff ||
    diskStart === 0xffff
  )
    throw bad(`entry ${what} uses ZIP64, which is not supported`);
  if (diskStart !== 0)
    throw bad(`entry ${what} is on another disk; split archives are not supported`);
  if (method !== METHOD_STORED && method !== METHOD_DEFLATE) {
    const label = METHOD_NAMES[method] ?? 'unknown';
    throw bad(
      `entry ${what} uses compression method ${method} (${label}); only stored and deflate are supported`,
    );
  }

  const unixMode = UNIX_HOSTS.has(madeBy >> 8) ? external >>> 16 : 0;
  const format = unixMode & S_IFMT;
  if (format === S_IFLNK)
    throw bad(`entry ${what} is a symbolic link; bundles may not contain links`);
  let type: ZipEntryType;
  if (format === S_IFDIR || name.endsWith('/') || (format === 0 && external & DOS_DIRECTORY))
    type = 'dir';
  else if (format === S_IFREG || format === 0) type = 'file';
  else
    throw bad(
      `entry ${what} is a device, fifo or socket; bundles may hold only files and directories`,
    );
  if (type === 'dir' && size !== 0) throw bad(`directory entry ${what} has content`);
  if (method === METHOD_STORED && compressedSize !== size)
    throw bad(`stored entry ${what} has different compressed and uncompressed sizes`);
  const mode = unixMode !== 0 ? unixMode & 0o7777 : type === 'dir' ? 0o755 : 0o644;
  return {
    entry: { name, type, mode, method, crc, compressedSize, size, localOffset, dataStart: 0 },
    next,
  };
}

/** Checks the local header against the central entry and finds where the data starts. */
function locateData(buf: Buffer, e: CentralEntry, cdOffset: number, cdName: Buffer): void {
  const p = e.localOffset;
  const what = JSON.stringify(e.name);
  if (p + LOC_SIZE > cdOffset || buf.readUInt32LE(p) !== LOC_SIG)
    throw bad(`local header of entry ${what} is missing or damaged`);
  const method = buf.readUInt16LE(p + 8);
  const nameLen = buf.readUInt16LE(p + 26);
  const extraLen = buf.readUInt16LE(p + 28);
  const nameEnd = p + LOC_SIZE + nameLen;
  if (nameEnd > cdOffset || !buf.subarray(p + LOC_SIZE, nameEnd).equals(cdName))
    throw bad(`local header of entry ${what} names a different file`);
  if (method !== e.method) throw bad(`local header of entry ${what} gives a different method`);
  e.dataStart = nameEnd + extraLen;
  if (e.dataStart + e.compressedSize > cdOffset)
    throw bad(`data of entry ${what} runs into the central directory (truncated archive?)`);
}

function inflate(buf: Buffer, e: CentralEntry): Buffer {
  const raw = buf.subarray(e.dataStart, e.dataStart + e.compressedSize);
  let data: Buffer;
  if (e.method === METHOD_STORED) data = raw;
  else {
    try {
      // maxOutputLength must be at least 1; an empty file still inflates to 0 bytes.
      data = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, e.size) });
    } catch (err) {
      const why =
        (err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE'
          ? `inflates to more than its declared ${e.size} bytes`
          : `has damaged deflate data (${(err as Error).message})`;
      throw bad(`entry ${JSON.stringify(e.name)} ${why}`);
    }
  }
  if (data.length !== e.size)
    throw bad(`entry ${JSON.stringify(e.name)} is ${data.length} bytes, its header says ${e.size}`);
  if (crc32(data) !== e.crc) throw bad(`entry ${JSON.stringify(e.name)} fails its CRC-32 check`);
  return data;
}

/**
 * The entries of a zip archive, in central directory order. The archive's structure is checked
 * and the limits applied when this is called; each entry's data is inflated and CRC-checked as
 * the iteration reaches it, so a consumer that stops early has inflated nothing further.
 */
export function zipEntries(buf: Buffer, limits: ZipLimits = {}): Generator<ZipEntry> {
  const eocd = findEocd(buf);
  const disk = buf.readUInt16LE(eocd + 4);
  const cdDisk = buf.readUInt16LE(eocd + 6);
  const onDisk = buf.readUInt16LE(eocd + 8);
  const total = buf.readUInt16LE(eocd + 10);
  const cdSize = buf.readUInt32LE(eocd + 12);
  const cdOffset = buf.readUInt32LE(eocd + 16);
  if (
    (eocd >= ZIP64_LOCATOR_SIZE &&
      buf.readUInt32LE(eocd - ZIP64_LOCATOR_SIZE) === ZIP64_LOCATOR_SIG) ||
    total === 0xffff ||
    onDisk === 0xffff ||
    cdSize === 0xffffffff ||
    cdOffset === 0xffffffff
  )
    throw bad('the archive uses ZIP64, which is not supported');
  if (disk !== 0 || cdDisk !== 0 || onDisk !== total)
    throw bad('the archive spans several disks, which is not supported');
  if (limits.maxEntries !== undefined && total > limits.maxEntries)
    throw tooLarge(`${total} entries, the limit is ${limits.maxEntries}`);
  if (cdOffset + cdSize > eocd)
    throw bad(
      'the central directory lies outside the archive (truncated, or data before the archive)',
    );

  const entries: CentralEntry[] = [];
  const names: Buffer[] = [];
  let declared = 0;
  let p = cdOffset;
  const cdEnd = cdOffset + cdSize;
  for (let i = 0; i < total; i++) {
    if (p + CEN_SIZE > cdEnd) throw bad(`central directory entry ${i} is truncated`);
    const { entry, next } = parseCentral(buf, p, i);
    if (next > cdEnd) throw bad(`central directory entry ${i} is truncated`);
    names.push(buf.subarray(p + CEN_SIZE, p + CEN_SIZE + buf.readUInt16LE(p + 28)));
    entries.push(entry);
    declared += entry.size;
    if (limits.maxUnpackedBytes !== undefined && declared > limits.maxUnpackedBytes)
      throw tooLarge(`its entries unpack to more than ${limits.maxUnpackedBytes} bytes`);
    p = next;
  }
  if (p !== cdEnd) throw bad('the central directory size does not match its entries');

  entries.forEach((e, i) => locateData(buf, e, cdOffset, names[i]!));
  const byOffset = [...entries].sort((a, b) => a.localOffset - b.localOffset);
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1]!;
    if (prev.dataStart + prev.compressedSize > byOffset[i]!.localOffset)
      throw bad(
        `entries ${JSON.stringify(prev.name)} and ${JSON.stringify(byOffset[i]!.name)} overlap`,
      );
  }

  return (function* (): Generator<ZipEntry> {
    for (const e of entries)
      yield { name: e.name, type: e.type, mode: e.mode, data: inflate(buf, e) };
  })();
}

/** All entries of a zip archive, inflated and checked (see zipEntries). */
export function readZip(buf: Buffer, limits: ZipLimits = {}): ZipEntry[] {
  return [...zipEntries(buf, limits)];
}
