import assert from 'node:assert/strict';
import { test } from 'node:test';
import { diskLimits } from './microvm.js';

test('disk limits per drive: 100 MiB/s and 2000 operations/s unless set; 0 turns them off', () => {
  assert.deepEqual(diskLimits({}), { bytesPerS: 100 * 1024 * 1024, opsPerS: 2000 });
  assert.deepEqual(diskLimits({ ISOLA_DISK_MBPS: '10', ISOLA_DISK_IOPS: '50' }), {
    bytesPerS: 10 * 1024 * 1024,
    opsPerS: 50,
  });
  assert.equal(diskLimits({ ISOLA_DISK_MBPS: '0' }), undefined);
  assert.deepEqual(diskLimits({ ISOLA_DISK_IOPS: 'lots' }), {
    bytesPerS: 100 * 1024 * 1024,
    opsPerS: 2000,
  });
});
