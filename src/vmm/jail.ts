// The VMM's jail (native/isola-jail.c does the work; this is its plan, as pure data, and the
// file preparation it needs). Each QEMU process runs:
//   - as its own unprivileged user (a uid/gid from JAIL_ID_RANGE, unique in this process),
//   - in new mount, PID, IPC, UTS and network namespaces,
//   - on a minimal root: a read-only tmpfs holding QEMU's binary, the shared libraries it and its
//     accelerator modules load, its module and firmware folders (vmmRuntime), the guest kernel,
//     initramfs and images, the sandbox's own folder (sockets) and drives, its
//     memory file, and the device nodes it needs (/dev/null, /dev/kvm under KVM) - nothing else
//     of the host exists there; its tap device comes as an open descriptor;
//   - with QEMU's seccomp filter on (qemu-args.ts `seccomp`) and the sandbox's cgroup limits.
// Only isola-jail runs as root, and only until the exec. Without root the jail is not possible:
// QEMU then runs unconfined apart from its cgroups (isola doctor says so).

import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  openSync,
  readSync,
  readdirSync,
  realpathSync,
  statSync,
} from 'node:fs';
import path from 'node:path';
import { IsolaError } from '../errors.js';
import type { VmDescription } from './qemu-args.js';
import { qemuBinaryPath } from './qemu-process.js';

/**
 * Jail every VMM when running as root, unless ISOLA_JAIL=0 (debugging only). Without root there
 * is no jail: QEMU runs as the caller, in its cgroups.
 */
export function jailEnabled(): boolean {
  return process.getuid?.() === 0 && process.env.ISOLA_JAIL !== '0';
}

/** Where the per-sandbox uids/gids come from: far above any real account or subuid range. */
export const JAIL_ID_RANGE = { base: 1_600_000_000, size: 1_000_000 } as const;

export type BindKind = 'ro' | 'ro-exec' | 'rw' | 'dev';

export interface Bind {
  path: string;
  kind: BindKind;
}

export interface JailPlan {
  /** Empty folder the jail's tmpfs root is mounted on (in the jail's own mount namespace). */
  root: string;
  uid: number;
  gid: number;
  /** Supplementary groups (the kvm group, to open /dev/kvm). */
  groups: number[];
  binds: Bind[];
  /** A network namespace of its own (always; with a network it gets an uplink). */
  netns: boolean;
  /** Or join this one (a container engine's pod namespace) instead. */
  netnsPath?: string;
  /** Tap device the helper creates in the namespace and hands to the VMM as fd 3 (TAP_FD). */
  tap?: string;
  /** A sealed snapshot memory (/proc/<holder>/fd/<n>) the VMM gets as fd 4 (sealed-memory.ts). */
  memfdFrom?: string;
}

/** The descriptor a jailed VMM finds its tap device on. */
export const TAP_FD = 3;

const usedIds = new Set<number>();

/** A uid (= gid) no other live sandbox of this process has. */
export function allocateJailId(rand: () => number = Math.random): number {
  for (;;) {
    const id = JAIL_ID_RANGE.base + Math.floor(rand() * JAIL_ID_RANGE.size);
    if (!usedIds.has(id)) {
      usedIds.add(id);
      return id;
    }
  }
}

export function releaseJailId(id: number): void {
  usedIds.delete(id);
}

/** The jail helper's argument list for a plan (before `--` and the VMM's argv). */
export function jailArgs(
  plan: JailPlan | null,
  opts: { cgroupProcs: string[]; pdeathsig: boolean },
): string[] {
  const args: string[] = [];
  if (opts.pdeathsig) args.push('--pdeathsig');
  for (const f of opts.cgroupProcs) args.push('--cgroup-procs', f);
  if (!plan) return args;
  args.push('--ns', '--root', plan.root);
  if (plan.netnsPath) args.push('--netns-path', plan.netnsPath);
  else if (plan.netns) args.push('--netns');
  for (const b of plan.binds) args.push(`--${b.kind}`, b.path);
  args.push('--uid', String(plan.uid), '--gid', String(plan.gid));
  for (const g of plan.groups) args.push('--group', String(g));
  if (plan.tap) args.push('--tap', plan.tap);
  if (plan.memfdFrom) args.push('--memfd-from', plan.memfdFrom);
  return args;
}

function under(p: string, dir: string): boolean {
  return p === dir || p.startsWith(`${dir}/`);
}

/**
 * What the VMM of `vm` must see. `sandboxDir` holds its sockets; `backing(p)` lists the backing
 * files of a qcow2 image (read-only). Paths under an earlier folder bind are covered by it.
 */
