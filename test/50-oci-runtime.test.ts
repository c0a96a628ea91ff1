// isola-runtime driven directly the way runc is: run, the create/start/state/kill/delete
// lifecycle, exec, resource limits, bad bundles, and delete --force after the VM was killed.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readOwnerRecord, sandboxDir } from '../src/sandbox/run-record.js';
import { leftovers, sleep } from './helpers.js';
import {
  type Bundle,
  RUNTIME,
  type SpecJson,
  makeBundle,
  runtime,
  tempBase,
} from './oci-helpers.js';

const base = tempBase();
const root = path.join(base, 'state');
after(() => {
  // Whatever a failed test left running goes too.
  for (const id of runtime(root, ['list', '--quiet']).stdout.split('\n').filter(Boolean)) {
    runtime(root, ['delete', '--force', id]);
  }
  rmSync(base, { recursive: true, force: true });
});

function state(id: string): SpecJson | null {
  const r = runtime(root, ['state', id]);
  return r.code === 0 ? JSON.parse(r.stdout) : null;
}

async function waitStatus(id: string, status: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (state(id)?.status === status) return;
    await sleep(100);
  }
  assert.fail(`container ${id} did not become ${status}: ${JSON.stringify(state(id))}`);
}

/** `create` with the container's stdio going to files (the monitor keeps them open). */
function createDetached(
  bundle: Bundle,
  id: string,
): Promise<{ code: number | null; stderr: string; out: string; pidFile: string }> {
  const out = path.join(base, `${id}.out`);
  const pidFile = path.join(base, `${id}.pid`);
  const fd = openSync(out, 'w');
  const errFile = path.join(base, `${id}.create.err`);
  const efd = openSync(errFile, 'w');
  const child = spawn(
    RUNTIME,
    ['--root', root, 'create', '--bundle', bundle.dir, '--pid-file', pidFile, id],
    {
      stdio: ['ignore', fd, efd],
    },
  );
  closeSync(fd);
  closeSync(efd);
  return new Promise((resolve) =>
    child.once('exit', (code) =>
      resolve({ code, stderr: readFileSync(errFile, 'utf8'), out, pidFile }),
    ),
  );
}

