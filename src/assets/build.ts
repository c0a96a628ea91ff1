// Builds the guest assets from Debian packages only: the guest kernel (Debian's cloud kernel
// package), an initramfs with a tiny init that loads the virtio modules, and a read-only guest
// image (ext4, built with `mkfs.ext4 -d`, no root or loop device needed) holding the host's
// Node.js and its libraries, busybox-static and the agent. The result lives in
// <cache>/assets/<digest>/ where the digest covers every input, so a rebuild happens only when an
// input changes; the build writes a temporary folder and renames it, so a crash never leaves a
// half-built asset set that looks complete.
//
// Run: node dist/src/assets/build.js [--force] [--json]

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { IsolaError } from '../errors.js';
import { AGENT_VERSION } from '../protocol/messages.js';
import { type CpioEntry, buildCpio } from './cpio.js';
import { type GuestAssets, REPO_ROOT, cacheDir, currentAssetsFile } from './paths.js';

/** Bump when the build procedure changes in a way the inputs do not show. */
const BUILDER_VERSION = 4;
const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';
/**
 * Built-as-module drivers the boot needs, in load order (dependencies first); they go into the
 * initramfs. Each insmod costs ~30 ms under TCG, so only what the boot path uses is here.
 */
const BOOT_MODULES = [
  'drivers/virtio/virtio_ring',
  'drivers/virtio/virtio',
  'drivers/virtio/virtio_mmio',
  'drivers/char/virtio_console',
  'drivers/block/virtio_blk',
  'fs/overlayfs/overlay',
];
/**
 * Modules for later features (network, vsock, entropy device), shipped in the guest image under
 * /lib/modules/isola/ for the agent to load on demand, in this order.
 */
const EXTRA_MODULES = [
  'drivers/virtio/virtio_balloon',
  'drivers/char/hw_random/virtio-rng',
  'net/core/failover',
  'drivers/net/net_failover',
  'drivers/net/virtio_net',
  'net/vmw_vsock/vsock',
  'net/vmw_vsock/vmw_vsock_virtio_transport_common',
  'net/vmw_vsock/vmw_vsock_virtio_transport',
];
/** Free space left in the guest image beyond its content (the image is mounted read-only). */
const ROOTFS_SLACK_BYTES = 16 * 1024 * 1024;

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const sha256File = (p: string) => sha256(readFileSync(p));

