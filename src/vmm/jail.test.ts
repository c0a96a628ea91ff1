import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  type Bind,
  JAIL_ID_RANGE,
  allocateJailId,
  jailArgs,
  jailBinds,
  lddPaths,
  qcow2BackingChain,
  releaseJailId,
} from './jail.js';
import type { VmDescription } from './qemu-args.js';

const vm: VmDescription = {
  id: 'sb-1',
  accel: 'tcg',
  vcpus: 1,
  memoryMiB: 256,
  kernel: '/cache/vmlinuz',
  initrd: '/cache/initrd',
  rootfs: '/cache/rootfs.img',
  drives: [
    { id: 'drive0', path: '/data/bundle.img', readonly: true },
    { id: 'drive1', path: '/data/scratch.qcow2', readonly: false, format: 'qcow2' },
    { id: 'drive2', path: '/run/isola/sandboxes/sb-1/vm/own.img', readonly: true },
  ],
  hostname: 'h',
  qmpSocket: '/run/isola/sandboxes/sb-1/vm/qmp.sock',
  agentSocket: '/run/isola/sandboxes/sb-1/vm/agent.sock',
  controlSocket: '/run/isola/sandboxes/sb-1/vm/ctl.sock',
  consoleSocket: '/run/isola/sandboxes/sb-1/vm/console.sock',
  paused: true,
  tcgTbSizeMiB: 64,
  memoryFile: { path: '/snap/memory', share: false },
};

const runtime: Bind[] = [
  { path: '/usr/bin/qemu-system-x86_64', kind: 'ro-exec' },
  { path: '/usr/lib/x86_64-linux-gnu/libz.so.1', kind: 'ro-exec' },
  { path: '/usr/share/qemu', kind: 'ro' },
];

describe('jail plan', () => {
  test('the VMM sees /usr, its own folder, its files and /dev/null, nothing else', () => {
    const binds = jailBinds(
      vm,
      '/run/isola/sandboxes/sb-1/vm',
      (p) => (p.endsWith('.qcow2') ? ['/images/base.img'] : []),
      runtime,
    );
    assert.deepEqual(binds, [
      ...runtime,
      { path: '/run/isola/sandboxes/sb-1/vm', kind: 'rw' },
      { path: '/dev/null', kind: 'dev' },
      { path: '/cache/vmlinuz', kind: 'ro' },
      { path: '/cache/initrd', kind: 'ro' },
      { path: '/cache/rootfs.img', kind: 'ro' },
      { path: '/data/bundle.img', kind: 'ro' },
      { path: '/data/scratch.qcow2', kind: 'rw' },
      { path: '/images/base.img', kind: 'ro' },
      { path: '/snap/memory', kind: 'rw' },
    ]);
    // Only QEMU's own files may be executable; the owner record (one folder up) is not visible.
    assert.deepEqual(
      binds.filter((b) => b.kind === 'ro-exec'),
      runtime.filter((b) => b.kind === 'ro-exec'),
    );
    assert.ok(!binds.some((b) => b.path === '/run/isola/sandboxes/sb-1'));
  });

  test('sealed snapshot memory comes as a descriptor, not as a bound file', () => {
    const binds = jailBinds(
      { ...vm, drives: [], memoryFile: { path: '/proc/self/fd/4', share: false } },
      '/d',
      () => [],
      runtime,
    );
    assert.ok(!binds.some((b) => b.path.startsWith('/proc')));
  });

  test('KVM adds /dev/kvm; a probe needs no images', () => {
    const kvm = jailBinds(
      { ...vm, accel: 'kvm', drives: [], memoryFile: undefined },
      '/d',
      () => [],
    );
    assert.ok(kvm.some((b) => b.path === '/dev/kvm' && b.kind === 'dev'));
    const probe = jailBinds({ ...vm, probe: true, drives: [] }, '/d', () => [], runtime);
    assert.ok(!probe.some((b) => b.path === '/cache/rootfs.img'));
  });

  test('helper arguments', () => {
    const args = jailArgs(
      {
        root: '/run/isola/jail-root',
        uid: 1600000001,
        gid: 1600000001,
        groups: [108],
        binds: [
          { path: '/usr', kind: 'ro-exec' },
          { path: '/x', kind: 'rw' },
        ],
        netns: true,
        tap: 'tap0',
      },
      { cgroupProcs: ['/sys/fs/cgroup/pids/isola/sb-1/cgroup.procs'], pdeathsig: true },
    );
    assert.deepEqual(args, [
      '--pdeathsig',
      '--cgroup-procs',
      '/sys/fs/cgroup/pids/isola/sb-1/cgroup.procs',
      '--ns',
      '--root',
      '/run/isola/jail-root',
      '--netns',
      '--ro-exec',
      '/usr',
      '--rw',
      '/x',
      '--uid',
      '1600000001',
      '--gid',
      '1600000001',
      '--group',
      '108',
      '--tap',
      'tap0',
    ]);
    assert.deepEqual(jailArgs(null, { cgroupProcs: [], pdeathsig: false }), []);
    const pod = jailArgs(
      {
        root: '/r',
        uid: 5,
        gid: 5,
        groups: [],
        binds: [],
        netns: true,
        netnsPath: '/run/netns/cni-1',
        memfdFrom: '/proc/77/fd/3',
      },
      { cgroupProcs: [], pdeathsig: false },
    );
    assert.ok(
      pod.join(' ').includes('--netns-path /run/netns/cni-1'),
      'joins instead of a new one',
    );
    assert.ok(!pod.includes('--netns'));
    assert.ok(pod.join(' ').includes('--memfd-from /proc/77/fd/3'));
  });

  test('jail ids are unique among live sandboxes and inside the range', () => {
    let n = 0;
    const seq = [0.5, 0.5, 0.25];
    const a = allocateJailId(() => seq[n++]!);
    const b = allocateJailId(() => seq[n++]!);
    assert.equal(a, JAIL_ID_RANGE.base + JAIL_ID_RANGE.size / 2);
    assert.notEqual(a, b, 'a taken id is drawn again');
    assert.ok(b >= JAIL_ID_RANGE.base && b < JAIL_ID_RANGE.base + JAIL_ID_RANGE.size);
    releaseJailId(a);
    releaseJailId(b);
  });
});

