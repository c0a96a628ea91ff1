// containerd (from Debian) runs containers through isola-runtime unchanged: `ctr run
// --runc-binary` with the io.containerd.runc.v2 shim. The test starts its own containerd with
// its own root, state and socket, and stops it at the end.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { leftovers, runAsync, sleep } from './helpers.js';
import { RUNTIME, makeRootfs, tempBase } from './oci-helpers.js';

const NS = 'isola-test';
const haveContainerd =
  spawnSync('sh', ['-c', 'command -v containerd && command -v ctr']).status === 0;

describe(
  'containerd + ctr',
  {
    skip: haveContainerd ? false : 'containerd/ctr not installed (scripts/setup.sh installs them)',
  },
  () => {
    const base = tempBase();
    const sock = path.join(base, 'containerd.sock');
    const rootfs = path.join(base, 'rootfs');
    let containerd: ChildProcess;

    const ctr = (args: string[], timeout = 120_000) => {
      const r = spawnSync('ctr', ['--address', sock, '-n', NS, ...args], {
        encoding: 'utf8',
        timeout,
        input: '',
      });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    };

    before(async () => {
      makeRootfs(rootfs);
      writeFileSync(
        path.join(base, 'config.toml'),
        [
          'version = 2',
          `root = "${base}/root"`,
          `state = "${base}/state"`,
          'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
          '[grpc]',
          `  address = "${sock}"`,
        ].join('\n'),
      );
      mkdirSync(path.join(base, 'root'), { recursive: true });
      containerd = spawn('containerd', ['--config', path.join(base, 'config.toml')], {
        stdio: 'ignore',
      });
      for (let i = 0; i < 100 && !existsSync(sock); i++) await sleep(100);
      assert.ok(existsSync(sock), 'containerd is up');
    });

    after(async () => {
      for (const id of ['k1', 'e1']) {
        ctr(['task', 'kill', '-s', 'SIGKILL', id]);
        ctr(['task', 'rm', '-f', id]);
        ctr(['container', 'rm', id]);
      }
      containerd?.kill('SIGTERM');
      await new Promise((r) =>
        containerd.exitCode === null ? containerd.once('exit', r) : r(null),
      );
      rmSync(base, { recursive: true, force: true });
    });

    const run = (id: string, cmd: string[], extra: string[] = []) =>
      ctr(['run', '--rm', '--runc-binary', RUNTIME, ...extra, '--rootfs', rootfs, id, ...cmd]);

    test('ctr run: echo arrives, exit code 3 comes back, guest kernel, own rootfs', () => {
      const r = run('r1', ['sh', '-c', 'echo hello-ctr; uname -r; ls /; hostname; exit 3']);
      assert.equal(r.code, 3, r.stderr);
      const lines = r.stdout.split('\n');
      assert.equal(lines[0], 'hello-ctr');
      assert.notEqual(lines[1], os.release());
      // ctr sets no hostname: the container has the VM's own, not the host's.
      assert.notEqual(lines.at(-2), os.hostname());
      assert.match(lines.at(-2) ?? '', /^sb-[0-9a-f]+$/);
      assert.ok(lines.includes('isola-test-rootfs') && !lines.includes('work'), r.stdout);
    });

    test('ctr run: a memory limit from the config holds (the OOM killer ends a bigger allocation)', () => {
      // 32 MiB for the container; its VM gets that plus the guest's own overhead, so a 48 MiB
      // allocation would fit the VM: only the container's cgroup limit can stop it.
      const limit = ['--memory-limit', String(32 * 1024 * 1024)];
      // Files in the /dev/shm tmpfs are memory charged to the container's cgroup.
      const hog = (mib: number) => [
        'sh',
        '-c',
        `dd if=/dev/zero of=/dev/shm/fill bs=1M count=${mib} 2>/dev/null && echo survived`,
      ];
      const big = run('m1', hog(48), limit);
      assert.equal(big.stdout.trim(), '', 'an allocation above the limit must not succeed');
      const small = run('m2', hog(8), limit);
      assert.equal(small.stdout.trim(), 'survived', small.stderr);
    });

    test('ctr task kill ends a sleep 1000 container; exec works, also two at once', async () => {
      const d = ctr([
        'run',
        '-d',
        '--runc-binary',
        RUNTIME,
        '--rootfs',
        rootfs,
        'k1',
        'sleep',
        '1000',
      ]);
      assert.equal(d.code, 0, d.stderr);
      assert.match(ctr(['task', 'ls']).stdout, /k1\s+\d+\s+RUNNING/);
      const e = ctr(['task', 'exec', '--exec-id', 'x1', 'k1', 'sh', '-c', 'echo in-exec; exit 5']);
      assert.equal(e.code, 5, e.stderr);
      assert.equal(e.stdout, 'in-exec\n');
      const both = await Promise.all(
        ['a', 'b'].map((tag) =>
          runAsync('ctr', [
            '--address',
            sock,
            '-n',
            NS,
            'task',
            'exec',
            '--exec-id',
            `x-${tag}`,
            'k1',
            'sh',
            '-c',
            `echo ${tag}; exit 6`,
          ]),
        ),
      );
      assert.deepEqual(both, [
        { code: 6, out: 'a\n' },
        { code: 6, out: 'b\n' },
      ]);
      assert.equal(ctr(['task', 'kill', '-s', 'SIGKILL', 'k1']).code, 0);
      for (let i = 0; i < 100 && !/k1\s+\d+\s+STOPPED/.test(ctr(['task', 'ls']).stdout); i++)
        await sleep(100);
      assert.match(ctr(['task', 'ls']).stdout, /k1\s+\d+\s+STOPPED/);
      assert.equal(ctr(['task', 'rm', 'k1']).code, 0);
      assert.equal(ctr(['container', 'rm', 'k1']).code, 0);
      assert.deepEqual(leftovers().qemu, [], 'no VM left once the task is removed');
    });
  },
);
