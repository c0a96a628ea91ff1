// Crash safety: the host process that owns a sandbox is SIGKILLed mid-run. Its QEMU process (when
// the parent-death signal is off), cgroups, sockets, run folder and network (namespace, uplink,
// rules, held by QEMU) stay behind; the next start of a driver reaps them all.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runDir } from '../src/assets/paths.js';
import { MicroVmDriver } from '../src/sandbox/drivers/microvm.js';
import { readOwnerRecord, sandboxDir } from '../src/sandbox/run-record.js';
import { sameProcessAlive } from '../src/vmm/qemu-process.js';
import { ROOT, leftovers, sleep, uplinkInterfaces } from './helpers.js';

function holdSandbox(
  env: Record<string, string>,
): Promise<{ child: ReturnType<typeof spawn>; id: string; qemuPid: number }> {
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/test/fixtures/hold-sandbox.js')], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /READY (\S+) (\d+)/.exec(buf);
      if (m) resolve({ child, id: m[1]!, qemuPid: Number(m[2]) });
    });
    child.once('exit', (code) => reject(new Error(`holder exited early with ${code}`)));
  });
}

async function killHolder(child: ReturnType<typeof spawn>): Promise<void> {
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

test('the reaper cleans up after a host process killed mid-run (QEMU left running)', async () => {
  const { child, id, qemuPid } = await holdSandbox({ ISOLA_PDEATHSIG: '0' });
  const rec = readOwnerRecord(sandboxDir(id));
  assert.ok(rec, 'owner record written');
  await killHolder(child);
  await sleep(200);
  // What a crash leaves: QEMU still running, its folder with sockets, its cgroups.
  assert.ok(
    sameProcessAlive(qemuPid, rec.qemuStartTime),
    'QEMU outlived its owner (no parent-death signal)',
  );
  assert.ok(readdirSync(path.join(sandboxDir(id), 'vm')).includes('agent.sock'));
  if (process.getuid?.() === 0) {
    assert.equal(uplinkInterfaces().length, 1, "the sandbox's uplink is still there");
  }
  for (const cg of rec.cgroups) assert.ok(existsSync(cg), `cgroup ${cg} left behind`);

  // Next start: a new driver reaps before it creates anything.
  const sb = await new MicroVmDriver().create({});
  await sb.destroy();
  assert.equal(sameProcessAlive(qemuPid, rec.qemuStartTime), false, 'QEMU killed');
  assert.equal(existsSync(sandboxDir(id)), false, 'run folder removed');
  for (const cg of rec.cgroups) assert.equal(existsSync(cg), false, `cgroup ${cg} removed`);
  assert.deepEqual(leftovers(), { qemu: [], folders: [], cgroups: [], uplinks: [] });
});

test('with the parent-death signal, QEMU dies with its owner and the reaper removes the rest', async () => {
  const { child, id, qemuPid } = await holdSandbox({});
  const rec = readOwnerRecord(sandboxDir(id))!;
  await killHolder(child);
  for (let i = 0; i < 100 && sameProcessAlive(qemuPid, rec.qemuStartTime); i++) await sleep(20);
  assert.equal(
    sameProcessAlive(qemuPid, rec.qemuStartTime),
    false,
    'QEMU got SIGKILL when its parent died',
  );
  assert.ok(existsSync(sandboxDir(id)), 'folder left behind until the reaper runs');
  const sb = await new MicroVmDriver().create({});
  await sb.destroy();
  assert.equal(existsSync(sandboxDir(id)), false);
  assert.deepEqual(leftovers(), { qemu: [], folders: [], cgroups: [], uplinks: [] });
  assert.ok(existsSync(runDir()));
});
