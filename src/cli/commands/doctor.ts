// isola doctor [--json] [--reprobe] [--reap]: what this host can do for isola, like
// `kata-runtime check`. Each check says ok / warn / fail and why; exit code 1 when a required
// check fails.
import { execFileSync } from 'node:child_process';
import { constants, accessSync, existsSync, mkdirSync, rmdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { nativeHelper } from '../../assets/native.js';
import { type GuestAssets, loadAssets, runDir } from '../../assets/paths.js';
import { toIsolaError } from '../../errors.js';
import { networkEnabled } from '../../net/attach.js';
import { DEFAULT_POOL } from '../../net/pool.js';
import { reap } from '../../sandbox/reaper.js';
import { readOwnerRecord, sandboxesDir } from '../../sandbox/run-record.js';
import { chooseAccel, kvmUsable, qemuVersion, tcgTscKhz } from '../../vmm/accel.js';
import { cgroupMode, sandboxCgroupPaths } from '../../vmm/cgroup.js';
import { jailEnabled } from '../../vmm/jail.js';
import { QEMU_BINARY } from '../../vmm/qemu-process.js';
import { parseCli, printJson, reportError } from '../output.js';

type Status = 'ok' | 'warn' | 'fail';
interface Check {
  name: string;
  status: Status;
  detail: string;
  data?: Record<string, unknown>;
}

function tryRun(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    return null;
  }
}

function checkQemu(): Check {
  try {
    const version = qemuVersion();
    const machines = tryRun(QEMU_BINARY, ['-machine', 'help']) ?? '';
    const microvm = /^microvm\s/m.test(machines);
    return {
      name: 'qemu',
      status: microvm ? 'ok' : 'fail',
      detail: `${QEMU_BINARY} ${version}${microvm ? ', microvm machine available' : ', no microvm machine type'}`,
      data: { binary: QEMU_BINARY, version, microvm },
    };
  } catch (err) {
    return { name: 'qemu', status: 'fail', detail: toIsolaError(err).message };
  }
}

function checkAssets(): { check: Check; assets: GuestAssets | null } {
  try {
    const a = loadAssets();
    return {
      assets: a,
      check: {
        name: 'guest-assets',
        status: 'ok',
        detail: `digest ${a.digest.slice(0, 16)}, kernel ${a.kernelRelease}`,
        data: { digest: a.digest, kernelRelease: a.kernelRelease, files: a.files },
      },
    };
  } catch (err) {
    return {
      assets: null,
      check: { name: 'guest-assets', status: 'fail', detail: toIsolaError(err).message },
    };
  }
}

function checkCgroups(): Check {
  const mode = cgroupMode();
  if (mode === 'none')
    return { name: 'cgroups', status: 'fail', detail: 'no cgroup hierarchy found' };
  // Try creating and removing a sandbox cgroup for real.
  const dirs = sandboxCgroupPaths(`doctor-${process.pid}`, mode);
  try {
    for (const d of dirs) mkdirSync(d, { recursive: true });
    for (const d of dirs) rmdirSync(d);
    return {
      name: 'cgroups',
      status: 'ok',
      detail: `${mode === 'v2' ? 'cgroup v2' : 'cgroup v1 (memory, cpu, pids)'}; sandbox cgroups under ${path.dirname(dirs[0]!)}`,
      data: { mode, parents: dirs.map((d) => path.dirname(d)) },
    };
  } catch (err) {
    for (const d of dirs) if (existsSync(d)) rmdirSync(d);
    return {
      name: 'cgroups',
      status: 'fail',
      detail: `cannot create sandbox cgroups: ${(err as Error).message}`,
      data: { mode },
    };
  }
}

function checkNetwork(): Check[] {
  const out: Check[] = [];
  let tun = false;
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
    tun = true;
  } catch {
    tun = false;
  }
  out.push({
    name: 'tun',
    status: tun ? 'ok' : 'warn',
    detail: tun ? '/dev/net/tun usable' : '/dev/net/tun missing: no sandbox networking',
  });
  const ns = `isola-doctor-${process.pid}`;
  const added = tryRun('ip', ['netns', 'add', ns]) !== null;
  if (added) tryRun('ip', ['netns', 'delete', ns]);
  out.push({
    name: 'netns',
    status: added ? 'ok' : 'warn',
    detail: added
      ? 'network namespaces can be created'
      : 'cannot create network namespaces (ip netns add failed)',
  });
  const nft = tryRun('nft', ['--version']);
  const nsenter = tryRun('nsenter', ['--version']);
  const enabled = networkEnabled();
  out.push({
    name: 'sandbox-network',
    status: enabled && tun && added && nft && nsenter ? 'ok' : 'warn',
    detail: !enabled
      ? 'off (not root, ISOLA_NETWORK=0 or ISOLA_JAIL=0): functions get no network interface'
      : !nft || !nsenter
        ? 'nft or nsenter missing (run scripts/setup.sh): sandbox networks will fail'
        : `on: a namespace, uplink from ${process.env.ISOLA_NET_POOL ?? DEFAULT_POOL}, NAT and an egress policy per sandbox`,
    data: { enabled, nft: nft !== null, nsenter: nsenter !== null },
  });
  // Another firewall's FORWARD policy (Docker sets DROP) would drop sandbox traffic before ours.
  const forward = tryRun('iptables', ['-S', 'FORWARD']) ?? '';
  if (/^-P FORWARD DROP/m.test(forward)) {
    out.push({
      name: 'forward-policy',
      status: 'warn',
      detail: 'iptables FORWARD policy is DROP: sandbox egress needs an ACCEPT for isv* interfaces',
    });
  }
  const vsock = existsSync('/dev/vhost-vsock');
  out.push({
    name: 'agent-transport',
    status: 'ok',
    detail: vsock
      ? 'vhost-vsock available; virtio-serial in use'
      : 'no /dev/vhost-vsock: virtio-serial (needs no vhost)',
    data: { vhostVsock: vsock, transport: 'virtio-serial' },
  });
  return out;
}

