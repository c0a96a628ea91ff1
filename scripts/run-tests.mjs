#!/usr/bin/env node
// Runs the test suite with node's test runner over the compiled tests and ends with one line CI
// can read: "N passed, N failed, N skipped". Unit tests sit beside the code (dist/src/**/*.test.js);
// integration tests that boot real VMs are in dist/test/. Files run one at a time: VM tests share
// two cores under TCG, and parallel boots would only slow each other down.
//   node scripts/run-tests.mjs [--unit] [--integration] [name-filter...]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
const only = args.includes('--unit')
  ? 'unit'
  : args.includes('--integration')
    ? 'integration'
    : 'all';
const filters = args.filter((a) => !a.startsWith('--'));

function walk(dir) {
  let out = [];
  let entries = [];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out = out.concat(walk(p));
    else if (e.name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

// Only compiled tests whose source still exists: tsc leaves the output of a renamed or deleted
// test behind in dist/, and a stale test runs old expectations against new code.
const hasSource = (f) =>
  existsSync(path.join(root, path.relative(path.join(root, 'dist'), f)).replace(/\.js$/, '.ts'));
const unit = walk(path.join(root, 'dist/src')).filter(hasSource).sort();
// Integration files are numbered (test/NN-name.test.ts); the leak check runs last.
const integration = walk(path.join(root, 'dist/test')).filter(hasSource).sort();
let files =
  only === 'unit' ? unit : only === 'integration' ? integration : [...unit, ...integration];
if (filters.length) files = files.filter((f) => filters.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error('no test files found (did the build run?)');
  process.exit(1);
}

// Integration tests use their own run dir and cgroup parent, so the final leak check can tell
// the suite's leftovers from anything else on the machine.
const env = {
  ...process.env,
  ISOLA_RUN_DIR: process.env.ISOLA_RUN_DIR ?? path.join(os.tmpdir(), 'isola-test-run'),
  ISOLA_CGROUP_PARENT: process.env.ISOLA_CGROUP_PARENT ?? 'isola-test',
};
// Server logs of the platform tests (kept for post-mortems) are per run: drop the last run's.
rmSync(path.join(env.ISOLA_RUN_DIR, 'server-logs'), { recursive: true, force: true });
const tmp = mkdtempSync(path.join(os.tmpdir(), 'isola-test-report-'));
const tap = path.join(tmp, 'report.tap');
const r = spawnSync(
  process.execPath,
  [
    '--test',
    '--test-concurrency=1',
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${tap}`,
    ...files,
  ],
  { stdio: 'inherit', cwd: root, env },
);
let pass = 0;
let fail = 0;
let skip = 0;
try {
  const text = readFileSync(tap, 'utf8');
  pass = Number(/^# pass (\d+)/m.exec(text)?.[1] ?? 0);
  fail = Number(/^# fail (\d+)/m.exec(text)?.[1] ?? 0);
  skip = Number(/^# skipped (\d+)/m.exec(text)?.[1] ?? 0);
  fail += Number(/^# cancelled (\d+)/m.exec(text)?.[1] ?? 0);
} catch {
  fail = fail || 1;
}
rmSync(tmp, { recursive: true, force: true });
console.log(`\n${pass} passed, ${fail} failed, ${skip} skipped`);
process.exit(r.status === 0 && fail === 0 ? 0 : 1);
