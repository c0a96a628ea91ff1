// Applies one OCI layer (an uncompressed tar stream) onto a root directory, as the image spec's
// "changesets" say: entries in order, `.wh.<name>` deletes <name> from lower layers,
// `.wh..wh..opq` empties its directory of everything from lower layers, and an entry replaces
// whatever is at its path (a directory meeting a directory keeps its contents).
//
// Safety: no entry writes outside the root. Names that are absolute or climb above the root are
// rejected; every parent directory is walked with lstat, and a symlink met on the way is
// resolved inside the root as a chroot would (absolute targets from the root, `..` stopping at
// the root), so the write lands inside it; the last component is never followed, it is replaced.
// Device nodes are not created on the host. The walk trusts that nothing else changes the root
// while a layer is applied (the image store applies one layer at a time).
//
// Extended attributes (PAX SCHILY.xattr.*: security.capability, mostly) are gathered while the
// layer is applied and set at its end by one helper process (xattrs.ts); what could not be set is
// counted in `xattrsSkipped`.

import { execFile } from 'node:child_process';
import fs, { type Stats, constants } from 'node:fs';
import { IsolaError } from '../errors.js';
import { type TarHeader, readTar } from './tar-read.js';
import { type XattrRecord, applyXattrs } from './xattrs.js';

export interface UnpackOptions {
  /** Running as root: chown entries; default process.getuid?.() === 0 */
  chown?: boolean;
}

export interface UnpackStats {
  /** Every entry of the layer, whatever became of it. */
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  fifos: number;
  /** `.wh.<name>` markers (whether or not <name> existed). */
  whiteouts: number;
  /** `.wh..wh..opq` markers. */
  opaques: number;
  /** Character and block devices, never created on the host. */
  skippedDevices: number;
  /** Entries of other types (GNU sparse, volume labels) and AUFS `.wh..wh.` metadata. */
  skippedOther: number;
  /** Extended attributes applied. */
  xattrs: number;
  /** Extended attributes not applied (no helper, or the filesystem or namespace refused). */
  xattrsSkipped: number;
  /** Bytes of file content written. */
  bytes: number;
}

/** Symlinks followed while resolving one path; Linux's own limit (MAXSYMLINKS). */
const MAX_SYMLINK_HOPS = 40;
/** File content gathered per writev: few syscalls for big files, bounded memory. */
const WRITE_BATCH_BYTES = 1024 * 1024;
/** Buffers per writev, under IOV_MAX (1024) even when a hostile stream sends tiny chunks. */
const WRITE_BATCH_BUFFERS = 512;
/** Mode of parent directories the layer does not list (containerd does the same). */
const IMPLICIT_DIR_MODE = 0o755;
/** How long `mkfifo` may take; it is one syscall, so this only bounds a wedged system. */
const MKFIFO_TIMEOUT_MS = 10_000;

const WHITEOUT = '.wh.';
const WHITEOUT_META = '.wh..wh.';
const OPAQUE = '.wh..wh..opq';

const OPEN_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

function unsafe(name: string, why: string): IsolaError {
  return new IsolaError(
    'E_IMAGE_UNSAFE_LAYER',
    `unsafe layer entry ${JSON.stringify(name)}: ${why}`,
    {
      details: { path: name },
    },
  );
}

function badEntry(name: string, why: string): IsolaError {
  return new IsolaError('E_IMAGE_BAD_LAYER', `bad layer entry ${JSON.stringify(name)}: ${why}`, {
    details: { path: name },
  });
}