export function jailBinds(
  vm: VmDescription,
  sandboxDir: string,
  backing: (p: string) => string[] = qcow2BackingChain,
  runtime: Bind[] = vmmRuntime(),
): Bind[] {
  const out: Bind[] = [
    ...runtime,
    { path: sandboxDir, kind: 'rw' },
    { path: '/dev/null', kind: 'dev' },
  ];
  const add = (p: string, kind: BindKind) => {
    const abs = path.resolve(p);
    if (out.some((b) => b.path === abs || (b.kind !== 'dev' && under(abs, b.path)))) return;
    out.push({ path: abs, kind });
  };
  add(vm.kernel, 'ro');
  add(vm.initrd, 'ro');
  if (!vm.probe) {
    add(vm.rootfs, 'ro');
    for (const d of vm.drives) {
      add(d.path, d.readonly ? 'ro' : 'rw');
      if (d.format === 'qcow2') for (const b of backing(d.path)) add(b, 'ro');
    }
  }
  // A sealed memory comes as a descriptor (/proc/self/fd/4), not as a file to bind.
  if (vm.memoryFile && !vm.memoryFile.path.startsWith('/proc/self/fd/')) {
    add(vm.memoryFile.path, 'rw');
  }
  if (vm.accel === 'kvm') add('/dev/kvm', 'dev');
  return out;
}

/**
 * Give the jail's user what its binds need: ownership of the writable ones (all the sandbox's
 * own: its socket folder, its writable drives, the memory of a sandbox that will be snapshotted;
 * a clone's shared snapshot memory comes sealed, as a descriptor) and read access to the
 * read-only ones.
 */
export function prepareJailFiles(binds: Bind[], uid: number, gid: number): void {
  for (const b of binds) {
    if (b.kind === 'dev' || b.kind === 'ro-exec') continue;
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(b.path);
    } catch (err) {
      throw new IsolaError('E_JAIL', `cannot see ${b.path} for the VMM's jail: ${String(err)}`);
    }
    if (b.kind === 'rw') {
      chownSync(b.path, uid, gid);
      continue;
    }
    const need = 0o004 | (st.isDirectory() ? 0o001 : 0);
    if ((st.mode & need) !== need) chmodSync(b.path, (st.mode & 0o7777) | need);
  }
}

let runtimeBinds: Bind[] | null = null;

/**
 * What QEMU itself needs in its jail, found once per process: its binary; every shared library
 * it and its accelerator modules link (from ldd, each at its canonical path, so the jail's
 * merged-/usr links find it); its module folder (the TCG accelerator is a module in Debian's
 * build); its firmware folder (read-only data). Nothing else of /usr.
 */
export function vmmRuntime(qemu = qemuBinaryPath()): Bind[] {
  if (runtimeBinds) return runtimeBinds;
  const canon = (p: string) => path.join(realpathSync(path.dirname(p)), path.basename(p));
  const out = new Map<string, BindKind>([[canon(qemu), 'ro-exec']]);
  const moduleDirs = readdirSync('/usr/lib')
    .filter((d) => d.endsWith('-linux-gnu'))
    .map((d) => path.join('/usr/lib', d, 'qemu'))
    .filter((d) => existsSync(d));
  const linked = [qemu];
  for (const dir of moduleDirs) {
    out.set(dir, 'ro-exec');
    for (const m of readdirSync(dir)) if (m.startsWith('accel-')) linked.push(path.join(dir, m));
  }
  for (const file of linked) {
    for (const lib of lddPaths(execFileSync('ldd', [file], { encoding: 'utf8' }))) {
      if (!out.has(canon(lib))) out.set(canon(lib), 'ro-exec');
    }
  }
  for (const dir of ['/usr/share/qemu', '/usr/share/seabios']) {
    if (existsSync(dir)) out.set(dir, 'ro');
  }
  runtimeBinds = [...out].map(([p, kind]) => ({ path: p, kind }));
  return runtimeBinds;
}

/** The library paths in ldd's output ("name => /path (addr)" and "/path (addr)" lines). */
export function lddPaths(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m) out.push(m[1]!);
  }
  return out;
}

/** Backing files of a qcow2 image, outermost first (read from the headers; no qemu-img). */
export function qcow2BackingChain(file: string, depth = 0): string[] {
  if (depth > 8) return [];
  const head = Buffer.alloc(20);
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return [];
  }
  try {
    if (readSync(fd, head, 0, 20, 0) < 20 || head.readUInt32BE(0) !== 0x514649fb) return [];
    const offset = Number(head.readBigUInt64BE(8));
    const size = head.readUInt32BE(16);
    if (offset === 0 || size === 0 || size > 4096) return [];
    const name = Buffer.alloc(size);
    readSync(fd, name, 0, size, offset);
    const p = path.resolve(path.dirname(file), name.toString('utf8'));
    return [p, ...qcow2BackingChain(p, depth + 1)];
  } finally {
    closeSync(fd);
  }
}
