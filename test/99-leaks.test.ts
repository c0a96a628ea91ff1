// Runs last: after the whole suite, nothing of it may remain: no QEMU process, no sandbox folder
// or socket in the suite's run dir, no sandbox cgroup, no temp dir.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import { test } from 'node:test';
import { leftovers } from './helpers.js';

test('no QEMU process, socket, cgroup or temp dir of the suite remains', () => {
  assert.deepEqual(leftovers(), { qemu: [], folders: [], cgroups: [], uplinks: [] });
  const temps = readdirSync(os.tmpdir()).filter(
    (n) => n.startsWith('isola-') && n !== 'isola-test-run' && !n.startsWith('isola-test-report-'),
  );
  assert.deepEqual(temps, []);
});

test('no network namespace or interface of the network tests remains', () => {
  // Fake hosts (net-helpers.ts) live in named namespaces isola-t-*; their host ends are t-*-h.
  let named: string[] = [];
  try {
    named = readdirSync('/run/netns').filter((n) => n.startsWith('isola-t-'));
  } catch {
    named = [];
  }
  assert.deepEqual(named, []);
  const links = readdirSync('/sys/class/net').filter((n) => /^t-.*-h$/.test(n));
  assert.deepEqual(links, []);
});

test('no registry, token server or skopeo process of the image tests remains', () => {
  // Any process whose command line names a test registry's folder (registry, setpriv wrapper).
  const procs = readdirSync('/proc').filter((p) => {
    if (!/^\d+$/.test(p)) return false;
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('isola-test-registry-');
    } catch {
      return false;
    }
  });
  assert.deepEqual(procs, []);
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('isola-test-') || l.startsWith('isola-bench'));
  assert.deepEqual(mounts, [], 'no tmpfs of the tests left mounted');
});

test('no PostgreSQL server of the platform store tests remains', () => {
  // The postmaster's command line names its data dir inside the isola-test-pg- temp dir (its
  // children rename themselves, but they exit with it).
  const procs = readdirSync('/proc').filter((p) => {
    if (!/^\d+$/.test(p)) return false;
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('isola-test-pg-');
    } catch {
      return false;
    }
  });
  assert.deepEqual(procs, []);
});
