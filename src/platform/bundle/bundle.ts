// Function code bundles: a directory, zip, tar or tar.gz holding package.json and a handler
// module, turned into a plain directory tree the platform can build a root filesystem from.
//
// Archives come from tenants, so extraction trusts nothing: names that are absolute or contain
// `..` are refused, as are links, devices and fifos (a bundle is code, and refusing links means
// no later write can be redirected through one); the destination is a fresh directory and we
// never create a link in it, so every write lands where its name says. Limits are applied entry
// by entry, before the entry is written, so a bomb stops at the limit and not after unpacking.
//
// The tree we produce is normalised, so its digest depends on the code and not on how it was
// packaged: files are 0755 when any execute bit was set and 0644 otherwise (no setuid, setgid
// or sticky, no owner), directories are 0755, `.git` is left out wherever it appears, and a
// zip's `__MACOSX/` resource-fork folder (Finder adds it) is dropped.

import { createHash, randomBytes } from 'node:crypto';
import fs, { constants } from 'node:fs';
import path from 'node:path';
import { IsolaError } from '../../errors.js';
import { openLayerStream } from '../../image/decompress.js';
import { readTar } from '../../image/tar-read.js';
import { TAR_END, type TarEntryInput, entryHeader, tarBuffer } from '../../image/tar-write.js';
import { zipEntries } from './zip.js';

const MiB = 1024 * 1024;

export const BUNDLE_LIMITS = {
  /**
   * Compressed upload. The whole archive is held in memory (a zip's directory is at its end),
   * so this bounds the server's memory per deploy; 50 MiB is what AWS Lambda takes directly.
   */
  maxArchiveBytes: 50 * MiB,
  /**
   * File content once unpacked. Every version becomes a root filesystem image on disk and is
   * copied into the guest at boot, so this bounds disk per version and cold-start time; it is
   * Lambda's unzipped limit, so bundles that deploy there deploy here.
   */
  maxUnpackedBytes: 250 * MiB,
  /**
   * Files and directories. A bundle with a big node_modules has a few thousand; the cap bounds
   * inodes and per-entry work (extraction, mkfs) against archives of millions of empty files.
   */
  maxEntries: 20_000,
  /**
   * Bytes in one relative path. Deep node_modules paths stay within a few hundred; the cap keeps
   * the bundle's paths well under PATH_MAX (4096) once it sits below the guest's function root.
   */
  maxPathBytes: 1024,
} as const;

export type BundleLimits = { [K in keyof typeof BUNDLE_LIMITS]: number };

export type BundleFormat = 'zip' | 'tar' | 'tar.gz';

export interface BundleStats {
  /** Regular files written. */
  files: number;
  /** Bytes of file content written. */
  bytes: number;
}

export interface BundlePackageJson {
  main?: unknown;
  isola?: unknown;
  [key: string]: unknown;
}

export interface ValidatedBundle {
  /** The handler module, relative to the bundle root, posix style. */
  handler: string;
  packageJson: BundlePackageJson;
}

export type BundleInput = { kind: 'dir'; path: string } | { kind: 'archive'; data: Buffer };

export interface PreparedBundle extends BundleStats {
  /** `sha256:<hex>` of the deterministic tar of the prepared tree (see bundleDigest). */
  digest: string;
  handler: string;
}

/** Linux's NAME_MAX: a longer component fails with ENAMETOOLONG; a clear refusal is better. */
const NAME_MAX = 255;
const FILE_MODE = 0o644;
const EXEC_MODE = 0o755;
const DIR_MODE = 0o755;
const OPEN_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const HANDLER_DEFAULTS = ['index.mjs', 'index.js', 'index.cjs'];
const HANDLER_HINT = '(set "main" in package.json or add index.js)';

function bad(message: string, details?: Record<string, unknown>): IsolaError {
  return new IsolaError('E_BAD_BUNDLE', message, details ? { details } : {});
}

