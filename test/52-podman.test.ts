// Podman (from Debian) runs containers through isola-runtime unchanged (`podman --runtime`),
// from an image the test imports from a tarball it builds. Podman gets its own storage and run
// directories; cgroupfs and file events because these machines have no systemd.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { leftovers, runAsync } from './helpers.js';
import { fakeHost } from './net-helpers.js';
import { RUNTIME, makeRootfs, tempBase } from './oci-helpers.js';

const havePodman = spawnSync('sh', ['-c', 'command -v podman']).status === 0;
const IMAGE = 'localhost/isola-test:latest';

describe(
  'podman',
  { skip: havePodman ? false : 'podman not installed (scripts/setup.sh installs it)' },
  () => {
    const base = tempBase();
    // The sandbox's hard limits (nofile 20000) are below Podman's defaults (../shared/HOST-NOTES.md).
    const globals = [
      '--root',
      path.join(base, 'storage'),
      '--runroot',
      path.join(base, 'run'),
      '--storage-driver',
      'vfs',
      '--cgroup-manager',
      'cgroupfs',
      '--events-backend',
      'file',
      '--runtime',
      RUNTIME,
    ];
    const runFlags = [
      '--network',
      'none',
      '--ulimit',
      'nofile=1024:1024',
      '--ulimit',
      'nproc=1024:1024',
    ];
    const podman = (args: string[], timeout = 120_000) => {
      const r = spawnSync('podman', [...globals, ...args], {
        encoding: 'utf8',
        timeout,
        input: '',
      });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    };

    before(() => {
      const rootfs = makeRootfs(path.join(base, 'rootfs'));
      const tar = path.join(base, 'rootfs.tar');
      assert.equal(spawnSync('tar', ['-C', rootfs, '-cf', tar, '.']).status, 0);
      const imp = podman(['import', tar, IMAGE]);
      assert.equal(imp.code, 0, imp.stderr);
    });

    after(() => {
      podman(['rm', '--all', '--force']);
      podman(['rmi', '--all', '--force']);
      rmSync(base, { recursive: true, force: true });
    });

    test('podman run: echo arrives, exit code 3, guest kernel, own hostname and rootfs', () => {
      const r = podman([
        'run',
        '--rm',
        ...runFlags,
        '--hostname',
        'podbox',
        IMAGE,
        'sh',
        '-c',
        'echo hello-podman; uname -r; hostname; ls /; exit 3',
      ]);
      assert.equal(r.code, 3, r.stderr);
      const lines = r.stdout.split('\n');
      assert.equal(lines[0], 'hello-podman');
      assert.notEqual(lines[1], os.release());
      assert.equal(lines[2], 'podbox');
      assert.ok(lines.includes('isola-test-rootfs') && !lines.includes('work'), r.stdout);
    });

    test(
      "podman run --network bridge: the VM takes the container's CNI interface and reaches a host",
      { skip: process.getuid?.() === 0 ? false : 'CNI bridge networks need root' },
      async () => {
        // A host in a namespace this test makes, routed from this machine; the container's
        // traffic goes guest -> tap -> (tc redirect) -> the CNI veth -> podman's bridge and NAT.
        const host = await fakeHost('pnet', {
          addr: '203.0.113.10',
          gw: '203.0.113.1',
          prefix: 24,
          port: 8080,
        });
        try {
          const r = podman([
            'run',
            '--rm',
            '--network',
            'bridge',
            ...runFlags.slice(2),
            IMAGE,
            'sh',
            '-c',
            'ip -4 addr show eth0; nc 203.0.113.10 8080 </dev/null',
          ]);
          assert.equal(r.code, 0, r.stderr);
          assert.match(r.stdout, /inet 10\.88\.\d+\.\d+\/16/, "the CNI address is the guest's");
          assert.match(r.stdout, /hello from pnet/);
        } finally {
          await host.close();
        }
      },
    );

    test('podman run --memory: the limit holds inside the VM', () => {
      const hog = (mib: number) =>
        `dd if=/dev/zero of=/dev/shm/fill bs=1M count=${mib} 2>/dev/null && echo survived`;
      const big = podman([
        'run',
        '--rm',
        ...runFlags,
        '--memory',
        '32m',
        IMAGE,
        'sh',
        '-c',
        hog(48),
      ]);
      assert.equal(big.stdout.trim(), '', 'an allocation above the limit must not succeed');
      const small = podman([
        'run',
        '--rm',
        ...runFlags,
        '--memory',
        '32m',
        IMAGE,
        'sh',
        '-c',
        hog(8),
      ]);
      assert.equal(small.stdout.trim(), 'survived', small.stderr);
    });

    test('podman run -t: the container gets a terminal through --console-socket', () => {
      const r = podman([
        'run',
        '--rm',
        '-t',
        ...runFlags,
        IMAGE,
        'sh',
        '-c',
        'tty; stty size; exit 4',
      ]);
      assert.equal(r.code, 4, r.stderr);
      const [tty, size] = r.stdout.replace(/\r/g, '').trim().split('\n');
      assert.match(tty ?? '', /^\/dev\/pts\/\d+$/, 'stdio is a pty of the container');
      assert.equal(size, '24 80');
    });

    test('podman run -it: keystrokes reach the container through the terminal', () => {
      // `script` gives podman the terminal it wants on its side; input arrives once it runs.
      const cmd = [
        'podman',
        ...globals,
        'run',
        '--rm',
        '-it',
        ...runFlags,
        IMAGE,
        'sh',
        '-c',
        // \$: the outer shell must leave $x alone (it sits inside double quotes there).
        "'read x; echo got-\\$x; exit 5'",
      ].join(' ');
      const r = spawnSync(
        'sh',
        ['-c', `(sleep 10; printf 'typed\\r'; sleep 5) | script -qec "${cmd}" /dev/null`],
        {
          encoding: 'utf8',
          timeout: 120_000,
        },
      );
      assert.match(r.stdout.replace(/\r/g, ''), /got-typed/, r.stdout + r.stderr);
      assert.equal(r.status, 5);
    });

    test('podman kill ends a sleep 1000 container; podman exec works, also two at once', async () => {
      const d = podman(['run', '-d', ...runFlags, '--name', 'sleeper', IMAGE, 'sleep', '1000']);
      assert.equal(d.code, 0, d.stderr);
      const e = podman(['exec', 'sleeper', 'sh', '-c', 'echo in-exec; exit 5']);
      assert.equal(e.code, 5, e.stderr);
      assert.equal(e.stdout, 'in-exec\n');
      const both = await Promise.all(
        ['a', 'b'].map((tag) =>
          runAsync('podman', [...globals, 'exec', 'sleeper', 'sh', '-c', `echo ${tag}; exit 6`]),
        ),
      );
      assert.deepEqual(both, [
        { code: 6, out: 'a\n' },
        { code: 6, out: 'b\n' },
      ]);
      assert.equal(podman(['kill', 'sleeper']).code, 0);
      const w = podman(['wait', 'sleeper']);
      assert.equal(w.stdout.trim(), '137', w.stderr);
      assert.equal(podman(['rm', 'sleeper']).code, 0);
      assert.deepEqual(leftovers().qemu, [], 'no VM left once the container is removed');
    });
  },
);
