// The CLI as users run it: bin/isola from the checkout.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { test } from 'node:test';
import { ISOLA_BIN, leftovers } from './helpers.js';

function isola(args: string[], input?: string) {
  const r = spawnSync(ISOLA_BIN, args, { input, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('isola sandbox run: stdio attached, exit code passed through, stdin streamed', () => {
  const r = isola(
    [
      'sandbox',
      'run',
      '--memory',
      '256',
      '--',
      'sh',
      '-c',
      'uname -r; read x; echo "got $x"; echo oops >&2; exit 3',
    ],
    'hello\n',
  );
  assert.equal(r.code, 3, r.stderr);
  const [kernel, got] = r.stdout.trim().split('\n');
  assert.notEqual(kernel, os.release());
  assert.equal(got, 'got hello');
  assert.equal(r.stderr, 'oops\n');
  assert.deepEqual(leftovers(), { qemu: [], folders: [], cgroups: [], uplinks: [] });
});

test('isola sandbox run: a process killed by a signal exits 128+N', () => {
  const r = isola(['sandbox', 'run', '--', 'sh', '-c', 'kill -9 $$']);
  assert.equal(r.code, 137, r.stderr);
});

test('isola sandbox run: bad arguments are clear errors and boot nothing', () => {
  const before = leftovers();
  const unknown = isola(['sandbox', 'run', '--memroy', '5', '--', 'true']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /E_INVALID_ARGUMENT: .*--memroy/);
  const neg = isola(['sandbox', 'run', '--memory=-5', '--', 'true']);
  assert.equal(neg.code, 2);
  assert.match(neg.stderr, /E_INVALID_SPEC: .*memoryMiB/);
  const none = isola(['sandbox', 'run', '--memory', '256']);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /E_INVALID_ARGUMENT: missing command/);
  const json = isola(['sandbox', 'run', '--json', '--vcpus', 'two', '--', 'true']);
  assert.equal(json.code, 2);
  assert.equal(JSON.parse(json.stderr).error.code, 'E_INVALID_ARGUMENT');
  assert.deepEqual(leftovers(), before);
});

test('isola doctor --json reports accelerator, QEMU, assets and cgroups', () => {
  const r = isola(['doctor', '--json']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const report = JSON.parse(r.stdout) as {
    ok: boolean;
    checks: Array<{ name: string; status: string; detail: string; data?: Record<string, unknown> }>;
  };
  const by = Object.fromEntries(report.checks.map((c) => [c.name, c]));
  for (const name of ['accelerator', 'qemu', 'guest-assets', 'cgroups', 'tun', 'netns'])
    assert.ok(by[name], `check ${name} present`);
  assert.match(String(by.accelerator!.data?.accel), /^(kvm|tcg)$/);
  assert.ok(String(by.accelerator!.detail).length > 10, 'the accelerator choice says why');
  assert.match(String(by['guest-assets']!.data?.digest), /^[0-9a-f]{64}$/);
  const text = isola(['doctor']);
  assert.match(text.stdout, /accelerator\s+(kvm|tcg):/);
});
