import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { IsolaError } from '../errors.js';
import {
  SNAPSHOT_FORMAT,
  SNAPSHOT_META,
  type SnapshotInputs,
  type SnapshotMeta,
  assertFresh,
  readSnapshotMeta,
  staleReasons,
  writeSnapshotMeta,
} from './snapshot.js';

const inputs: SnapshotInputs = {
  format: SNAPSHOT_FORMAT,
  assets: 'abc123',
  agentVersion: '0.3.0',
  protocolVersion: 3,
  qemu: '7.2.19',
  accel: 'tcg',
  tscKhz: 2596161,
};

const meta: SnapshotMeta = {
  inputs,
  vm: { vcpus: 1, memoryMiB: 256, drives: [], functionPort: true, hostname: 'h' },
  extra: { execId: 3 },
  createdAt: '2026-11-26T00:00:00.000Z',
  saveMs: 8,
  stateBytes: 70_000,
};

describe('snapshot inputs', () => {
  test('the same inputs are fresh; every differing input is named', () => {
    assert.deepEqual(staleReasons(inputs, { ...inputs }), []);
    const why = staleReasons(inputs, { ...inputs, agentVersion: '0.4.0', accel: 'kvm' });
    assert.equal(why.length, 2);
    assert.match(why[0]!, /agentVersion: snapshot has 0\.3\.0, now 0\.4\.0/);
    assert.match(why[1]!, /accel/);
    // Each input on its own makes a snapshot stale (a new guest build, QEMU, TSC...).
    for (const k of Object.keys(inputs) as Array<keyof SnapshotInputs>) {
      const changed = { ...inputs, [k]: k === 'tscKhz' ? 1 : `${String(inputs[k])}x` };
      assert.equal(staleReasons(inputs, changed as SnapshotInputs).length, 1, k);
    }
  });

  test('assertFresh throws E_SNAPSHOT_STALE with the reasons', () => {
    assert.doesNotThrow(() => assertFresh('/d', meta, inputs));
    assert.throws(
      () => assertFresh('/d', meta, { ...inputs, assets: 'def456' }),
      (e: unknown) =>
        e instanceof IsolaError &&
        e.code === 'E_SNAPSHOT_STALE' &&
        (e.details?.reasons as string[]).length === 1,
    );
  });

  test('meta round-trips; a missing or damaged file is E_SNAPSHOT', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'isola-unit-snap-'));
    try {
      assert.throws(
        () => readSnapshotMeta(dir),
        (e: unknown) => (e as IsolaError).code === 'E_SNAPSHOT',
      );
      writeSnapshotMeta(dir, meta);
      assert.deepEqual(readSnapshotMeta(dir), meta);
      writeFileSync(path.join(dir, SNAPSHOT_META), '{not json');
      assert.throws(() => readSnapshotMeta(dir), /damaged/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