function tooLarge(message: string): IsolaError {
  return new IsolaError('E_PAYLOAD_TOO_LARGE', message);
}

/** A name for messages: quoted, and cut short, since hostile names can be very long. */
function show(name: string): string {
  return JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}...` : name);
}

function withLimits(limits: Partial<BundleLimits>): BundleLimits {
  return { ...BUNDLE_LIMITS, ...limits };
}

/** The mode a bundle file gets: only "is it executable" survives. */
function fileMode(mode: number): number {
  return mode & 0o111 ? EXEC_MODE : FILE_MODE;
}

/**
 * The normalised relative path of an entry name ('' for the root itself). Refuses rather than
 * repairs: `a/../b` is harmless once resolved, but no honest packer writes it.
 */
function entryPath(name: string, limits: BundleLimits): string {
  if (name.includes('\0')) throw bad(`bundle entry ${show(name)} has a NUL byte in its name`);
  // A zip made on Windows may use backslashes; on Linux they would be part of one file name,
  // and a tool on another system could read them as separators.
  if (name.includes('\\'))
    throw bad(`bundle entry ${show(name)} has a backslash in its name (paths must use /)`);
  if (name.startsWith('/')) throw bad(`bundle entry ${show(name)} has an absolute path`);
  const parts: string[] = [];
  for (const c of name.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..')
      throw bad(`bundle entry ${show(name)} contains ".." (it could escape the bundle)`);
    if (Buffer.byteLength(c) > NAME_MAX)
      throw bad(`bundle entry ${show(name)} has a component over ${NAME_MAX} bytes`);
    parts.push(c);
  }
  const rel = parts.join('/');
  if (Buffer.byteLength(rel) > limits.maxPathBytes)
    throw bad(`bundle entry ${show(name)} has a path over ${limits.maxPathBytes} bytes`);
  return rel;
}

/** Paths left out of every bundle: version control data is not code. */
function isSkipped(rel: string, fromZip: boolean): boolean {
  const parts = rel.split('/');
  return parts.includes('.git') || (fromZip && parts[0] === '__MACOSX');
}

/** Counts entries and content bytes against the limits, before each is written. */
class Budget {
  private entries = 0;
  private bytes = 0;

  constructor(private readonly limits: BundleLimits) {}

  take(name: string, size: number): void {
    if (++this.entries > this.limits.maxEntries)
      throw tooLarge(`bundle has more than ${this.limits.maxEntries} files and directories`);
    this.bytes += size;
    if (this.bytes > this.limits.maxUnpackedBytes)
      throw tooLarge(
        `bundle unpacks to more than ${this.limits.maxUnpackedBytes} bytes (at ${show(name)})`,
      );
  }
}

/**
 * Writes a tree into a root we created empty. Synchronous per entry, like image/unpack.ts: a
 * few fast syscalls each, cheaper than promise round trips, and the loop still turns between
 * the chunks of an archive.
 */
class TreeWriter {
  files = 0;
  bytes = 0;
  private readonly dirs = new Set<string>(['']);

  constructor(private readonly root: string) {}

  private abs(rel: string): string {
    return rel ? path.join(this.root, rel) : this.root;
  }

  /** Creates `rel` and its missing parents, one component at a time so each gets DIR_MODE. */
  dir(rel: string): void {
    if (this.dirs.has(rel)) return;
    const slash = rel.lastIndexOf('/');
    this.dir(slash === -1 ? '' : rel.slice(0, slash));
    const abs = this.abs(rel);
    const st = fs.lstatSync(abs, { throwIfNoEntry: false });
    if (st && !st.isDirectory())
      throw bad(`bundle entry ${show(rel)} is both a file and a directory`);
    if (!st) {
      fs.mkdirSync(abs);
      // Explicit chmod: mkdir's mode goes through the umask, and the tree must not depend on it.
      fs.chmodSync(abs, DIR_MODE);
    }
    this.dirs.add(rel);
  }

  private create(rel: string): number {
    const slash = rel.lastIndexOf('/');
    this.dir(slash === -1 ? '' : rel.slice(0, slash));
    try {
      return fs.openSync(this.abs(rel), OPEN_NEW, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST')
        throw bad(`bundle entry ${show(rel)} appears more than once`);
      throw err;
    }
  }

  async file(
    rel: string,
    mode: number,
    body: AsyncIterable<Buffer> | Iterable<Buffer>,
  ): Promise<void> {
    const fd = this.create(rel);
    let n = 0;
    try {
      for await (const chunk of body) {
        for (let off = 0; off < chunk.length; ) off += fs.writeSync(fd, chunk, off);
        n += chunk.length;
      }
      fs.fchmodSync(fd, fileMode(mode));
    } finally {
      fs.closeSync(fd);
    }
    this.files++;
    this.bytes += n;
  }

  copy(rel: string, src: string, mode: number): void {
    fs.closeSync(this.create(rel));
    const abs = this.abs(rel);
    fs.copyFileSync(src, abs);
    fs.chmodSync(abs, fileMode(mode));
    this.files++;
    this.bytes += fs.statSync(abs).size;
  }
}

/** Creates destDir (and its parents) if needed; it must be empty, as nothing in it is checked. */
function openDest(destDir: string): void {
  fs.mkdirSync(destDir, { recursive: true });
  if (fs.readdirSync(destDir).length > 0)
    throw new IsolaError('E_INTERNAL', `bundle destination ${destDir} is not empty`);
}

/** The archive format, from its magic bytes. */
export function detectBundleFormat(buf: Buffer): BundleFormat {
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) return 'tar.gz';
  if (buf.length >= 4 && buf[0] === 0x50 && buf[1] === 0x4b) {
    const sig = buf.readUInt32LE(0);
    // A local file header starts an archive; an empty archive is only its end record.
    if (sig === 0x04034b50 || sig === 0x06054b50) return 'zip';
  }
  if (buf.length >= 262 && buf.toString('latin1', 257, 262) === 'ustar') return 'tar';
  throw bad('bundle is not a zip, tar or tar.gz archive');
}

async function* once(buf: Buffer): AsyncGenerator<Buffer> {
  yield buf;
}

async function extractTar(
  buf: Buffer,
  gzipped: boolean,
  out: TreeWriter,
  limits: BundleLimits,
): Promise<void> {
  const budget = new Budget(limits);
  const source = gzipped
    ? openLayerStream('application/vnd.oci.image.layer.v1.tar+gzip', once(buf))
    : once(buf);
  try {
    for await (const { header, body } of readTar(source)) {
      const name = header.path;
      switch (header.type) {
        case 'file': {
          budget.take(name, header.size);
          const rel = entryPath(name, limits);
          if (rel === '') throw bad(`bundle entry ${show(name)} is a file at the root`);
          if (!isSkipped(rel, false)) await out.file(rel, header.mode, body);
          break;
        }
        case 'dir': {
          budget.take(name, 0);
          const rel = entryPath(name, limits);
          if (!isSkipped(rel, false)) out.dir(rel);
          break;
        }
        case 'symlink':
        case 'hardlink':
          throw bad(
            `bundle entry ${show(name)} is a ${header.type === 'symlink' ? 'symbolic' : 'hard'} link; bundles may not contain links (store the file itself)`,
          );
        case 'char':
        case 'block':
        case 'fifo':
          throw bad(
            `bundle entry ${show(name)} is a device or fifo; bundles hold only files and directories`,
          );
        default:
          throw bad(`bundle entry ${show(name)} has a tar entry type bundles do not support`);
      }
    }
  } catch (err) {
    if (err instanceof IsolaError && err.code === 'E_IMAGE_BAD_LAYER') {
      // The readers speak of layers; say what was damaged, with zlib's own words for gzip.
      const why = err.cause instanceof Error ? err.cause.message : err.message;
      throw new IsolaError(
        'E_BAD_BUNDLE',
        `bundle ${gzipped ? 'tar.gz' : 'tar'} archive is damaged: ${why}`,
        { cause: err },
      );
    }
    throw err;
  }
}

async function extractZip(buf: Buffer, out: TreeWriter, limits: BundleLimits): Promise<void> {
  const budget = new Budget(limits);
  const entries = zipEntries(buf, {
    maxEntries: limits.maxEntries,
    maxUnpackedBytes: limits.maxUnpackedBytes,
  });
  for (const e of entries) {
    budget.take(e.name, e.data.length);
    const rel = entryPath(e.name, limits);
    if (isSkipped(rel, true)) continue;
    if (e.type === 'dir') out.dir(rel);
    else if (rel === '') throw bad(`bundle entry ${show(e.name)} is a file at the root`);
    else await out.file(rel, e.mode, [e.data]);
  }
}

/**
 * GitHub's "Download ZIP" and `tar czf app.tgz app/` put everything under one folder; when that
 * folder holds the package.json and the root does not, the folder is the bundle.
 */
function stripSingleTopDir(destDir: string): void {
  const names = fs.readdirSync(destDir);
  if (names.length !== 1) return;
  const top = path.join(destDir, names[0]!);
  if (!fs.lstatSync(top).isDirectory()) return;
  if (!fs.lstatSync(path.join(top, 'package.json'), { throwIfNoEntry: false })?.isFile()) return;
  // Moved aside first: the folder may hold an entry of its own name.
  const aside = path.join(destDir, `.isola-strip-${randomBytes(8).toString('hex')}`);
  fs.renameSync(top, aside);
  for (const n of fs.readdirSync(aside)) fs.renameSync(path.join(aside, n), path.join(destDir, n));
  fs.rmdirSync(aside);
}

/**
 * Unpacks a zip, tar or tar.gz bundle into destDir (created if missing; it must be empty). On
 * failure destDir may hold part of the archive: prepareBundle removes it.
 */
export async function extractBundle(
  buf: Buffer,
  destDir: string,
  limits: Partial<BundleLimits> = {},
): Promise<BundleStats> {
  const lim = withLimits(limits);
  if (buf.length > lim.maxArchiveBytes)
    throw tooLarge(`bundle archive is ${buf.length} bytes, the limit is ${lim.maxArchiveBytes}`);
  const format = detectBundleFormat(buf);
  openDest(destDir);
  const out = new TreeWriter(destDir);
  if (format === 'zip') await extractZip(buf, out, lim);
  else await extractTar(buf, format === 'tar.gz', out, lim);
  stripSingleTopDir(destDir);
  return { files: out.files, bytes: out.bytes };
}

interface TreeItem {
  /** Path relative to the root, posix style. */
  rel: string;
  type: 'file' | 'dir';
  /** Real path of the file or directory to read (a symlink's target, resolved). */
  src: string;
  /** Normalised mode. */
  mode: number;
}

/** lstat, or null when nothing is there (ENOTDIR too: a file where the path wants a folder). */
function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p, { throwIfNoEntry: false }) ?? null;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
    throw err;
  }
}

function isInside(root: string, p: string): boolean {
  return p === root || p.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

function realDir(dir: string): string {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(dir, { throwIfNoEntry: false });
  } catch {
    // ENOTDIR, ELOOP, EACCES: the answer is the same, there is no directory to read.
  }
  if (!st?.isDirectory()) throw bad(`bundle directory ${dir} does not exist or is not a directory`);
  return fs.realpathSync(dir);
}

/**
 * A directory bundle's tree, in a fixed order (children sorted by name, each directory before
 * its contents), under the same limits and rules as an archive. Symlinks are how package
 * managers lay out node_modules, so one that resolves inside the tree stands for its target
 * (copied as a plain file or directory); one that leaves the tree, dangles or loops is refused.
 */
function* walkTree(root: string, limits: BundleLimits): Generator<TreeItem> {
  const realRoot = realDir(root);
  const budget = new Budget(limits);
  function* walk(dir: string, rel: string, ancestors: Set<string>): Generator<TreeItem> {
    for (const name of fs.readdirSync(dir).sort()) {
      if (name === '.git') continue;
      const childRel = rel ? `${rel}/${name}` : name;
      entryPath(childRel, limits);
      let src = path.join(dir, name);
      let st = fs.lstatSync(src);
      if (st.isSymbolicLink()) {
        try {
          src = fs.realpathSync(src);
        } catch (err) {
          throw bad(
            `symlink ${show(childRel)} in the bundle cannot be resolved (${(err as NodeJS.ErrnoException).code})`,
          );
        }
        if (!isInside(realRoot, src))
          throw bad(`symlink ${show(childRel)} points outside the bundle`, { path: childRel });
        st = fs.statSync(src);
      }
      if (st.isDirectory()) {
        if (ancestors.has(src)) throw bad(`symlink ${show(childRel)} makes a loop`);
        budget.take(childRel, 0);
        yield { rel: childRel, type: 'dir', src, mode: DIR_MODE };
        yield* walk(src, childRel, new Set(ancestors).add(src));
      } else if (st.isFile()) {
        budget.take(childRel, st.size);
        yield { rel: childRel, type: 'file', src, mode: fileMode(st.mode) };
      } else throw bad(`${show(childRel)} in the bundle is not a file, directory or symlink`);
    }
  }
  yield* walk(realRoot, '', new Set([realRoot]));
}

/**
 * Copies a directory bundle into destDir (created if missing; it must be empty), with the rules
 * of walkTree. destDir may not lie inside srcDir, or the copy would walk into itself.
 */
export async function copyBundleDir(
  srcDir: string,
  destDir: string,
  limits: Partial<BundleLimits> = {},
): Promise<BundleStats> {
  const lim = withLimits(limits);
  const realSrc = realDir(srcDir);
  openDest(destDir);
  if (isInside(realSrc, fs.realpathSync(destDir)))
    throw new IsolaError('E_INVALID_ARGUMENT', `bundle destination ${destDir} is inside ${srcDir}`);
  const out = new TreeWriter(destDir);
  for (const item of walkTree(realSrc, lim)) {
    if (item.type === 'dir') out.dir(item.rel);
    else out.copy(item.rel, item.src, item.mode);
  }
  return { files: out.files, bytes: out.bytes };
}

function tarEntry(item: TreeItem, data?: Buffer): TarEntryInput {
  return item.type === 'dir'
    ? { path: `${item.rel}/`, type: 'dir', mode: item.mode }
    : { path: item.rel, type: 'file', mode: item.mode, data: data ?? Buffer.alloc(0) };
}

/**
 * A deterministic tar of a directory bundle, for the CLI to upload: walkTree's order and modes,
 * mtime 0, owner 0:0 with no names, and no `.git`. The same tree always gives the same bytes.
 */
export function packDirectory(dir: string, limits: Partial<BundleLimits> = {}): Buffer {
  const entries: TarEntryInput[] = [];
  for (const item of walkTree(dir, withLimits(limits)))
    entries.push(tarEntry(item, item.type === 'file' ? fs.readFileSync(item.src) : undefined));
  return tarBuffer(entries);
}

/**
 * `sha256:<hex>` of packDirectory(dir), hashed as it is produced so the tar is never held whole.
 * Run over a prepared tree, it names the code: the same files give the same digest whether they
 * came as a directory, a zip or a tar.
 */
export function bundleDigest(dir: string, limits: Partial<BundleLimits> = {}): string {
  const hash = createHash('sha256');
  for (const item of walkTree(dir, withLimits(limits))) {
    const data = item.type === 'file' ? fs.readFileSync(item.src) : Buffer.alloc(0);
    hash.update(entryHeader(tarEntry(item, data), data.length));
    hash.update(data);
    // tarBuffer pads each body to the 512-byte block.
    if (data.length % 512) hash.update(Buffer.alloc(512 - (data.length % 512)));
  }
  hash.update(TAR_END);
  return `sha256:${hash.digest('hex')}`;
}

function readPackageJson(dir: string): BundlePackageJson {
  const file = path.join(dir, 'package.json');
  if (!lstatOrNull(file)?.isFile()) throw bad('bundle has no package.json');
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw bad(`package.json is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw bad('package.json is not valid JSON: it must hold an object');
  return parsed as BundlePackageJson;
}