describe('qcow2 backing chain', () => {
  test('follows backing file names in the headers, relative to the image', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'isola-qcow2-'));
    try {
      const header = (backing: string | null) => {
        const b = Buffer.alloc(512);
        b.writeUInt32BE(0x514649fb, 0);
        b.writeUInt32BE(3, 4);
        if (backing) {
          b.writeBigUInt64BE(200n, 8);
          b.writeUInt32BE(Buffer.byteLength(backing), 16);
          b.write(backing, 200);
        }
        return b;
      };
      writeFileSync(path.join(dir, 'top.qcow2'), header('mid.qcow2'));
      writeFileSync(path.join(dir, 'mid.qcow2'), header('/abs/base.img'));
      assert.deepEqual(qcow2BackingChain(path.join(dir, 'top.qcow2')), [
        path.join(dir, 'mid.qcow2'),
        '/abs/base.img',
      ]);
      writeFileSync(path.join(dir, 'raw.img'), Buffer.alloc(64));
      assert.deepEqual(qcow2BackingChain(path.join(dir, 'raw.img')), []);
      assert.deepEqual(qcow2BackingChain(path.join(dir, 'missing')), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the VMM runtime in the jail', () => {
  test("ldd's output: resolved libraries and the loader, not the vDSO or missing ones", () => {
    const text = [
      '\tlinux-vdso.so.1 (0x00007ffd6b5f2000)',
      '\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f35797cf000)',
      '\tlibgone.so.2 => not found',
      '\t/lib64/ld-linux-x86-64.so.2 (0x00007f3579838000)',
    ].join('\n');
    assert.deepEqual(lddPaths(text), [
      '/lib/x86_64-linux-gnu/libz.so.1',
      '/lib64/ld-linux-x86-64.so.2',
    ]);
  });
});