/** Maps a failure while applying `name` to the store's error codes. */
function storeError(err: unknown, name: string): unknown {
  if (err instanceof IsolaError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT')
    return new IsolaError('E_STORE_NO_SPACE', `no space left while writing ${name}`, {
      cause: err,
      details: { path: name },
    });
  if (typeof e?.syscall === 'string')
    return new IsolaError('E_STORE_IO', `cannot apply layer entry ${name}: ${e.message}`, {
      cause: err,
      details: { path: name },
    });
  return err;
}

/**
 * The components of an entry name, relative to the root: `./` and empty components dropped,
 * `..` applied lexically. Absolute names and names climbing above the root are refused.
 */
export function splitEntryName(name: string): string[] {
  if (name.includes('\0')) throw badEntry(name, 'NUL byte in name');
  if (name.startsWith('/')) throw unsafe(name, 'absolute path');
  const parts: string[] = [];
  for (const c of name.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (parts.length === 0) throw unsafe(name, '".." climbs above the root');
      parts.pop();
    } else parts.push(c);
  }
  return parts;
}

/** Whether a relative symlink target, read from a directory `depth` levels below the root, climbs above it. */
export function symlinkEscapes(parentDepth: number, target: string): boolean {
  if (target.startsWith('/')) return false;
  let depth = parentDepth;
  for (const c of target.split('/')) {
    if (c === '..') {
      if (--depth < 0) return true;
    } else if (c !== '' && c !== '.') depth++;
  }
  return false;
}

function lstatOrNull(p: string): Stats | null {
  return fs.lstatSync(p, { throwIfNoEntry: false }) ?? null;
}

function isEexist(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'EEXIST';
}

/** Writes all of `bufs` at the current position (writev may write less than asked). */
function writeAll(fd: number, bufs: Buffer[]): void {
  let rest = bufs;
  while (rest.length) {
    let n = fs.writevSync(fd, rest);
    let i = 0;
    while (i < rest.length && n >= rest[i]!.length) n -= rest[i++]!.length;
    rest = rest.slice(i);
    if (n > 0) rest[0] = rest[0]!.subarray(n);
  }
}

function mkfifo(path: string, mode: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(
      'mkfifo',
      ['-m', (mode & 0o7777).toString(8), '--', path],
      { timeout: MKFIFO_TIMEOUT_MS },
      (err, _stdout, stderr) => {
        if (!err) return resolve();
        const e = new Error(
          `mkfifo: ${String(stderr).trim() || err.message}`,
        ) as NodeJS.ErrnoException;
        e.syscall = 'mkfifo';
        reject(e);
      },
    );
  });
}

/**
 * Per-entry filesystem work uses the synchronous calls on purpose: an entry costs a handful of
 * syscalls of a few microseconds each, and a promise round trip through the libuv thread pool
 * costs several times more (measured: 15,000 small files take 4-5x longer with fs/promises).
 * The event loop still turns between chunks of the tar stream, so it is never held for more
 * than one entry's metadata or one write batch. Removing whole trees stays asynchronous.
 */
class Applier {
  readonly stats: UnpackStats = {
    entries: 0,
    files: 0,
    dirs: 0,
    symlinks: 0,
    hardlinks: 0,
    fifos: 0,
    whiteouts: 0,
    opaques: 0,
    skippedDevices: 0,
    skippedOther: 0,
    xattrs: 0,
    xattrsSkipped: 0,
    bytes: 0,
  };
  /** Extended attributes to apply once the layer is in place (one helper process per layer). */
  readonly xattrs: XattrRecord[] = [];
  /** Absolute paths known to be real directories (not symlinks) in this run. */
  private readonly dirs = new Set<string>();
  /** Lexical parent name -> its resolved components; saves re-walking symlinked parents. */
  private readonly parents = new Map<string, string[]>();
  /** Resolved relative paths this layer created: whiteouts and opaque markers spare them. */
  private readonly created = new Set<string>();
  /** Ancestors of `created` paths: directories this layer added something to. */
  private readonly touched = new Set<string>();
  /**
   * Directory mode and mtime, set last: adding children changes the mtime, a read-only mode
   * would stop them, and a setgid mode would leak into directories made below it.
   */
  private readonly deferred = new Map<string, { mode: number; mtime: number }>();

  constructor(
    private readonly root: string,
    private readonly chown: boolean,
  ) {}

  private abs(parts: readonly string[]): string {
    return parts.length ? `${this.root}/${parts.join('/')}` : this.root;
  }

