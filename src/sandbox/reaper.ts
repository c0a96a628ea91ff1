// The reaper removes what a dead isola process left behind: QEMU processes (and with them their
// jails and network namespaces: tap, rules, uplink), cgroups, sockets and run folders of
// sandboxes whose owner process no longer exists. It runs when a driver starts
// (the "next start" after a crash) and from `isola doctor --reap`. Safe to run concurrently with
// live isola processes: it only touches sandboxes whose owner is provably gone.

import { readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { runDir } from '../assets/paths.js';
import { removeHostLink } from '../net/attach.js';
import { cgroupPids, listSandboxCgroups, removeCgroups } from '../vmm/cgroup.js';
import { sameProcessAlive } from '../vmm/qemu-process.js';
import { readOwnerRecord, sandboxesDir } from './run-record.js';

/** A folder without a readable owner record is only reaped once older than this (it may be mid-creation). */
const UNOWNED_GRACE_MS = 60_000;
/** Time for a SIGKILLed QEMU to leave its cgroup. */
const KILL_WAIT_MS = 5_000;

export interface ReapReport {
  sandboxes: string[];
  killedPids: number[];
  cgroups: string[];
  errors: string[];
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** QEMU processes whose command line points into this run dir (found even without a record). */
export function findQemuProcesses(base = runDir()): Array<{ pid: number; id: string | null }> {
  const marker = `${sandboxesDir(base)}/`;
  const out: Array<{ pid: number; id: string | null }> = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    const argv = cmd.split('\0');
    if (!argv[0]?.includes('qemu-system')) continue;
    const hit = argv.find((a) => a.includes(marker));
    if (!hit) continue;
    const id = hit.slice(hit.indexOf(marker) + marker.length).split('/')[0] ?? null;
    out.push({ pid: Number(e), id });
  }
  return out;
}

async function killAndWait(pids: number[]): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + KILL_WAIT_MS;
  while (Date.now() < deadline && pids.some((p) => sameProcessAlive(p, null))) await sleep(20);
}

export async function reap(base = runDir()): Promise<ReapReport> {
  const report: ReapReport = { sandboxes: [], killedPids: [], cgroups: [], errors: [] };
  const dir = sandboxesDir(base);
  let entries: string[] = [];
  try {
    entries = readdirSync(dir);
  } catch {
    entries = [];
  }
  const live = new Set<string>();
  const qemus = findQemuProcesses(base);
  for (const id of entries) {
    const sdir = path.join(dir, id);
    const rec = readOwnerRecord(sdir);
    if (rec) {
      if (sameProcessAlive(rec.hostPid, rec.hostStartTime)) {
        live.add(id);
        continue;
      }
    } else {
      let age = 0;
      try {
        age = Date.now() - statSync(sdir).mtimeMs;
      } catch {
        continue;
      }
      if (age < UNOWNED_GRACE_MS) {
        live.add(id);
        continue;
      }
    }
    const pids = qemus.filter((q) => q.id === id).map((q) => q.pid);
    if (
      rec?.qemuPid &&
      sameProcessAlive(rec.qemuPid, rec.qemuStartTime) &&
      !pids.includes(rec.qemuPid)
    ) {
      pids.push(rec.qemuPid);
    }
    // Processes still in the sandbox's cgroups (QEMU threads or a launcher) go too.
    for (const cg of rec?.cgroups ?? [])
      for (const p of cgroupPids(cg)) if (!pids.includes(p)) pids.push(p);
    await killAndWait(pids);
    report.killedPids.push(...pids);
    // Its network lived in QEMU's namespace; the host end of the uplink goes with it.
    if (rec?.uplink) await removeHostLink(rec.uplink);
    // A killed process stays in its cgroup until its parent has reaped it.
    const deadline = Date.now() + KILL_WAIT_MS;
    while (Date.now() < deadline && (rec?.cgroups ?? []).some((cg) => cgroupPids(cg).length > 0))
      await sleep(20);
    const left = removeCgroups(rec?.cgroups ?? []);
    report.cgroups.push(...(rec?.cgroups ?? []).filter((c) => !left.includes(c)));
    if (left.length) report.errors.push(`cgroups still busy: ${left.join(', ')}`);
    rmSync(sdir, { recursive: true, force: true });
    report.sandboxes.push(id);
  }
  // QEMU processes of this run dir with no folder at all (folder removed by hand).
  const orphans = qemus
    .filter((q) => q.id !== null && !live.has(q.id) && !entries.includes(q.id))
    .map((q) => q.pid);
  if (orphans.length) {
    await killAndWait(orphans);
    report.killedPids.push(...orphans);
  }
  // Empty sandbox cgroups whose sandbox folder is gone (crash between cgroup and record).
  for (const cg of listSandboxCgroups()) {
    const id = path.basename(cg);
    if (live.has(id) || (entries.includes(id) && !report.sandboxes.includes(id))) continue;
    let age = 0;
    try {
      age = Date.now() - statSync(cg).mtimeMs;
    } catch {
      continue;
    }
    if (age < UNOWNED_GRACE_MS && !report.sandboxes.includes(id)) continue;
    if (cgroupPids(cg).length === 0 && removeCgroups([cg]).length === 0) report.cgroups.push(cg);
  }
  return report;
}
