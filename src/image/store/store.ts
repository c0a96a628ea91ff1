// The content-addressed image store.
//
//   <dir>/blobs/sha256/<hex>   complete, verified blobs only (written elsewhere, then renamed in)
//   <dir>/ingest/<hex>.partial downloads in progress (resumable; never mistaken for a blob)
//   <dir>/rootfs/<hex>.ext4    root filesystem images built from images (by manifest digest)
//   <dir>/tmp/                 scratch space (unpacking, building), cleared of dead owners' files
//   <dir>/index.db             SQLite (WAL): image names, leases, ingest owners
//
// Safety across processes comes from SQLite's write lock: every decision that must not race
// with garbage collection ("is this blob there? then I hold it") happens in an IMMEDIATE
// transaction, and gc deletes files inside one. A process holds what it is working on through a
// lease (its pid and the digests); leases of dead processes are ignored and removed.
// Crash safety: a blob file exists under blobs/ only after its bytes were verified, fsynced and
// renamed into place; image records are written only after all their blobs exist.

import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  createReadStream,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { IsolaError } from '../../errors.js';
import { parseDigest } from '../reference.js';
import { storeError } from '../registry/client.js';

export interface ImageRecord {
  /** Fully qualified name (`registry/repo:tag`, or `registry/repo@digest` when pulled by digest). */
  name: string;
  /** What the reference resolved to at the source: an index or a manifest digest. */
  digest: string;
  /** The image manifest used (the platform's manifest when `digest` is an index). */
  manifestDigest: string;
  /** The image config digest: the image id. */
  configDigest: string;
  indexDigest: string | null;
  platform: string;
  /** Config plus compressed layers, bytes. */
  size: number;
  /** From the image config, when it says. */
  created: string | null;
  source: 'registry' | 'import';
  addedAt: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS images (
  name TEXT PRIMARY KEY,
  digest TEXT NOT NULL,
  manifest_digest TEXT NOT NULL,
  config_digest TEXT NOT NULL,
  index_digest TEXT,
  platform TEXT NOT NULL,
  size INTEGER NOT NULL,
  created TEXT,
  source TEXT NOT NULL,
  added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
  id TEXT PRIMARY KEY,
  pid INTEGER NOT NULL,
  host TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lease_blobs (
  lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
  digest TEXT NOT NULL,
  PRIMARY KEY (lease_id, digest)
);
CREATE TABLE IF NOT EXISTS ingests (
  digest TEXT PRIMARY KEY,
  lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE
);
PRAGMA user_version = 1;
`;

interface ImageRow {
  name: string;
  digest: string;
  manifest_digest: string;
  config_digest: string;
  index_digest: string | null;
  platform: string;
  size: number;
  created: string | null;
  source: 'registry' | 'import';
  added_at: string;
}

function toRecord(r: ImageRow): ImageRecord {
  return {
    name: r.name,
    digest: r.digest,
    manifestDigest: r.manifest_digest,
    configDigest: r.config_digest,
    indexDigest: r.index_digest,
    platform: r.platform,
    size: r.size,
    created: r.created,
    source: r.source,
    addedAt: r.added_at,
  };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** fsync a file (or directory) by path. */
function fsyncPath(p: string): void {
  const fd = openSync(p, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Map SQLite and fs failures to store errors. */
function wrap<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof IsolaError) throw err;
    const e = err as NodeJS.ErrnoException & { code?: string };
    if (e.code === 'SQLITE_FULL' || e.code === 'ENOSPC')
      throw new IsolaError('E_STORE_NO_SPACE', `no space left in the image store (${what})`, {
        cause: err,
      });
    throw new IsolaError('E_STORE_IO', `image store: ${what}: ${e.message}`, { cause: err });
  }
}

export function defaultStoreDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.ISOLA_STORE) return path.resolve(env.ISOLA_STORE);
  const base = env.XDG_DATA_HOME ?? path.join(os.homedir(), '.local/share');
  return path.join(base, 'isola/images');
}

export class Lease {
  constructor(
    readonly id: string,
    private readonly store: ImageStore,
  ) {}
  /** Hold more digests. */
  add(digests: string[]): void {
    this.store.addToLease(this.id, digests);
  }
  release(): void {
    this.store.releaseLease(this.id);
  }
}

export class ImageStore {
  readonly dir: string;
  private readonly db: Database.Database;

  private constructor(dir: string) {
    this.dir = dir;
    wrap('open', () => {
      for (const d of ['blobs/sha256', 'ingest', 'rootfs', 'tmp'])
        mkdirSync(path.join(dir, d), { recursive: true });
    });
    this.db = wrap('open the index', () => {
      const db = new Database(path.join(dir, 'index.db'), { timeout: 60_000 });
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      return db;
    });
    wrap('migrate', () => {
      if ((this.db.pragma('user_version', { simple: true }) as number) < 1) this.db.exec(SCHEMA);
    });
  }

  static open(dir: string = defaultStoreDir()): ImageStore {
    return new ImageStore(path.resolve(dir));
  }

  close(): void {
    this.db.close();
  }

  /** Run fn holding the store's write lock (SQLite IMMEDIATE transaction). */
  locked<T>(what: string, fn: () => T): T {
    return wrap(what, () => this.db.transaction(fn).immediate());
  }

  // --- blobs ---

  blobPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return path.join(this.dir, 'blobs', algorithm, hex);
  }

  hasBlob(digest: string): boolean {
    return existsSync(this.blobPath(digest));
  }

  blobSize(digest: string): number {
    return wrap(`stat ${digest}`, () => statSync(this.blobPath(digest)).size);
  }

  /** Read a (small) blob and check it still matches its digest. */
  readBlob(digest: string): Buffer {
    let bytes: Buffer;
    try {
      bytes = readFileSync(this.blobPath(digest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw new IsolaError('E_IMAGE_NOT_FOUND', `blob ${digest} is not in the store`);
      throw storeError(err as NodeJS.ErrnoException, this.blobPath(digest));
    }
    const { algorithm } = parseDigest(digest);
    const got = `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
    if (got !== digest)
      throw new IsolaError('E_STORE_IO', `stored blob ${digest} is damaged (content is ${got})`);
    return bytes;
  }

