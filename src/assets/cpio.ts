// A writer for the "newc" cpio format the Linux kernel unpacks as an initramfs. Pure: entries in,
// bytes out. Writing it ourselves avoids needing root for device nodes (/dev/console must exist
// before init runs) and makes the archive byte-for-byte reproducible (fixed mtimes and inodes).

export type CpioEntry =
  | { type: 'file'; path: string; data: Buffer; mode?: number }
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char'; path: string; major: number; minor: number; mode?: number };

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

const hex8 = (n: number) => n.toString(16).padStart(8, '0');
const pad4 = (n: number) => (4 - (n % 4)) % 4;

function header(opts: {
  ino: number;
  mode: number;
  nlink: number;
  size: number;
  rdevMajor: number;
  rdevMinor: number;
  nameLen: number;
}): string {
  return [
    '070701',
    hex8(opts.ino),
    hex8(opts.mode),
    hex8(0), // uid
    hex8(0), // gid
    hex8(opts.nlink),
    hex8(0), // mtime: fixed for reproducibility
    hex8(opts.size),
    hex8(0), // dev major
    hex8(0), // dev minor
    hex8(opts.rdevMajor),
    hex8(opts.rdevMinor),
    hex8(opts.nameLen),
    hex8(0), // checksum (unused by newc)
  ].join('');
}

export function buildCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (hdr: string, name: string, data: Buffer) => {
    const nameBuf = Buffer.from(`${name}\0`, 'utf8');
    const h = Buffer.from(hdr, 'ascii');
    parts.push(h, nameBuf, Buffer.alloc(pad4(h.length + nameBuf.length)));
    if (data.length > 0) parts.push(data, Buffer.alloc(pad4(data.length)));
  };
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (name === '' || name.split('/').includes('..')) throw new Error(`bad cpio path ${e.path}`);
    const nameLen = Buffer.byteLength(name) + 1;
    let mode: number;
    let data: Buffer = Buffer.alloc(0);
    let rdevMajor = 0;
    let rdevMinor = 0;
    switch (e.type) {
      case 'file':
        mode = S_IFREG | (e.mode ?? 0o644);
        data = e.data;
        break;
      case 'dir':
        mode = S_IFDIR | (e.mode ?? 0o755);
        break;
      case 'symlink':
        mode = S_IFLNK | 0o777;
        data = Buffer.from(e.target, 'utf8');
        break;
      case 'char':
        mode = S_IFCHR | (e.mode ?? 0o600);
        rdevMajor = e.major;
        rdevMinor = e.minor;
        break;
    }
    push(
      header({
        ino: ino++,
        mode,
        nlink: e.type === 'dir' ? 2 : 1,
        size: data.length,
        rdevMajor,
        rdevMinor,
        nameLen,
      }),
      name,
      data,
    );
  }
  const trailer = 'TRAILER!!!';
  push(
    header({
      ino: 0,
      mode: 0,
      nlink: 1,
      size: 0,
      rdevMajor: 0,
      rdevMinor: 0,
      nameLen: trailer.length + 1,
    }),
    trailer,
    Buffer.alloc(0),
  );
  return Buffer.concat(parts);
}