  private markCreated(rel: string): void {
    this.created.add(rel);
    let p = rel;
    for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/')) {
      p = p.slice(0, i);
      if (this.touched.has(p)) break;
      this.touched.add(p);
    }
  }

  /** A directory or symlink went away: paths resolved through it may now mean something else. */
  private forget(abs: string, wasDir: boolean): void {
    this.dirs.clear();
    this.parents.clear();
    if (!wasDir) return;
    const under = `${abs}/`;
    for (const k of this.deferred.keys())
      if (k === abs || k.startsWith(under)) this.deferred.delete(k);
  }

  /** Removes whatever is at `abs` (never following it); nothing there is fine. */
  private async remove(abs: string, st: Stats | null = lstatOrNull(abs)): Promise<void> {
    if (!st) return;
    if (st.isDirectory()) {
      await fs.promises.rm(abs, { recursive: true, force: true });
      this.forget(abs, true);
    } else {
      fs.unlinkSync(abs);
      if (st.isSymbolicLink()) this.forget(abs, false);
    }
  }

  /**
   * Resolves directory components inside the root, like path lookup under chroot: symlinks are
   * followed but can never leave the root. With `create`, missing directories are made and a
   * non-directory in the way is replaced; without, a missing directory gives null.
   */
  private resolveDir(parts: string[], create: boolean, name: string): string[] | null {
    const key = parts.join('/');
    const known = this.parents.get(key);
    if (known) return known;
    const cur: string[] = [];
    let queue = parts;
    let i = 0;
    let hops = 0;
    while (i < queue.length) {
      const c = queue[i++]!;
      if (c === '' || c === '.') continue;
      if (c === '..') {
        cur.pop();
        continue;
      }
      cur.push(c);
      const abs = this.abs(cur);
      if (this.dirs.has(abs)) continue;
      const st = lstatOrNull(abs);
      if (st?.isDirectory()) {
        this.dirs.add(abs);
        continue;
      }
      if (st?.isSymbolicLink()) {
        if (++hops > MAX_SYMLINK_HOPS) throw unsafe(name, 'too many levels of symbolic links');
        const target = fs.readlinkSync(abs);
        cur.pop();
        if (target.startsWith('/')) cur.length = 0;
        queue = [...target.split('/'), ...queue.slice(i)];
        i = 0;
        continue;
      }
      if (!create) return null;
      // A file (or fifo) where a directory must be: replaced, as a directory entry would.
      if (st) fs.unlinkSync(abs);
      fs.mkdirSync(abs, IMPLICIT_DIR_MODE);
      fs.chmodSync(abs, IMPLICIT_DIR_MODE);
      this.dirs.add(abs);
      this.markCreated(cur.join('/'));
    }
    this.parents.set(key, cur);
    return cur;
  }

  async apply(header: TarHeader, body: AsyncIterable<Buffer>): Promise<void> {
    this.stats.entries++;
    const name = header.path;
    const parts = splitEntryName(name);
    const base = parts.at(-1);
    if (base === undefined) {
      // The root itself ("./"): it can take the layer's metadata but is never replaced.
      if (header.type !== 'dir') throw unsafe(name, 'entry would replace the root');
      try {
        this.setDirMeta(this.root, header);
      } catch (err) {
        throw storeError(err, name);
      }
      this.stats.dirs++;
      return;
    }
    // A `.wh.` directory on the way is whiteout bookkeeping (AUFS hard-link dirs), not content.
    if (parts.some((p, k) => k < parts.length - 1 && p.startsWith(WHITEOUT))) {
      this.stats.skippedOther++;
      return;
    }
    try {
      if (base.startsWith(WHITEOUT)) return await this.whiteout(parts, base, name);
      switch (header.type) {
        case 'char':
        case 'block':
          this.stats.skippedDevices++;
          return;
        case 'other':
          this.stats.skippedOther++;
          return;
        default:
      }
      const dir = this.resolveDir(parts.slice(0, -1), true, name)!;
      const rel = dir.length ? `${dir.join('/')}/${base}` : base;
      const abs = `${this.root}/${rel}`;
      switch (header.type) {
        case 'dir':
          await this.dir(abs, header);
          this.stats.dirs++;
          break;
        case 'file':
          await this.file(abs, header, body);
          this.stats.files++;
          break;
        case 'symlink':
          await this.symlink(abs, dir.length, header);
          this.stats.symlinks++;
          break;
        case 'hardlink':
          await this.hardlink(abs, header);
          this.stats.hardlinks++;
          break;
        case 'fifo':
          await this.remove(abs);
          await mkfifo(abs, header.mode);
          if (this.chown) {
            fs.lchownSync(abs, header.uid, header.gid);
            fs.chmodSync(abs, header.mode);
          }
          fs.lutimesSync(abs, header.mtime, header.mtime);
          this.stats.fifos++;
          break;
      }
      this.markCreated(rel);
      if (Object.keys(header.xattrs).length > 0)
        this.xattrs.push({ path: abs, xattrs: header.xattrs });
    } catch (err) {
      throw storeError(err, name);
    }
  }

  private setDirMeta(abs: string, h: TarHeader): void {
    if (this.chown) fs.lchownSync(abs, h.uid, h.gid);
    // Without root the owner keeps rwx, or later layers (and removing the tree) would fail.
    this.deferred.set(abs, { mode: this.chown ? h.mode : h.mode | 0o700, mtime: h.mtime });
  }

  private async dir(abs: string, h: TarHeader): Promise<void> {
    try {
      fs.mkdirSync(abs, 0o700);
    } catch (err) {
      if (!isEexist(err)) throw err;
      const st = fs.lstatSync(abs);
      if (!st.isDirectory()) {
        await this.remove(abs, st);
        fs.mkdirSync(abs, 0o700);
      }
    }
    this.dirs.add(abs);
    this.setDirMeta(abs, h);
  }

  private async file(abs: string, h: TarHeader, body: AsyncIterable<Buffer>): Promise<void> {
    let fd: number;
    try {
      fd = fs.openSync(abs, OPEN_NEW, 0o600);
    } catch (err) {
      if (!isEexist(err)) throw err;
      // Unlink rather than truncate: the old file may be a hard link shared with other paths.
      await this.remove(abs);
      fd = fs.openSync(abs, OPEN_NEW, 0o600);
    }
    try {
      let batch: Buffer[] = [];
      let batched = 0;
      for await (const chunk of body) {
        batch.push(chunk);
        batched += chunk.length;
        if (batched >= WRITE_BATCH_BYTES || batch.length >= WRITE_BATCH_BUFFERS) {
          writeAll(fd, batch);
          this.stats.bytes += batched;
          batch = [];
          batched = 0;
        }
      }
      if (batch.length) writeAll(fd, batch);
      this.stats.bytes += batched;
      // chown clears setuid/setgid, so the mode comes after it.
      if (this.chown) fs.fchownSync(fd, h.uid, h.gid);
      fs.fchmodSync(fd, h.mode);
      fs.futimesSync(fd, h.mtime, h.mtime);
    } finally {
      fs.closeSync(fd);
    }
  }

  private async symlink(abs: string, depth: number, h: TarHeader): Promise<void> {
    const target = h.linkname;
    if (target === '') throw badEntry(h.path, 'symlink with an empty target');
    if (target.includes('\0')) throw badEntry(h.path, 'NUL byte in symlink target');
    // Absolute targets resolve inside the container's root; a relative one must not climb out.
    if (symlinkEscapes(depth, target))
      throw unsafe(h.path, `symlink target ${JSON.stringify(target)} climbs above the root`);
    try {
      fs.symlinkSync(target, abs);
    } catch (err) {
      if (!isEexist(err)) throw err;
      await this.remove(abs);
      fs.symlinkSync(target, abs);
    }
    if (this.chown) fs.lchownSync(abs, h.uid, h.gid);
    fs.lutimesSync(abs, h.mtime, h.mtime);
  }

  private async hardlink(abs: string, h: TarHeader): Promise<void> {
    const parts = splitEntryName(h.linkname);
    const base = parts.at(-1);
    if (base === undefined) throw badEntry(h.path, 'hard link to the root');
    const dir = this.resolveDir(parts.slice(0, -1), false, h.path);
    const target = dir && this.abs([...dir, base]);
    const st = target && lstatOrNull(target);
    if (!target || !st)
      throw badEntry(h.path, `hard link target ${JSON.stringify(h.linkname)} does not exist`);
    if (st.isDirectory())
      throw badEntry(h.path, `hard link target ${JSON.stringify(h.linkname)} is a directory`);
    if (target === abs) return;
    // link(2) does not follow a symlink at the target: a link to a symlink stays a symlink.
    try {
      fs.linkSync(target, abs);
    } catch (err) {
      if (!isEexist(err)) throw err;
      await this.remove(abs);
      fs.linkSync(target, abs);
    }
  }

  private async whiteout(parts: string[], base: string, name: string): Promise<void> {
    const opaque = base === OPAQUE;
    if (opaque) this.stats.opaques++;
    else if (base.startsWith(WHITEOUT_META)) {
      this.stats.skippedOther++;
      return;
    } else this.stats.whiteouts++;
    const target = base.slice(WHITEOUT.length);
    if (!opaque && (target === '' || target === '.' || target === '..'))
      throw unsafe(name, 'whiteout of an invalid name');
    const dir = this.resolveDir(parts.slice(0, -1), false, name);
    if (!dir) return; // nothing below to hide
    const prefix = dir.length ? `${dir.join('/')}/` : '';
    if (opaque) {
      for (const d of fs.readdirSync(this.abs(dir), { withFileTypes: true }))
        await this.removeLower(`${prefix}${d.name}`);
    } else await this.removeLower(`${prefix}${target}`);
  }

  /** Removes what lower layers put at `rel`, sparing anything this layer created. */
  private async removeLower(rel: string): Promise<void> {
    if (this.created.has(rel)) return;
    const abs = `${this.root}/${rel}`;
    const st = lstatOrNull(abs);
    if (st?.isDirectory() && this.touched.has(rel)) {
      // This layer put something inside: keep that, drop the rest.
      for (const name of fs.readdirSync(abs)) await this.removeLower(`${rel}/${name}`);
      return;
    }
    await this.remove(abs, st);
  }

  /** Directory modes and mtimes, now that nothing more is added to them. */
  finish(): void {
    for (const [abs, { mode, mtime }] of this.deferred) {
      try {
        fs.chmodSync(abs, mode);
        fs.lutimesSync(abs, mtime, mtime);
      } catch (err) {
        throw storeError(err, abs.slice(this.root.length + 1) || '.');
      }
    }
    this.deferred.clear();
  }
}

/**
 * Applies an uncompressed layer tar onto `root`, which holds the lower layers already applied.
 * On error the root is left part-applied (the caller discards it); nothing is ever written
 * outside it.
 */
export async function applyLayer(
  root: string,
  tar: AsyncIterable<Buffer>,
  opts: UnpackOptions = {},
): Promise<UnpackStats> {
  let realRoot: string;
  try {
    realRoot = await fs.promises.realpath(root);
    if (!(await fs.promises.stat(realRoot)).isDirectory())
      throw new IsolaError('E_STORE_IO', `layer root ${root} is not a directory`);
  } catch (err) {
    throw storeError(err, root);
  }
  const applier = new Applier(realRoot, opts.chown ?? process.getuid?.() === 0);
  for await (const { header, body } of readTar(tar)) await applier.apply(header, body);
  applier.finish();
  const x = await applyXattrs(realRoot, applier.xattrs);
  applier.stats.xattrs = x.applied;
  applier.stats.xattrsSkipped = x.failed;
  return applier.stats;
}