/**
 * The handler named by `field` as a path relative to the bundle root, or a reason it is not
 * one. Node resolves a package's "main" by also trying `.js` and `/index.js`, so we do too.
 */
function resolveHandler(
  root: string,
  field: string,
  value: string,
  nodeStyle: boolean,
): { rel: string } | { why: string } {
  const label = `${field} ${JSON.stringify(value)}`;
  if (value === '' || path.posix.isAbsolute(value) || value.includes('\\') || value.includes('\0'))
    return { why: `${label} is not a relative path` };
  const norm = path.posix.normalize(value);
  if (norm === '..' || norm.startsWith('../')) return { why: `${label} points outside the bundle` };
  const candidates = nodeStyle ? [norm, `${norm}.js`, `${norm}/index.js`] : [norm];
  for (const c of candidates) {
    const abs = path.join(root, c);
    if (!lstatOrNull(abs)?.isFile()) continue;
    // A tree we prepared has no symlinks; a directory handed to us directly might.
    if (!isInside(root, fs.realpathSync(abs))) return { why: `${label} points outside the bundle` };
    return { rel: path.posix.normalize(c) };
  }
  return { why: `${label} is not a file in the bundle` };
}

/** Checks a prepared bundle: package.json parses and names (or implies) a handler file. */
export function validateBundle(dir: string): ValidatedBundle {
  const root = fs.realpathSync(dir);
  const packageJson = readPackageJson(root);
  const noHandler = (why: string): IsolaError =>
    bad(`bundle has no handler: ${why} ${HANDLER_HINT}`);

  const isola = packageJson.isola;
  const configured =
    typeof isola === 'object' && isola !== null && 'handler' in isola
      ? (isola as { handler: unknown }).handler
      : undefined;
  let found: { rel: string } | { why: string };
  if (configured !== undefined) {
    if (typeof configured !== 'string')
      throw noHandler('isola.handler in package.json is not a string');
    found = resolveHandler(root, 'isola.handler', configured, false);
  } else if (packageJson.main !== undefined) {
    if (typeof packageJson.main !== 'string')
      throw noHandler('"main" in package.json is not a string');
    found = resolveHandler(root, 'main', packageJson.main, true);
  } else {
    const first = HANDLER_DEFAULTS.find((n) => lstatOrNull(path.join(root, n))?.isFile());
    found = first ? { rel: first } : { why: `none of ${HANDLER_DEFAULTS.join(', ')} exists` };
  }
  if ('why' in found) throw noHandler(found.why);
  return { handler: found.rel, packageJson };
}

/**
 * Turns an uploaded archive or a local directory into a validated bundle tree at destDir, which
 * must not exist yet. On any failure destDir is removed, so a half-written tree never remains.
 */
export async function prepareBundle(
  input: BundleInput,
  destDir: string,
  limits: Partial<BundleLimits> = {},
): Promise<PreparedBundle> {
  fs.mkdirSync(path.dirname(destDir), { recursive: true });
  try {
    fs.mkdirSync(destDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new IsolaError('E_INTERNAL', `bundle destination ${destDir} already exists`);
    throw err;
  }
  try {
    const stats =
      input.kind === 'dir'
        ? await copyBundleDir(input.path, destDir, limits)
        : await extractBundle(input.data, destDir, limits);
    const { handler } = validateBundle(destDir);
    return { digest: bundleDigest(destDir, limits), handler, ...stats };
  } catch (err) {
    await fs.promises.rm(destDir, { recursive: true, force: true });
    throw err;
  }
}
