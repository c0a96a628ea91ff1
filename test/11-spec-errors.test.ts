// Bad specs are typed errors and start nothing: no QEMU process, no run folder, no cgroup.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IsolaError } from '../src/errors.js';
import { MicroVmDriver } from '../src/sandbox/drivers/microvm.js';
import { leftovers } from './helpers.js';

const cases: Array<[string, unknown, string]> = [
  ['negative memory', { memoryMiB: -256 }, 'memoryMiB'],
  ['zero vcpus', { vcpus: 0 }, 'vcpus'],
  ['missing guest image', { guestImage: '/nonexistent/guest.ext4' }, 'guestImage'],
  ['missing drive', { drives: [{ path: '/nonexistent/disk.img' }] }, 'drives.0.path'],
  ['unknown field', { memoryMiB: 256, cpuCount: 4 }, 'cpuCount'],
  ['unknown nested field', { timeouts: { bootMs: 1000, forever: true } }, 'forever'],
  ['wrong type', { memoryMiB: '256' }, 'memoryMiB'],
  ['bad hostname', { hostname: 'bad host!' }, 'hostname'],
];

for (const [name, spec, field] of cases) {
  test(`invalid spec (${name}) is E_INVALID_SPEC and starts nothing`, async () => {
    const before = leftovers();
    const driver = new MicroVmDriver();
    await assert.rejects(driver.create(spec as never), (e: unknown) => {
      assert.ok(e instanceof IsolaError, `not an IsolaError: ${String(e)}`);
      assert.equal(e.code, 'E_INVALID_SPEC');
      assert.match(e.message, new RegExp(field.replace('.', '\\.')));
      return true;
    });
    assert.deepEqual(leftovers(), before);
  });
}