describe('isola-runtime', () => {
  test('run: output arrives, exit code 3 comes back, own kernel, hostname and rootfs', () => {
    const b = makeBundle(base, 'b-run', (s) => {
      s.process.args = ['sh', '-c', 'echo hello-from-container; uname -r; hostname; ls /; exit 3'];
      s.hostname = 'ctr-host';
    });
    const r = runtime(root, ['run', '--bundle', b.dir, 'c-run']);
    assert.equal(r.code, 3, r.stderr);
    const lines = r.stdout.split('\n');
    assert.equal(lines[0], 'hello-from-container');
    assert.notEqual(lines[1], os.release(), 'the container runs on the guest kernel');
    assert.equal(lines[2], 'ctr-host');
    assert.ok(lines.includes('isola-test-rootfs'), 'sees its own rootfs');
    assert.ok(
      !lines.includes('work') && !lines.includes('home'),
      `host dirs are not visible: ${lines.join(' ')}`,
    );
    assert.equal(state('c-run'), null, 'run removes the container');
  });

  describe('lifecycle', () => {
    let b: Bundle;
    const id = 'c-life';
    before(() => {
      b = makeBundle(base, 'b-life', (s) => {
        s.process.args = ['sh', '-c', 'echo started; exec sleep 1000'];
        s.linux.resources = { memory: { limit: 96 * 1024 * 1024 }, pids: { limit: 64 } };
      });
    });

    test('create -> created, start -> running, exec, kill -> stopped, delete', async () => {
      const c = await createDetached(b, id);
      assert.equal(c.code, 0, c.stderr);
      const pid = Number(readFileSync(c.pidFile, 'utf8'));
      const s1 = state(id)!;
      assert.equal(s1.status, 'created');
      assert.equal(s1.pid, pid);
      assert.equal(s1.bundle, b.dir);
      assert.equal(runtime(root, ['start', id]).code, 0);
      assert.equal(state(id)!.status, 'running');
      assert.match(runtime(root, ['start', id]).stderr, /E_OCI_STATE/, 'a second start is illegal');

      const e = runtime(root, [
        'exec',
        id,
        'sh',
        '-c',
        'echo in-exec; cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; exit 5',
      ]);
      assert.equal(e.code, 5, e.stderr);
      assert.deepEqual(e.stdout.trim().split('\n'), ['in-exec', String(96 * 1024 * 1024), '64']);
      const [x, y] = await Promise.all(
        ['A', 'B'].map(
          (tag) =>
            new Promise<{ code: number | null; out: string }>((resolve) => {
              const ch = spawn(RUNTIME, [
                '--root',
                root,
                'exec',
                id,
                'sh',
                '-c',
                `for i in 1 2 3; do echo ${tag}$i; done; exit 7`,
              ]);
              let out = '';
              ch.stdout.on('data', (d: Buffer) => {
                out += d.toString();
              });
              ch.once('close', (code) => resolve({ code, out }));
            }),
        ),
      );
      assert.deepEqual([x!.code, x!.out], [7, 'A1\nA2\nA3\n']);
      assert.deepEqual([y!.code, y!.out], [7, 'B1\nB2\nB3\n']);

      assert.equal(runtime(root, ['pause', id]).code, 0);
      assert.equal(state(id)!.status, 'paused');
      assert.match(
        runtime(root, ['exec', id, 'true']).stderr,
        /E_OCI_STATE/,
        'no exec into a paused VM',
      );
      assert.equal(runtime(root, ['resume', id]).code, 0);
      assert.equal(state(id)!.status, 'running');
      const ps = runtime(root, ['ps', '--format', 'json', id]);
      assert.ok((JSON.parse(ps.stdout) as number[]).length >= 1, ps.stdout + ps.stderr);
      assert.equal(runtime(root, ['kill', id, 'KILL']).code, 0);
      await waitStatus(id, 'stopped');
      assert.match(runtime(root, ['exec', id, 'true']).stderr, /E_OCI_STATE/);
      assert.equal(readFileSync(c.out, 'utf8'), 'started\n');
      assert.equal(runtime(root, ['delete', id]).code, 0);
      assert.equal(state(id), null);
      assert.deepEqual(leftovers().qemu, []);
    });
  });

  test('kill delivers SIGTERM to the container process', async () => {
    // PID 1 of a pid namespace only gets signals it handles (as with runc), so the process
    // traps TERM and exits 42; the exit status proves the signal arrived.
    const b = makeBundle(base, 'b-term', (s) => {
      s.process.args = [
        'sh',
        '-c',
        'trap "echo got-term; exit 42" TERM; echo ready; sleep 1000 & wait',
      ];
    });
    const c = await createDetached(b, 'c-term');
    assert.equal(c.code, 0);
    assert.equal(runtime(root, ['start', 'c-term']).code, 0);
    // A signal that arrives before the trap is set is dropped (PID 1 of its namespace).
    for (let i = 0; i < 200 && !readFileSync(c.out, 'utf8').includes('ready'); i++) await sleep(50);
    assert.equal(runtime(root, ['kill', 'c-term']).code, 0);
    await waitStatus('c-term', 'stopped');
    assert.equal(readFileSync(c.out, 'utf8'), 'ready\ngot-term\n');
    assert.equal(runtime(root, ['delete', 'c-term']).code, 0);
  });

  test('bad bundles are clear errors that leave nothing behind; ids are unique', async () => {
    const before = leftovers();
    const bad = makeBundle(base, 'b-bad', (s) => {
      s.process.args = [];
    });
    const r1 = runtime(root, ['create', '--bundle', bad.dir, 'c-bad']);
    assert.notEqual(r1.code, 0);
    assert.match(r1.stderr, /E_OCI_INVALID_CONFIG: .*process\.args/);
    const noRoot = makeBundle(base, 'b-noroot', (s) => {
      s.root.path = 'missing-rootfs';
    });
    const r2 = runtime(root, ['create', '--bundle', noRoot.dir, 'c-noroot']);
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /E_OCI_INVALID_CONFIG: .*missing-rootfs/);
    mkdirSync(path.join(base, 'b-garbage'), { recursive: true });
    writeFileSync(path.join(base, 'b-garbage/config.json'), '{not json');
    assert.match(
      runtime(root, ['create', '--bundle', path.join(base, 'b-garbage'), 'c-garbage']).stderr,
      /E_OCI_INVALID_CONFIG/,
    );
    assert.deepEqual(runtime(root, ['list', '--quiet']).stdout, '');
    assert.deepEqual(leftovers(), before);

    const ok = makeBundle(base, 'b-dup', (s) => {
      s.process.args = ['sleep', '1000'];
    });
    assert.equal((await createDetached(ok, 'c-dup')).code, 0);
    const dup = runtime(root, ['create', '--bundle', ok.dir, 'c-dup']);
    assert.notEqual(dup.code, 0);
    assert.match(dup.stderr, /E_OCI_EXISTS/);
    assert.equal(state('c-dup')!.status, 'created', 'the first container is untouched');
    assert.equal(runtime(root, ['delete', '--force', 'c-dup']).code, 0);
  });

  test('delete --force removes everything after the VM was killed with SIGKILL', async () => {
    const b = makeBundle(base, 'b-force', (s) => {
      s.process.args = ['sleep', '1000'];
    });
    assert.equal((await createDetached(b, 'c-force')).code, 0);
    assert.equal(runtime(root, ['start', 'c-force']).code, 0);
    const st = JSON.parse(readFileSync(path.join(root, 'c-force/state.json'), 'utf8')) as {
      sandboxId: string;
    };
    const rec = readOwnerRecord(sandboxDir(st.sandboxId));
    assert.ok(rec?.qemuPid, 'the VM is running');
    process.kill(rec.qemuPid, 'SIGKILL');
    await sleep(300);
    const d = runtime(root, ['delete', '--force', 'c-force']);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(state('c-force'), null);
    assert.equal(existsSync(sandboxDir(st.sandboxId)), false);
    assert.deepEqual(leftovers(), { qemu: [], folders: [], cgroups: [], uplinks: [] });
  });
});