function checkJail(): Check {
  if (!jailEnabled()) {
    return {
      name: 'vmm-jail',
      status: 'warn',
      detail:
        process.getuid?.() === 0
          ? 'off (ISOLA_JAIL=0): QEMU runs unconfined apart from its cgroups'
          : 'off (not root): QEMU runs as this user, unconfined apart from its cgroups',
    };
  }
  const helper = nativeHelper('isola-jail');
  return {
    name: 'vmm-jail',
    status: helper ? 'ok' : 'fail',
    detail: helper
      ? 'each QEMU: own user, own mount/PID/IPC/UTS/net namespaces, minimal root, seccomp'
      : 'the jail helper (native/isola-jail.c) cannot be built: install gcc (scripts/setup.sh)',
    data: { helper },
  };
}

function checkRunDir(): Check {
  const dir = runDir();
  try {
    mkdirSync(sandboxesDir(dir), { recursive: true });
    accessSync(dir, constants.W_OK);
  } catch (err) {
    return {
      name: 'run-dir',
      status: 'fail',
      detail: `${dir} not writable: ${(err as Error).message}`,
    };
  }
  return { name: 'run-dir', status: 'ok', detail: dir };
}

export async function doctor(argv: string[]): Promise<number> {
  const { values } = parseCli({
    args: argv,
    options: {
      json: { type: 'boolean', default: false },
      reprobe: { type: 'boolean', default: false },
      reap: { type: 'boolean', default: false },
    },
  });
  try {
    const checks: Check[] = [];
    checks.push({
      name: 'host',
      status: 'ok',
      detail: `${os.type()} ${os.release()}, ${os.cpus().length} CPUs, ${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    });
    checks.push(checkQemu());
    const { check, assets } = checkAssets();
    checks.push(check);
    const kvm = kvmUsable();
    if (assets) {
      const d = await chooseAccel(assets, { reprobe: values.reprobe === true });
      const tscKhz = d.accel === 'tcg' ? await tcgTscKhz(assets) : null;
      checks.push({
        name: 'accelerator',
        status: 'ok',
        detail: `${d.accel}: ${d.reason} (${d.source}${d.probedAt ? `, probed ${d.probedAt}` : ''})${tscKhz ? `; guest TSC ${tscKhz} kHz (calibrated once, skips in-guest calibration)` : ''}`,
        data: { ...d, kvmDevice: kvm.ok, tscKhz },
      });
    } else {
      checks.push({
        name: 'accelerator',
        status: 'fail',
        detail: `cannot probe without guest assets (${kvm.reason})`,
      });
    }
    checks.push(checkCgroups());
    checks.push(...checkNetwork());
    checks.push(checkJail());
    checks.push(checkRunDir());
    let leftovers: string[] = [];
    try {
      leftovers = (await import('node:fs'))
        .readdirSync(sandboxesDir())
        .filter((id) => readOwnerRecord(path.join(sandboxesDir(), id)) !== null);
    } catch {
      leftovers = [];
    }
    if (values.reap) {
      const r = await reap();
      checks.push({
        name: 'reaper',
        status: r.errors.length ? 'warn' : 'ok',
        detail: `removed ${r.sandboxes.length} dead sandboxes, killed ${r.killedPids.length} processes, removed ${r.cgroups.length} cgroups${r.errors.length ? `; ${r.errors.join('; ')}` : ''}`,
        data: { ...r },
      });
    } else {
      checks.push({
        name: 'sandboxes',
        status: 'ok',
        detail: `${leftovers.length} sandbox folders in the run dir`,
        data: { ids: leftovers },
      });
    }
    const failed = checks.some((c) => c.status === 'fail');
    if (values.json) {
      printJson({ ok: !failed, checks });
    } else {
      for (const c of checks) {
        const mark = c.status === 'ok' ? 'ok  ' : c.status === 'warn' ? 'warn' : 'FAIL';
        process.stdout.write(`${mark}  ${c.name.padEnd(16)} ${c.detail}\n`);
      }
    }
    return failed ? 1 : 0;
  } catch (err) {
    return reportError(err, values.json === true);
  }
}
