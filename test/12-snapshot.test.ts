// Snapshot and restore of a running micro-VM: one booted source, snapshotted with a Node.js
// process running in it; two clones restored from that one snapshot. Each clone keeps its own
// writes (a file, and a variable in the process that was running at snapshot time), has its own
// hostname, clock and randomness (the same process draws different UUIDs and bytes in each
// clone), the snapshot's memory file is never changed by clones, and a snapshot made from other
// inputs (an older agent) is refused.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  closeSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { IsolaError } from '../src/errors.js';
import { MicroVmDriver } from '../src/sandbox/drivers/microvm.js';
import type { Sandbox, SandboxProcess } from '../src/sandbox/sandbox.js';
import {
  SNAPSHOT_MEMORY,
  SNAPSHOT_META,
  type SnapshotMeta,
  readSnapshotMeta,
} from '../src/sandbox/snapshot.js';
import { leftovers } from './helpers.js';

// A process that keeps state in memory and answers each stdin line with its state and fresh
// random values: what a clone's memory and randomness look like from inside.
const PROBE = `
const c = require('node:crypto');
let counter = 0;
let buf = '';
process.stdin.on('data', (d) => {
  buf += d;
  let nl;
  while ((nl = buf.indexOf('\\n')) >= 0) {
    const cmd = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    if (cmd.startsWith('add ')) counter += Number(cmd.slice(4));
    process.stdout.write(JSON.stringify({
      counter,
      uuid: c.randomUUID(),
      bytes: c.randomBytes(16).toString('hex'),
      hostname: require('node:os').hostname(),
      now: Date.now(),
    }) + '\\n');
  }
});
`;

interface ProbeAnswer {
  counter: number;
  uuid: string;
  bytes: string;
  hostname: string;
  now: number;
}

/** Send a line to the probe in `sb` (attached by exec id after a restore) and read its answer. */
function probeAsk(
  sb: Sandbox,
  proc: { execId: number; pid: number },
  line: string,
): Promise<ProbeAnswer> {
  return new Promise((resolve, reject) => {
    let out = '';
    let handle: SandboxProcess;
    const timer = setTimeout(() => reject(new Error('probe did not answer')), 30_000);
    try {
      handle = sb.attach(proc.execId, proc.pid, {
        onStdout: (d) => {
          out += d.toString();
          const nl = out.indexOf('\n');
          if (nl >= 0) {
            clearTimeout(timer);
            resolve(JSON.parse(out.slice(0, nl)) as ProbeAnswer);
          }
        },
      });
    } catch (err) {
      clearTimeout(timer);
      reject(err);
      return;
    }
    handle.writeStdin(`${line}\n`).catch(reject);
  });
}

const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

