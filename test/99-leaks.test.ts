// Runs last: after the whole suite, nothing of it may remain: no QEMU process, no sandbox folder
// or socket in the suite's run dir, no sandbox cgroup, no temp dir.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import os from 'node:os';
import { test } from 'node:test';
import { leftovers } from './helpers.js';

test('no QEMU process, socket, cgroup or temp dir of the suite remains', () => {
  assert.deepEqual(leftovers(), { qemu: [], folders: [], cgroups: [] });
  const temps = readdirSync(os.tmpdir()).filter(
    (n) => n.startsWith('isola-') && n !== 'isola-test-run' && !n.startsWith('isola-test-report-'),
  );
  assert.deepEqual(temps, []);
});