  /** Verify and store a blob held in memory (manifests, configs). */
  putBlob(digest: string, bytes: Buffer): void {
    const { algorithm } = parseDigest(digest);
    const got = `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
    if (got !== digest) {
      throw new IsolaError(
        'E_IMAGE_DIGEST_MISMATCH',
        `content does not match its digest: expected ${digest}, got ${got}`,
        {
          details: { expected: digest, actual: got },
        },
      );
    }
    if (this.hasBlob(digest)) return;
    const tmp = path.join(
      this.dir,
      'tmp',
      `${parseDigest(digest).hex}.${process.pid}.${randomBytes(4).toString('hex')}`,
    );
    try {
      writeFileSync(tmp, bytes, { flag: 'wx', mode: 0o644 });
      fsyncPath(tmp);
      renameSync(tmp, this.blobPath(digest));
    } catch (err) {
      rmSync(tmp, { force: true });
      throw storeError(err as NodeJS.ErrnoException, this.blobPath(digest));
    }
  }

  /**
   * Verify a file against `digest` and store it. `move` renames the file when it lives on the
   * store's filesystem (an import's scratch copy); otherwise it is copied.
   */
  async putBlobFile(digest: string, file: string, move: boolean): Promise<number> {
    const { algorithm, hex } = parseDigest(digest);
    const hash = createHash(algorithm);
    let size = 0;
    try {
      for await (const c of createReadStream(file)) {
        hash.update(c as Buffer);
        size += (c as Buffer).length;
      }
    } catch (err) {
      throw storeError(err as NodeJS.ErrnoException, file);
    }
    const got = `${algorithm}:${hash.digest('hex')}`;
    if (got !== digest) {
      throw new IsolaError(
        'E_IMAGE_DIGEST_MISMATCH',
        `${file} does not match its digest: expected ${digest}, got ${got}`,
        {
          details: { expected: digest, actual: got },
        },
      );
    }
    if (this.hasBlob(digest)) return size;
    const tmp = path.join(
      this.dir,
      'tmp',
      `${hex}.${process.pid}.${randomBytes(4).toString('hex')}`,
    );
    try {
      if (move) renameSync(file, tmp);
      else copyFileSync(file, tmp);
      fsyncPath(tmp);
      renameSync(tmp, this.blobPath(digest));
    } catch (err) {
      rmSync(tmp, { force: true });
      throw storeError(err as NodeJS.ErrnoException, this.blobPath(digest));
    }
    return size;
  }

  /** Where a download of this digest accumulates (resumable). */
  ingestPath(digest: string): string {
    return path.join(this.dir, 'ingest', `${parseDigest(digest).hex}.partial`);
  }

  /**
   * Take ownership of the ingest of `digest` for this lease. Returns 'present' when the blob is
   * already complete, 'busy' when a live process is downloading it, 'owned' when we may.
   */
  claimIngest(lease: Lease, digest: string): 'present' | 'busy' | 'owned' {
    return this.locked('claim ingest', () => {
      this.addToLeaseUnlocked(lease.id, [digest]);
      if (this.hasBlob(digest)) return 'present';
      const row = this.db
        .prepare(
          'SELECT i.lease_id, l.pid, l.host FROM ingests i JOIN leases l ON l.id = i.lease_id WHERE i.digest = ?',
        )
        .get(digest) as { lease_id: string; pid: number; host: string } | undefined;
      if (row && row.lease_id !== lease.id && row.host === os.hostname() && pidAlive(row.pid))
        return 'busy';
      this.db
        .prepare('INSERT OR REPLACE INTO ingests (digest, lease_id) VALUES (?, ?)')
        .run(digest, lease.id);
      return 'owned';
    });
  }

  /** Move a verified partial download into place (fsync, rename, fsync the directory). */
  commitIngest(lease: Lease, digest: string): void {
    const partial = this.ingestPath(digest);
    const final = this.blobPath(digest);
    try {
      fsyncPath(partial);
      renameSync(partial, final);
      fsyncPath(path.dirname(final));
    } catch (err) {
      throw storeError(err as NodeJS.ErrnoException, final);
    }
    this.locked('finish ingest', () => {
      this.db
        .prepare('DELETE FROM ingests WHERE digest = ? AND lease_id = ?')
        .run(digest, lease.id);
    });
  }

  /** Give up an ingest (the partial file stays for a later resume unless `discard`). */
  abandonIngest(lease: Lease, digest: string, discard: boolean): void {
    if (discard) rmSync(this.ingestPath(digest), { force: true });
    this.locked('abandon ingest', () => {
      this.db
        .prepare('DELETE FROM ingests WHERE digest = ? AND lease_id = ?')
        .run(digest, lease.id);
    });
  }

  // --- leases ---

  lease(digests: string[] = []): Lease {
    const id = `${process.pid}-${randomBytes(6).toString('hex')}`;
    this.locked('create lease', () => {
      this.db
        .prepare('INSERT INTO leases (id, pid, host, created_at) VALUES (?, ?, ?, ?)')
        .run(id, process.pid, os.hostname(), new Date().toISOString());
      this.addToLeaseUnlocked(id, digests);
    });
    return new Lease(id, this);
  }

  addToLease(id: string, digests: string[]): void {
    this.locked('extend lease', () => this.addToLeaseUnlocked(id, digests));
  }

  private addToLeaseUnlocked(id: string, digests: string[]): void {
    const ins = this.db.prepare(
      'INSERT OR IGNORE INTO lease_blobs (lease_id, digest) VALUES (?, ?)',
    );
    for (const d of digests) ins.run(id, d);
  }

  /** Pids of other live processes holding any of these digests (a running container, a pull). */
  holders(digests: string[]): number[] {
    const rows = wrap('read leases', () =>
      this.db
        .prepare(
          `SELECT DISTINCT l.pid, l.host FROM leases l JOIN lease_blobs b ON b.lease_id = l.id
           WHERE b.digest IN (${digests.map(() => '?').join(',')})`,
        )
        .all(...digests),
    ) as Array<{ pid: number; host: string }>;
    return rows
      .filter((r) => r.pid !== process.pid && r.host === os.hostname() && pidAlive(r.pid))
      .map((r) => r.pid);
  }

  releaseLease(id: string): void {
    this.locked('release lease', () => {
      this.db.prepare('DELETE FROM leases WHERE id = ?').run(id);
    });
  }

  // --- images ---

  putImage(rec: ImageRecord): void {
    this.locked('record image', () => {
      for (const d of [rec.digest, rec.manifestDigest, rec.configDigest]) {
        if (!this.hasBlob(d))
          throw new IsolaError('E_STORE_IO', `cannot record ${rec.name}: blob ${d} is missing`);
      }
      this.db
        .prepare(
          `INSERT OR REPLACE INTO images (name, digest, manifest_digest, config_digest, index_digest, platform, size, created, source, added_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          rec.name,
          rec.digest,
          rec.manifestDigest,
          rec.configDigest,
          rec.indexDigest,
          rec.platform,
          rec.size,
          rec.created,
          rec.source,
          rec.addedAt,
        );
    });
  }

  getImage(name: string): ImageRecord | undefined {
    const r = wrap('read', () =>
      this.db.prepare('SELECT * FROM images WHERE name = ?').get(name),
    ) as ImageRow | undefined;
    return r ? toRecord(r) : undefined;
  }

  listImages(): ImageRecord[] {
    return (
      wrap('list', () => this.db.prepare('SELECT * FROM images ORDER BY name').all()) as ImageRow[]
    ).map(toRecord);
  }

  /** Images whose manifest, config or top-level digest starts with `prefix` (an id lookup). */
  findByDigestPrefix(prefix: string): ImageRecord[] {
    const p = prefix.includes(':') ? prefix : `sha256:${prefix}`;
    return (
      wrap('find', () =>
        this.db
          .prepare(
            'SELECT * FROM images WHERE substr(digest, 1, ?) = ? OR substr(manifest_digest, 1, ?) = ? OR substr(config_digest, 1, ?) = ?',
          )
          .all(p.length, p, p.length, p, p.length, p),
      ) as ImageRow[]
    ).map(toRecord);
  }

  removeImage(name: string): boolean {
    return this.locked(
      'remove image',
      () => this.db.prepare('DELETE FROM images WHERE name = ?').run(name).changes > 0,
    );
  }

  // --- root filesystem images ---

  rootfsPath(manifestDigest: string): string {
    return path.join(this.dir, 'rootfs', `${parseDigest(manifestDigest).hex}.ext4`);
  }

  /** A private scratch directory under tmp/, named so gc can tell whether its owner lives. */
  scratch(kind: string): string {
    const d = path.join(
      this.dir,
      'tmp',
      `${kind}.${process.pid}.${randomBytes(6).toString('hex')}`,
    );
    wrap('scratch dir', () => mkdirSync(d, { recursive: true }));
    return d;
  }

  // --- garbage collection ---

  /**
   * Remove blobs no image and no live lease reaches, rootfs images of removed images, partial
   * downloads and scratch files of dead processes. `reach(digest)` lists the blobs a manifest or
   * index references (supplied by the caller, which knows manifest formats).
   */
  gc(reach: (bytes: Buffer) => string[]): {
    blobs: number;
    bytes: number;
    rootfs: number;
    partials: number;
  } {
    return this.locked('garbage collection', () => {
      // Leases of dead processes hold nothing.
      const leases = this.db.prepare('SELECT id, pid, host FROM leases').all() as Array<{
        id: string;
        pid: number;
        host: string;
      }>;
      for (const l of leases) {
        if (l.host === os.hostname() && !pidAlive(l.pid))
          this.db.prepare('DELETE FROM leases WHERE id = ?').run(l.id);
      }
      const keep = new Set<string>();
      const roots = new Set<string>();
      for (const r of this.db
        .prepare('SELECT digest, manifest_digest, config_digest FROM images')
        .all() as Array<{
        digest: string;
        manifest_digest: string;
        config_digest: string;
      }>) {
        roots.add(r.digest);
        roots.add(r.manifest_digest);
        roots.add(r.config_digest);
      }
      for (const r of this.db.prepare('SELECT digest FROM lease_blobs').all() as Array<{
        digest: string;
      }>)
        roots.add(r.digest);
      const stack = [...roots];
      while (stack.length) {
        const d = stack.pop() as string;
        if (keep.has(d)) continue;
        keep.add(d);
        let bytes: Buffer | undefined;
        try {
          const p = this.blobPath(d);
          if (statSync(p).size < 4 * 1024 * 1024) bytes = readFileSync(p);
        } catch {}
        if (bytes && bytes[0] === 0x7b) {
          try {
            for (const child of reach(bytes)) stack.push(child);
          } catch {}
        }
      }
      let blobs = 0;
      let freed = 0;
      const blobDir = path.join(this.dir, 'blobs', 'sha256');
      for (const hex of readdirSync(blobDir)) {
        if (keep.has(`sha256:${hex}`)) continue;
        const p = path.join(blobDir, hex);
        try {
          freed += statSync(p).size;
          unlinkSync(p);
          blobs++;
        } catch {}
      }
      let rootfs = 0;
      // Root filesystems of named images, and of images a live process holds (a running sandbox).
      const manifests = new Set(
        (
          this.db
            .prepare(
              'SELECT manifest_digest AS d FROM images UNION SELECT digest AS d FROM lease_blobs',
            )
            .all() as Array<{ d: string }>
        ).map((r) => r.d.split(':')[1] ?? ''),
      );
      for (const f of readdirSync(path.join(this.dir, 'rootfs'))) {
        const hex = f.split('.')[0] ?? '';
        if (manifests.has(hex) && f.endsWith('.ext4')) continue;
        // In-progress builds are named <hex>.ext4.<pid>.<rand>; keep those of live builders.
        const pid = Number(f.split('.')[2]);
        if (Number.isInteger(pid) && pidAlive(pid)) continue;
        try {
          freed += statSync(path.join(this.dir, 'rootfs', f)).size;
        } catch {}
        rmSync(path.join(this.dir, 'rootfs', f), { force: true, recursive: true });
        rootfs++;
      }
      let partials = 0;
      const owned = new Set(
        (this.db.prepare('SELECT digest FROM ingests').all() as Array<{ digest: string }>).map(
          (r) => parseDigest(r.digest).hex,
        ),
      );
      for (const f of readdirSync(path.join(this.dir, 'ingest'))) {
        if (owned.has(f.split('.')[0] ?? '')) continue;
        rmSync(path.join(this.dir, 'ingest', f), { force: true });
        partials++;
      }
      this.db.prepare('DELETE FROM ingests WHERE lease_id NOT IN (SELECT id FROM leases)').run();
      for (const f of readdirSync(path.join(this.dir, 'tmp'))) {
        const pid = Number(f.split('.')[f.split('.').length - 2]);
        if (Number.isInteger(pid) && pidAlive(pid)) continue;
        rmSync(path.join(this.dir, 'tmp', f), { force: true, recursive: true });
      }
      return { blobs, bytes: freed, rootfs, partials };
    });
  }
}