function run(cmd: string, args: string[], opts: { cwd?: string } = {}): string {
  try {
    return execFileSync(cmd, args, {
      cwd: opts.cwd,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new IsolaError(
      'E_ASSETS_BUILD',
      `${cmd} ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`,
      {
        cause: err,
      },
    );
  }
}

/** Resolve the cloud kernel package and make sure its .deb is in the cache. */
function kernelDeb(debDir: string): string {
  mkdirSync(debDir, { recursive: true });
  let pkg: string | undefined;
  try {
    const deps = run('apt-cache', ['depends', KERNEL_META_PACKAGE]);
    pkg = /Depends:\s*(linux-image-\S+)/.exec(deps)?.[1];
  } catch {
    // apt metadata unavailable: fall back to a cached package below.
  }
  const cached = readdirSync(debDir)
    .filter((f) => f.endsWith('.deb'))
    .sort();
  if (pkg) {
    const have = cached.find((f) => f.startsWith(`${pkg}_`));
    if (have) return path.join(debDir, have);
    run('apt-get', ['download', '-q', pkg], { cwd: debDir });
    const got = readdirSync(debDir).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
    if (got) return path.join(debDir, got);
  }
  const last = cached.at(-1);
  if (last) return path.join(debDir, last);
  throw new IsolaError('E_ASSETS_BUILD', `cannot find or download ${KERNEL_META_PACKAGE}`);
}

/** The shared libraries a dynamically linked binary loads, from ldd. */
function sharedLibs(binary: string): string[] {
  const out = run('ldd', [binary]);
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s*\(/.exec(line);
    if (m?.[1]) libs.push(m[1]);
  }
  return libs;
}

function agentFiles(): string[] {
  const dist = path.join(REPO_ROOT, 'dist/src');
  const out: string[] = [];
  for (const dir of ['guest', 'protocol']) {
    for (const f of readdirSync(path.join(dist, dir))) {
      if (f.endsWith('.js') && !f.endsWith('.test.js')) out.push(path.join(dist, dir, f));
    }
  }
  if (out.length === 0)
    throw new IsolaError('E_ASSETS_BUILD', 'agent is not compiled; run npm run build first');
  return out.sort();
}

interface Inputs {
  deb: string;
  busybox: string;
  node: string;
  libs: string[];
  agent: string[];
  initramfsInit: string;
  guestInit: string;
  postBoot: string;
  cinit: string;
  guestctl: string;
}

function collectInputs(debDir: string): Inputs {
  const node = execFileSync('sh', ['-c', 'readlink -f "$(command -v node)"'], {
    encoding: 'utf8',
  }).trim();
  return {
    deb: kernelDeb(debDir),
    busybox: '/bin/busybox',
    node,
    libs: sharedLibs(node),
    agent: agentFiles(),
    initramfsInit: path.join(REPO_ROOT, 'guest-assets/initramfs-init.sh'),
    guestInit: path.join(REPO_ROOT, 'guest-assets/guest-init.sh'),
    postBoot: path.join(REPO_ROOT, 'guest-assets/post-boot.sh'),
    cinit: path.join(REPO_ROOT, 'guest-assets/cinit.c'),
    guestctl: path.join(REPO_ROOT, 'guest-assets/guestctl.c'),
  };
}

function inputsDigest(inp: Inputs): string {
  const h = createHash('sha256');
  h.update(
    `builder ${BUILDER_VERSION} agent ${AGENT_VERSION} modules ${BOOT_MODULES.join(',')} ${EXTRA_MODULES.join(',')}\n`,
  );
  for (const f of [
    inp.deb,
    inp.busybox,
    inp.node,
    ...inp.libs,
    ...inp.agent,
    inp.initramfsInit,
    inp.guestInit,
    inp.postBoot,
    inp.cinit,
    inp.guestctl,
  ]) {
    h.update(
      `${path.relative(REPO_ROOT, f).startsWith('..') ? f : path.relative(REPO_ROOT, f)} ${sha256File(f)}\n`,
    );
  }
  return h.digest('hex');
}

/**
 * The uncompressed kernel (ELF vmlinux with its PVH entry note) from a bzImage: QEMU boots it
 * directly, skipping the in-guest decompression that costs ~0.3 s under TCG and dirties ~30 MiB
 * of guest RAM with the compressed copy. Debian's cloud kernel is LZ4 (legacy frame); gzip, xz
 * and zstd payloads are handled too. Returns false when no payload can be found or unpacked (the
 * bzImage is then used).
 */
function extractVmlinux(bzImage: string, out: string): boolean {
  const data = readFileSync(bzImage);
  const formats: Array<{ magic: number[]; cmd: string[] }> = [
    { magic: [0x02, 0x21, 0x4c, 0x18], cmd: ['lz4', '-dc'] },
    { magic: [0x28, 0xb5, 0x2f, 0xfd], cmd: ['zstd', '-dc'] },
    { magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], cmd: ['xz', '-dc'] },
    { magic: [0x1f, 0x8b, 0x08], cmd: ['gzip', '-dc'] },
  ];
  const setupEnd = ((data[0x1f1] || 4) + 1) * 512;
  for (const f of formats) {
    const at = data.indexOf(Buffer.from(f.magic), setupEnd);
    if (at < 0) continue;
    try {
      // The payload is followed by trailing data the decompressors warn about; the ELF is whole.
      const elf = execFileSync(f.cmd[0]!, f.cmd.slice(1), {
        input: data.subarray(at),
        maxBuffer: 512 * 1024 * 1024,
        stdio: ['pipe', 'pipe', 'ignore'],
      });
      if (elf.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) {
        writeFileSync(out, elf);
        return true;
      }
    } catch (err) {
      const e = err as { stdout?: Buffer };
      if (e.stdout?.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) {
        writeFileSync(out, e.stdout);
        return true;
      }
    }
  }
  return false;
}

function buildInitramfs(
  kernelTree: string,
  release: string,
  busybox: string,
  initScript: string,
): Buffer {
  const modDir = path.join(kernelTree, 'lib/modules', release, 'kernel');
  const entries: CpioEntry[] = [
    { type: 'dir', path: 'bin' },
    { type: 'dir', path: 'dev' },
    { type: 'char', path: 'dev/console', major: 5, minor: 1 },
    { type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { type: 'dir', path: 'proc' },
    { type: 'dir', path: 'sys' },
    { type: 'dir', path: 'mnt' },
    { type: 'dir', path: 'lib' },
    { type: 'dir', path: 'lib/modules' },
    { type: 'file', path: 'bin/busybox', data: readFileSync(busybox), mode: 0o755 },
    { type: 'symlink', path: 'bin/sh', target: 'busybox' },
    { type: 'file', path: 'init', data: readFileSync(initScript), mode: 0o755 },
  ];
  const names: string[] = [];
  for (const m of BOOT_MODULES) {
    const file = path.join(modDir, `${m}.ko`);
    if (!existsSync(file))
      throw new IsolaError('E_ASSETS_BUILD', `kernel module ${m}.ko not in ${release}`);
    const name = path.basename(m);
    names.push(name);
    entries.push({ type: 'file', path: `lib/modules/${name}.ko`, data: readFileSync(file) });
  }
  entries.push({ type: 'file', path: 'modules.list', data: Buffer.from(`${names.join('\n')}\n`) });
  return buildCpio(entries);
}

function stageRootfs(stage: string, inp: Inputs, guestInit: string, kernelModDir: string): void {
  const mk = (p: string, mode = 0o755) => mkdirSync(path.join(stage, p), { recursive: true, mode });
  for (const d of [
    'bin',
    'sbin',
    'usr/bin',
    'usr/sbin',
    'etc',
    'dev',
    'proc',
    'sys',
    'run',
    'var/tmp',
    'root',
    'opt/isola/agent',
    // Mount point of a function's code bundle (read-only block device), as in AWS Lambda.
    'var/task',
  ]) {
    mk(d);
  }
  mk('tmp', 0o1777);
  copyFileSync(inp.busybox, path.join(stage, 'bin/busybox'));
  for (const applet of run(inp.busybox, ['--list-full']).split('\n').filter(Boolean)) {
    const dest = path.join(stage, applet);
    if (existsSync(dest) || applet === 'bin/busybox') continue;
    mkdirSync(path.dirname(dest), { recursive: true });
    symlinkSync(path.relative(path.dirname(dest), path.join(stage, 'bin/busybox')), dest);
  }
  copyFileSync(inp.node, path.join(stage, 'usr/bin/node'));
  for (const lib of inp.libs) {
    const dest = path.join(stage, lib);
    mkdirSync(path.dirname(dest), { recursive: true });
    copyFileSync(lib, dest);
  }
  // On a merged-/usr host, ldd reports /lib/... paths; both must resolve in the guest.
  for (const f of inp.agent) {
    const rel = path.relative(path.join(REPO_ROOT, 'dist'), f);
    mkdirSync(path.dirname(path.join(stage, 'opt/isola/agent', rel)), { recursive: true });
    copyFileSync(f, path.join(stage, 'opt/isola/agent', rel));
  }
  writeFileSync(path.join(stage, 'opt/isola/agent/package.json'), '{"type":"module"}\n');
  copyFileSync(guestInit, path.join(stage, 'opt/isola/init'));
  copyFileSync(inp.postBoot, path.join(stage, 'opt/isola/post-boot'));
  // Our own C, static, built here: the in-guest container init for the OCI runtime, and the
  // clock, hostname, entropy and block-cache calls made after a restore (control port).
  for (const [name, src] of [
    ['cinit', inp.cinit],
    ['guestctl', inp.guestctl],
  ] as const) {
    run('gcc', [
      '-static',
      '-Os',
      '-Wall',
      '-Wextra',
      '-o',
      path.join(stage, 'opt/isola', name),
      src,
    ]);
  }
  mk('lib/modules/isola');
  for (const m of EXTRA_MODULES)
    copyFileSync(
      path.join(kernelModDir, `${m}.ko`),
      path.join(stage, 'lib/modules/isola', `${path.basename(m)}.ko`),
    );
  writeFileSync(
    path.join(stage, 'lib/modules/isola/modules.list'),
    `${EXTRA_MODULES.map((m) => path.basename(m)).join('\n')}\n`,
  );
  writeFileSync(
    path.join(stage, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  );
  writeFileSync(path.join(stage, 'etc/group'), 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n');
  writeFileSync(path.join(stage, 'etc/hostname'), 'isola\n');
  writeFileSync(path.join(stage, 'etc/hosts'), '127.0.0.1 localhost\n');
}

function dirBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += dirBytes(p) + 4096;
    else if (e.isFile()) total += statSync(p).size + 4096;
    else total += 4096;
  }
  return total;
}

export function buildAssets(
  opts: { force?: boolean; log?: (s: string) => void } = {},
): GuestAssets {
  const log = opts.log ?? (() => {});
  const root = path.join(cacheDir(), 'assets');
  mkdirSync(root, { recursive: true });
  const inp = collectInputs(path.join(cacheDir(), 'debs'));
  const digest = inputsDigest(inp);
  const finalDir = path.join(root, digest);
  const manifestPath = path.join(finalDir, 'manifest.json');
  if (!opts.force && existsSync(manifestPath)) {
    const assets = JSON.parse(readFileSync(manifestPath, 'utf8')) as GuestAssets;
    writeCurrent(assets);
    log(`guest assets up to date: ${digest.slice(0, 12)}`);
    return assets;
  }
  log(`building guest assets ${digest.slice(0, 12)} from ${path.basename(inp.deb)}`);
  const tmp = `${finalDir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const kernelTree = path.join(tmp, 'kernel-pkg');
    run('dpkg', ['-x', inp.deb, kernelTree]);
    const vmlinuz = readdirSync(path.join(kernelTree, 'boot')).find((f) =>
      f.startsWith('vmlinuz-'),
    );
    if (!vmlinuz) throw new IsolaError('E_ASSETS_BUILD', `no vmlinuz in ${inp.deb}`);
    const release = vmlinuz.slice('vmlinuz-'.length);
    copyFileSync(path.join(kernelTree, 'boot', vmlinuz), path.join(tmp, 'vmlinuz'));
    const haveElf = extractVmlinux(path.join(tmp, 'vmlinuz'), path.join(tmp, 'vmlinux'));
    if (!haveElf) log('could not unpack vmlinux from the bzImage; booting the compressed kernel');
    writeFileSync(
      path.join(tmp, 'initrd.img'),
      buildInitramfs(kernelTree, release, inp.busybox, inp.initramfsInit),
    );

    const stage = path.join(tmp, 'rootfs-stage');
    stageRootfs(stage, inp, inp.guestInit, path.join(kernelTree, 'lib/modules', release, 'kernel'));
    rmSync(kernelTree, { recursive: true, force: true });
    const sizeBytes =
      Math.ceil((dirBytes(stage) * 1.1 + ROOTFS_SLACK_BYTES) / (1024 * 1024)) * 1024 * 1024;
    run('mkfs.ext4', [
      '-q',
      '-F',
      '-L',
      'isola-guest',
      '-O',
      '^has_journal',
      '-E',
      'root_owner=0:0',
      '-d',
      stage,
      path.join(tmp, 'rootfs.ext4'),
      `${sizeBytes / 1024}k`,
    ]);
    rmSync(stage, { recursive: true, force: true });

    const file = (name: string) => {
      const p = path.join(finalDir, name);
      const tp = path.join(tmp, name);
      return { path: p, sha256: sha256File(tp), bytes: statSync(tp).size };
    };
    const files = {
      kernel: file(haveElf ? 'vmlinux' : 'vmlinuz'),
      initrd: file('initrd.img'),
      rootfs: file('rootfs.ext4'),
    };
    const assets: GuestAssets = {
      digest,
      kernel: files.kernel.path,
      initrd: files.initrd.path,
      rootfs: files.rootfs.path,
      kernelRelease: release,
      files,
      builtAt: new Date().toISOString(),
    };
    writeFileSync(path.join(tmp, 'manifest.json'), `${JSON.stringify(assets, null, 2)}\n`);
    rmSync(finalDir, { recursive: true, force: true });
    renameSync(tmp, finalDir);
    writeCurrent(assets);
    gcOldAssets(root, digest);
    log(`guest assets built: ${digest.slice(0, 12)} (kernel ${release})`);
    return assets;
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

function writeCurrent(assets: GuestAssets): void {
  const file = currentAssetsFile();
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(assets, null, 2)}\n`);
  renameSync(tmp, file);
}

/** Keep the current asset set and the newest other one (a running sandbox may still use it). */
function gcOldAssets(root: string, keep: string): void {
  const dirs = readdirSync(root)
    .filter((d) => /^[0-9a-f]{64}$/.test(d) && d !== keep)
    .map((d) => ({ d, t: statSync(path.join(root, d)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const { d } of dirs.slice(1)) rmSync(path.join(root, d), { recursive: true, force: true });
  // Leftovers of builds that crashed.
  for (const d of readdirSync(root)) {
    const m = /\.tmp-(\d+)$/.exec(d);
    if (m && !pidAlive(Number(m[1]))) rmSync(path.join(root, d), { recursive: true, force: true });
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    const assets = buildAssets({
      force: process.argv.includes('--force'),
      log: (s) => console.error(`[assets] ${s}`),
    });
    if (process.argv.includes('--json')) console.log(JSON.stringify(assets, null, 2));
  } catch (err) {
    console.error(`[assets] ${(err as Error).message}`);
    process.exit(3);
  }
}
