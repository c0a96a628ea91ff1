import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IsolaError } from '../errors.js';
import { SPEC_DEFAULTS, parseSandboxSpec } from './spec.js';

/** Asserts E_INVALID_SPEC and that some listed problem names `field`; returns the problems. */
function problemsOf(input: unknown, field: string): string[] {
  let problems: string[] = [];
  assert.throws(
    () => parseSandboxSpec(input),
    (e: unknown) => {
      assert.ok(e instanceof IsolaError, `not an IsolaError: ${String(e)}`);
      assert.equal(e.code, 'E_INVALID_SPEC');
      const p = e.details?.problems;
      assert.ok(
        Array.isArray(p) && p.every((x) => typeof x === 'string'),
        'details.problems is not a string[]',
      );
      problems = p as string[];
      assert.ok(
        problems.some((x) => x.includes(field)),
        `no problem mentions ${field}: ${JSON.stringify(problems)}`,
      );
      assert.ok(e.message.includes(field), e.message);
      return true;
    },
  );
  return problems;
}

function invalid(input: unknown, field: string): void {
  problemsOf(input, field);
}

describe('parseSandboxSpec', () => {
  test('applies the defaults to an empty spec', () => {
    const spec = parseSandboxSpec({});
    assert.equal(spec.vcpus, 1);
    assert.equal(spec.memoryMiB, 256);
    assert.equal(spec.vcpus, SPEC_DEFAULTS.vcpus);
    assert.equal(spec.memoryMiB, SPEC_DEFAULTS.memoryMiB);
    assert.equal(spec.bootRetries, SPEC_DEFAULTS.bootRetries);
    assert.deepEqual(spec.drives, []);
    assert.deepEqual(spec.env, {});
    assert.deepEqual(spec.timeouts, {});
    assert.equal(spec.accel, 'auto');
    assert.equal(spec.guestImage, undefined);
  });

  test('undefined and null mean the empty spec', () => {
    assert.deepEqual(parseSandboxSpec(undefined), parseSandboxSpec({}));
    assert.deepEqual(parseSandboxSpec(null), parseSandboxSpec({}));
  });

  test('keeps given values and fills drive defaults', () => {
    const spec = parseSandboxSpec({
      vcpus: 4,
      memoryMiB: 1024,
      hostname: 'fn-1',
      env: { A: 'b' },
      drives: [{ path: '/bin/sh' }, { path: '/bin/sh', readonly: false, format: 'qcow2' }],
      timeouts: { bootMs: 5000 },
    });
    assert.equal(spec.vcpus, 4);
    assert.equal(spec.memoryMiB, 1024);
    assert.equal(spec.hostname, 'fn-1');
    assert.deepEqual(spec.env, { A: 'b' });
    assert.deepEqual(spec.drives, [
      { path: '/bin/sh', readonly: true, format: 'raw' },
      { path: '/bin/sh', readonly: false, format: 'qcow2' },
    ]);
    assert.deepEqual(spec.timeouts, { bootMs: 5000 });
  });

  test('accepts existing files for guestImage, kernel, initrd and drives', () => {
    const spec = parseSandboxSpec({ guestImage: '/bin/sh', kernel: '/bin/sh', initrd: '/bin/sh' });
    assert.equal(spec.guestImage, '/bin/sh');
    assert.equal(spec.kernel, '/bin/sh');
    assert.equal(spec.initrd, '/bin/sh');
  });

  test('negative memory', () => invalid({ memoryMiB: -256 }, 'memoryMiB'));
  test('memory below 128 MiB', () => {
    invalid({ memoryMiB: 127 }, 'memoryMiB');
    assert.equal(parseSandboxSpec({ memoryMiB: 128 }).memoryMiB, 128);
  });
  test('memory as a string', () => invalid({ memoryMiB: '256' }, 'memoryMiB'));
  test('fractional memory', () => invalid({ memoryMiB: 256.5 }, 'memoryMiB'));
  test('zero vCPUs', () => invalid({ vcpus: 0 }, 'vcpus'));
  test('too many vCPUs', () => invalid({ vcpus: 33 }, 'vcpus'));
  test('unknown top-level field', () => invalid({ memoryMiB: 256, cpuCount: 4 }, 'cpuCount'));
  test('unknown field in timeouts', () =>
    invalid({ timeouts: { bootMs: 1000, forever: true } }, 'forever'));
  test('unknown field in a drive', () =>
    invalid({ drives: [{ path: '/bin/sh', cache: 'none' }] }, 'cache'));
  test('bad hostname', () => {
    invalid({ hostname: 'bad host!' }, 'hostname');
    invalid({ hostname: '-leading-dash' }, 'hostname');
    invalid({ hostname: 'a'.repeat(64) }, 'hostname');
  });
  test('env key with "="', () => invalid({ env: { 'A=B': 'c' } }, 'env'));
  test('bad accel', () => invalid({ accel: 'hvf' }, 'accel'));

  test('every problem is listed, not just the first', () => {
    const problems = problemsOf({ vcpus: 0, memoryMiB: -1, bogus: 1 }, 'vcpus');
    for (const f of ['vcpus', 'memoryMiB', 'bogus']) {
      assert.ok(
        problems.some((p) => p.includes(f)),
        `${f} missing from ${JSON.stringify(problems)}`,
      );
    }
  });

  test('non-existent guest image', () =>
    invalid({ guestImage: '/nonexistent/guest.ext4' }, 'guestImage'));
  test('non-existent kernel and initrd', () => {
    invalid({ kernel: '/nonexistent/vmlinuz' }, 'kernel');
    invalid({ initrd: '/nonexistent/initrd' }, 'initrd');
  });
  test('non-existent drive names its index', () =>
    invalid({ drives: [{ path: '/bin/sh' }, { path: '/nonexistent/disk.img' }] }, 'drives.1.path'));
  test('empty drive path', () => invalid({ drives: [{ path: '' }] }, 'drives.0.path'));
  test('a non-object spec', () => {
    invalid('big', '(spec)');
    invalid([], '(spec)');
  });
});