describe('snapshot and restore', () => {
  const driver = new MicroVmDriver();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'isola-test-snap-'));
  const snapDir = path.join(dir, 'snap');
  let meta: SnapshotMeta;
  let memDigest: string;
  const clones: Sandbox[] = [];
  let probe: { execId: number; pid: number };
  let before0: ProbeAnswer;

  before(async () => {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(snapDir);
    const src = await driver.create({
      memoryMiB: 256,
      memoryFile: path.join(snapDir, SNAPSHOT_MEMORY),
      hostname: 'snap-source',
    });
    try {
      await src.start();
      await src.writeFile('/tmp/owner', 'source');
      const p = await src.exec({ argv: ['/usr/bin/node', '-e', PROBE], stdin: true });
      probe = { execId: p.execId, pid: p.pid };
      before0 = await probeAsk(src, probe, 'add 5');
      meta = await src.snapshot(snapDir, { probe });
    } finally {
      await src.destroy();
    }
    memDigest = sha(path.join(snapDir, SNAPSHOT_MEMORY));
    for (const name of ['clone-a', 'clone-b']) {
      const c = await driver.fromSnapshot(snapDir, { hostname: name });
      if (name === 'clone-b') await c.prepare(); // one pre-spawned VMM, one spawned at start
      await c.start();
      clones.push(c);
    }
  });

  after(async () => {
    await Promise.all(clones.map((c) => c.destroy()));
    rmSync(dir, { recursive: true, force: true });
  });

  test('the snapshot records its inputs and the device state is small', (t) => {
    t.diagnostic(`save ${meta.saveMs.toFixed(1)} ms, state ${meta.stateBytes} bytes`);
    assert.equal(meta.extra.probe && (meta.extra.probe as { execId: number }).execId, probe.execId);
    assert.ok(meta.stateBytes > 0 && meta.stateBytes < 4 * 1024 * 1024);
    assert.match(meta.inputs.assets, /^[0-9a-f]{12,}$/);
    assert.equal(before0.counter, 5);
  });

  test('clones restore running, from a pre-spawned VMM or not', (t) => {
    for (const c of clones) {
      assert.equal(c.state, 'running');
      t.diagnostic(`${c.id}: ${JSON.stringify(c.restore)}`);
    }
    assert.equal(clones[0]!.restore?.prespawned, false);
    assert.equal(clones[1]!.restore?.prespawned, true);
    assert.equal(clones[1]!.restore?.spawnMs, 0);
  });

  test('each clone keeps its own writes: a file and a process variable', async () => {
    const [a, b] = clones as [Sandbox, Sandbox];
    assert.equal((await a.readFile('/tmp/owner')).toString(), 'source');
    await a.writeFile('/tmp/owner', 'a');
    await b.writeFile('/tmp/owner', 'b');
    assert.equal((await a.readFile('/tmp/owner')).toString(), 'a');
    assert.equal((await b.readFile('/tmp/owner')).toString(), 'b');
    const ra = await probeAsk(a, probe, 'add 1');
    const rb = await probeAsk(b, probe, 'add 100');
    assert.equal(ra.counter, 6);
    assert.equal(rb.counter, 105);
    assert.equal((await probeAsk(a, probe, 'add 0')).counter, 6);
  });

  test('each clone has its own hostname, clock and random numbers', async () => {
    const [a, b] = clones as [Sandbox, Sandbox];
    const ra = await probeAsk(a, probe, 'show');
    const rb = await probeAsk(b, probe, 'show');
    // The process that was running at snapshot time draws differently in each clone.
    assert.notEqual(ra.uuid, rb.uuid);
    assert.notEqual(ra.bytes, rb.bytes);
    assert.equal(ra.hostname, 'clone-a');
    assert.equal(rb.hostname, 'clone-b');
    assert.ok(Math.abs(ra.now - Date.now()) < 5000, `clone clock off by ${ra.now - Date.now()} ms`);
    // New processes and the kernel pool too.
    const [na, nb] = await Promise.all(
      [a, b].map((c) =>
        c.run(['sh', '-c', 'hostname; head -c 16 /dev/urandom | od -An -tx1 | tr -d " \\n"']),
      ),
    );
    assert.notEqual(na!.stdout, nb!.stdout);
    assert.match(na!.stdout, /^clone-a\n/);
  });

  test("clones never write the snapshot's memory file, also when they free much memory", async () => {
    // Fill and free 96 MiB of guest memory (tmpfs pages) in one clone, then give the guest time
    // to report free pages, as an out-of-memory handler would.
    const r = await clones[0]!.run([
      'sh',
      '-c',
      'dd if=/dev/zero of=/tmp/big bs=1M count=96 2>/dev/null; rm /tmp/big; sleep 3; echo done',
    ]);
    assert.equal(r.stdout.trim(), 'done');
    assert.equal(sha(path.join(snapDir, SNAPSHOT_MEMORY)), memDigest);
    // And a clone restored after that still works.
    const c = await driver.fromSnapshot(snapDir, { hostname: 'clone-c' });
    clones.push(c);
    await c.start();
    assert.equal((await c.run(['hostname'])).stdout.trim(), 'clone-c');
  });

  test(
    "a clone's VMM maps a sealed copy of the memory: nobody can write it, root included",
    { skip: process.getuid?.() === 0 ? false : 'the VMM jail (and sealed memory) needs root' },
    () => {
      const pid = clones[0]!.vmmPid!;
      const maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
      assert.match(maps, /memfd:isola-snapshot/, 'guest RAM is the sealed memfd');
      assert.ok(!maps.includes(path.join(snapDir, SNAPSHOT_MEMORY)), 'not the snapshot file');
      // Through the VMM's own descriptor: a write, a hole punch, a resize all fail (sealed).
      const fd = openSync(`/proc/${pid}/fd/4`, 'r+');
      try {
        assert.throws(() => writeSync(fd, Buffer.from('x'), 0, 1, 0), /EPERM/);
        assert.throws(() => ftruncateSync(fd, 4096), /EPERM/);
      } finally {
        closeSync(fd);
      }
    },
  );

  test('a snapshot made by another agent version is refused (E_SNAPSHOT_STALE)', async () => {
    const stale = path.join(dir, 'stale');
    const { cpSync } = await import('node:fs');
    cpSync(snapDir, stale, { recursive: true });
    const m = readSnapshotMeta(stale);
    writeFileSync(
      path.join(stale, SNAPSHOT_META),
      JSON.stringify({ ...m, inputs: { ...m.inputs, agentVersion: '0.0.1' } }),
    );
    await assert.rejects(driver.fromSnapshot(stale), (err: unknown) => {
      assert.ok(err instanceof IsolaError);
      assert.equal(err.code, 'E_SNAPSHOT_STALE');
      assert.match(err.message, /agentVersion/);
      return true;
    });
    rmSync(stale, { recursive: true, force: true });
  });

  test('destroying clones leaves nothing behind', async () => {
    const ids = clones.map((c) => c.id);
    await Promise.all(clones.map((c) => c.destroy()));
    const left = leftovers();
    for (const id of ids) {
      assert.ok(!left.folders.includes(id));
      assert.ok(!left.cgroups.some((c) => c.includes(id)));
    }
  });
});
