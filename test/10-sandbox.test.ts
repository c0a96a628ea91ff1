// The micro-VM sandbox end to end, on one shared booted sandbox (boots are seconds under TCG):
// own kernel, stdio, stdin, signals, concurrency, files, limits.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadAssets } from '../src/assets/paths.js';
import { IsolaError } from '../src/errors.js';
import { MicroVmDriver } from '../src/sandbox/drivers/microvm.js';
import type { Sandbox } from '../src/sandbox/sandbox.js';
import { cgroupMode } from '../src/vmm/cgroup.js';

const MEMORY_MIB = 320;
const VCPUS = 2;

describe('microvm sandbox', () => {
  const driver = new MicroVmDriver();
  let sb: Sandbox;

  // Extra block devices: a read-only one with known content and a writable scratch disk.
  const diskDir = mkdtempSync(path.join(os.tmpdir(), 'isola-test-disks-'));
  const roDisk = path.join(diskDir, 'ro.img');
  const rwDisk = path.join(diskDir, 'rw.img');
  const roContent = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < roContent.length; i++) roContent[i] = (i * 7 + 3) & 0xff;

  before(async () => {
    writeFileSync(roDisk, roContent);
    writeFileSync(rwDisk, Buffer.alloc(1024 * 1024));
    sb = await driver.create({
      memoryMiB: MEMORY_MIB,
      vcpus: VCPUS,
      env: { SANDBOX_WIDE: 'yes' },
      hostname: 'shared-box',
      drives: [{ path: roDisk }, { path: rwDisk, readonly: false }],
    });
    await sb.start();
  });
  after(async () => {
    await sb?.destroy();
    rmSync(diskDir, { recursive: true, force: true });
  });

  test('boots with its own kernel, not the host kernel', async (t) => {
    assert.equal(sb.state, 'running');
    const r = await sb.run(['uname', '-r']);
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout.trim(), loadAssets().kernelRelease);
    assert.notEqual(r.stdout.trim(), os.release());
    t.diagnostic(`boot: ${JSON.stringify(sb.boot)}`);
    assert.ok(
      sb.boot && sb.boot.totalMs > 0 && sb.boot.kernelToInitMs > 0 && sb.boot.agentStartMs > 0,
    );
  });

  test('stdout, stderr and exit code come back', async () => {
    const r = await sb.run(['sh', '-c', 'echo out-line; echo err-line >&2; exit 42']);
    assert.deepEqual(
      [r.stdout, r.stderr, r.exitCode, r.signal],
      ['out-line\n', 'err-line\n', 42, null],
    );
  });

  test('stdin streams in, in pieces and in bulk', async () => {
    const out: Buffer[] = [];
    const p = await sb.exec({ argv: ['cat'], stdin: true }, { onStdout: (d) => out.push(d) });
    await p.writeStdin('first ');
    await p.writeStdin('second\n');
    await p.closeStdin();
    assert.deepEqual(await p.exited, { exitCode: 0, signal: null });
    assert.equal(Buffer.concat(out).toString(), 'first second\n');

    const big = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
    const r = await sb.run(['sha256sum'], { input: big });
    const want = createHash('sha256').update(big).digest('hex');
    assert.equal(r.stdout.split(' ')[0], want);
  });

  test('a signal ends a running process', async () => {
    const p = await sb.exec({ argv: ['sleep', '1000'] });
    assert.equal(await p.signal('SIGTERM'), true);
    assert.deepEqual(await p.exited, { exitCode: null, signal: 'SIGTERM' });
    const q = await sb.exec({ argv: ['sh', '-c', 'trap "" TERM; sleep 1000'] });
    await p
      .signal('SIGKILL')
      .then((d) => assert.equal(d, false, 'signal to an exited process is not delivered'));
    await q.signal('SIGKILL');
    assert.equal((await q.exited).signal, 'SIGKILL');
  });

  test('two processes at once keep their outputs apart', async () => {
    const script = (tag: string) => `i=0; while [ $i -lt 200 ]; do echo ${tag}$i; i=$((i+1)); done`;
    const [a, b] = await Promise.all([
      sb.run(['sh', '-c', script('A')]),
      sb.run(['sh', '-c', script('B')]),
    ]);
    const expect = (tag: string) =>
      Array.from({ length: 200 }, (_, i) => `${tag}${i}`).join('\n') + '\n';
    assert.equal(a.stdout, expect('A'));
    assert.equal(b.stdout, expect('B'));
  });

  test('they really run concurrently', async () => {
    // Both wait for a file the other creates: only concurrent processes can finish.
    const wait = (mine: string, other: string) =>
      `touch /tmp/${mine}; i=0; while [ ! -e /tmp/${other} ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done; [ -e /tmp/${other} ]`;
    const [a, b] = await Promise.all([
      sb.run(['sh', '-c', wait('x1', 'y1')]),
      sb.run(['sh', '-c', wait('y1', 'x1')]),
    ]);
    assert.equal(a.exitCode, 0);
    assert.equal(b.exitCode, 0);
  });

  test('env, cwd, uid and gid are applied', async () => {
    const r = await sb.run(['sh', '-c', 'echo "$SANDBOX_WIDE $MINE $(pwd) $(id -u) $(id -g)"'], {
      env: { MINE: 'v1' },
      cwd: '/tmp',
      uid: 65534,
      gid: 65534,
    });
    assert.equal(r.stdout, 'yes v1 /tmp 65534 65534\n');
  });

  test('a command that does not exist is a typed error', async () => {
    await assert.rejects(
      sb.exec({ argv: ['/no/such/binary'] }),
      (e: unknown) => e instanceof IsolaError && e.code === 'E_EXEC_FAILED',
    );
    const r = await sb.run(['sh', '-c', 'exec /no/such/thing']);
    assert.equal(r.exitCode, 127);
  });

  test('files can be written and read, also larger than one frame', async () => {
    const data = Buffer.alloc(1536 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    await sb.writeFile('/tmp/blob.bin', data, 0o600);
    assert.deepEqual(await sb.readFile('/tmp/blob.bin'), data);
    const r = await sb.run(['stat', '-c', '%s %a', '/tmp/blob.bin']);
    assert.equal(r.stdout.trim(), `${data.length} 600`);
    await assert.rejects(
      sb.readFile('/nope'),
      (e: unknown) => e instanceof IsolaError && e.code === 'E_GUEST_IO',
    );
  });

  test('extra block devices appear in order, read-only and writable as asked', async () => {
    const ro = await sb.run([
      'sh',
      '-c',
      'sha256sum /dev/vdb; cat /sys/block/vdb/ro /sys/block/vdc/ro',
    ]);
    const [sum, roFlag, rwFlag] = ro.stdout.trim().split('\n');
    assert.equal(sum?.split(' ')[0], createHash('sha256').update(roContent).digest('hex'));
    assert.deepEqual([roFlag, rwFlag], ['1', '0']);
    const w = await sb.run([
      'sh',
      '-c',
      'echo written-in-guest | dd of=/dev/vdc conv=fsync 2>/dev/null; sync',
    ]);
    assert.equal(w.exitCode, 0);
    assert.equal(readFileSync(rwDisk).subarray(0, 17).toString(), 'written-in-guest\n');
    const denied = await sb.run(['sh', '-c', 'echo x | dd of=/dev/vdb 2>&1']);
    assert.notEqual(denied.exitCode, 0, 'writing the read-only disk fails');
  });

  test('the guest clock runs at host speed and shows the host time', async () => {
    const uptime = async () => Number((await sb.readFile('/proc/uptime')).toString().split(' ')[0]);
    const h0 = performance.now();
    const g0 = await uptime();
    await new Promise((r) => setTimeout(r, 3000));
    const g1 = await uptime();
    const hostS = (performance.now() - h0) / 1000;
    assert.ok(g0 > 0, '/proc/uptime is readable');
    assert.ok(
      Math.abs(g1 - g0 - hostS) < 0.5,
      `guest advanced ${g1 - g0} s while the host advanced ${hostS} s`,
    );
    const guestNow = Number((await sb.run(['date', '+%s'])).stdout.trim());
    assert.ok(Math.abs(guestNow - Date.now() / 1000) < 5, `guest time ${guestNow}`);
  });

  test('guest resources match the spec', async () => {
    const info = await sb.info();
    assert.equal(info.cpus, VCPUS);
    assert.equal(info.hostname, 'shared-box');
    // MemTotal is RAM minus what the kernel reserves; within 25 % below the configured size.
    const mib = info.memTotalBytes / 2 ** 20;
    assert.ok(
      mib <= MEMORY_MIB && mib > MEMORY_MIB * 0.75,
      `MemTotal ${mib} MiB for ${MEMORY_MIB} MiB`,
    );
  });

  test('the QEMU process runs in its own cgroup with memory, CPU and pids limits', (t) => {
    const mode = cgroupMode();
    if (mode === 'none') {
      t.skip('host has no cgroup hierarchy');
      return;
    }
    const pid = sb.vmmPid;
    assert.ok(pid);
    const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
    assert.match(
      lines,
      new RegExp(`/${process.env.ISOLA_CGROUP_PARENT ?? 'isola'}/${sb.id}$`, 'm'),
    );
    const own = (ctrl: string) => {
      const line = lines
        .split('\n')
        .find((l) =>
          mode === 'v2' ? l.startsWith('0::') : l.split(':')[1]?.split(',').includes(ctrl),
        );
      return path.join('/sys/fs/cgroup', mode === 'v2' ? '' : ctrl, line!.split(':')[2]!);
    };
    const read = (ctrl: string, file: string) =>
      readFileSync(path.join(own(ctrl), file), 'utf8').trim();
    if (mode === 'v1') {
      const limit = Number(read('memory', 'memory.limit_in_bytes'));
      assert.ok(
        limit >= MEMORY_MIB * 2 ** 20 && limit <= (MEMORY_MIB + 1024) * 2 ** 20,
        `memory limit ${limit}`,
      );
      assert.equal(read('cpu', 'cpu.cfs_quota_us'), String((VCPUS + 0.5) * 100_000));
      assert.equal(read('pids', 'pids.max'), '128');
    } else {
      assert.ok(Number(read('', 'memory.max')) >= MEMORY_MIB * 2 ** 20);
      assert.equal(read('', 'cpu.max'), `${(VCPUS + 0.5) * 100_000} 100000`);
      assert.equal(read('', 'pids.max'), '128');
    }
  });

  test('operations in the wrong lifecycle state are typed errors', async () => {
    const fresh = await driver.create({});
    try {
      await assert.rejects(
        fresh.run(['true']),
        (e: unknown) => e instanceof IsolaError && e.code === 'E_SANDBOX_INVALID_STATE',
      );
      await fresh.destroy();
      await assert.rejects(
        fresh.start(),
        (e: unknown) => e instanceof IsolaError && e.code === 'E_SANDBOX_INVALID_STATE',
      );
    } finally {
      await fresh.destroy();
    }
  });

  test('the default start resumes a cached booted guest: own identity, environment, writes', async () => {
    const a = await driver.create({ env: { WHO: 'a' }, hostname: 'box-a' });
    const b = await driver.create({ env: { WHO: 'b' } });
    try {
      await Promise.all([a.start(), b.start()]);
      assert.ok(a.restore && !a.boot, 'resumed, not booted');
      assert.ok(b.restore && !b.boot);
      const show = 'echo $WHO $(hostname) $(uname -r); cat /tmp/mark 2>/dev/null || echo none';
      await a.run(['sh', '-c', 'echo written-in-a > /tmp/mark']);
      const ra = await a.run(['sh', '-c', show]);
      const rb = await b.run(['sh', '-c', show]);
      const kernel = (await a.info()).kernelRelease;
      assert.equal(ra.stdout, `a box-a ${kernel}\nwritten-in-a\n`);
      assert.equal(rb.stdout, `b ${b.id} ${kernel}\nnone\n`, "a's writes are not b's");
    } finally {
      await Promise.all([a.destroy(), b.destroy()]);
    }
  });
});
