// Sandbox networks and the VMM jail, at the driver level. Three sandboxes with three egress
// policies try to reach hosts in network namespaces this test makes on this machine: "the
// internet" (198.51.100.10, a documentation address), the cloud metadata address
// (169.254.169.254), a private network (10.99.0.10), services of the host itself (on all its
// addresses) and each other. The host reaches every one of them (so a refusal is the policy,
// not a missing route). Then: the jailed VMM's credentials, namespaces and root.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { nodeAddresses } from '../src/net/host.js';
import type { Uplink } from '../src/net/pool.js';
import { MicroVmDriver } from '../src/sandbox/drivers/microvm.js';
import type { Sandbox } from '../src/sandbox/sandbox.js';
import { leftovers } from './helpers.js';
import { type FakeHost, PROBE_SOURCE, type Reach, type Target, fakeHost } from './net-helpers.js';

const root = process.getuid?.() === 0;
const skip = root ? false : 'sandbox networks and the jail need root (namespaces, veth, nftables)';

type NetSandbox = Sandbox & { uplink: Uplink | null };

async function probe(sb: Sandbox, targets: Target[]): Promise<Map<string, Reach>> {
  const r = await sb.run(['/usr/bin/node', '-e', PROBE_SOURCE, JSON.stringify(targets)]);
  assert.equal(r.exitCode, 0, r.stderr);
  const list = JSON.parse(r.stdout) as Reach[];
  return new Map(list.map((x) => [x.target, x]));
}

function hostConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, host);
    let data = '';
    s.setTimeout(3000, () => reject(new Error(`timeout to ${host}:${port}`)));
    s.on('data', (d) => {
      data += d;
    });
    s.on('end', () => resolve(data.trim()));
    s.on('error', reject);
  });
}

describe('sandbox networks', { skip }, () => {
  const driver = new MicroVmDriver();
  let inet: FakeHost;
  let meta: FakeHost;
  let priv: FakeHost;
  let hostService: net.Server;
  let hostPort = 0;
  let pub: NetSandbox;
  let listed: NetSandbox;
  let none: NetSandbox;
  const nodeAddr = nodeAddresses().find((a) => !a.startsWith('127.')) ?? '127.0.0.1';

  before(async () => {
    inet = await fakeHost('inet', {
      addr: '198.51.100.10',
      gw: '198.51.100.1',
      prefix: 24,
      port: 8080,
    });
    meta = await fakeHost('meta', {
      addr: '169.254.169.254',
      gw: '169.254.169.1',
      prefix: 24,
      port: 80,
    });
    priv = await fakeHost('priv', { addr: '10.99.0.10', gw: '10.99.0.1', prefix: 24, port: 5432 });
    hostService = net.createServer((s) => s.end('hello from the host\n'));
    await new Promise<void>((r) => hostService.listen(0, '0.0.0.0', () => r()));
    hostPort = (hostService.address() as net.AddressInfo).port;
    const make = (egress: unknown) => driver.create({ network: { egress } }) as Promise<NetSandbox>;
    [pub, listed, none] = await Promise.all([
      make({ mode: 'public' }),
      make({ mode: 'allowlist', allow: ['10.99.0.0/24:5432'] }),
      make({ mode: 'none' }),
    ]);
    await Promise.all([pub.start(), listed.start(), none.start()]);
  });

  after(async () => {
    await Promise.all([pub, listed, none].map((s) => s?.destroy()));
    for (const h of [inet, meta, priv]) await h?.close();
    hostService?.close();
  });

  test('the host reaches every test host (so a refusal below is the policy)', async () => {
    assert.equal(await hostConnect('198.51.100.10', 8080), 'hello from inet');
    assert.equal(await hostConnect('169.254.169.254', 80), 'hello from meta');
    assert.equal(await hostConnect('10.99.0.10', 5432), 'hello from priv');
    assert.equal(await hostConnect(nodeAddr, hostPort), 'hello from the host');
  });

  test('default policy: the internet yes; metadata, private ranges, the host and other sandboxes no', async () => {
    const other = listed.uplink!;
    const own = pub.uplink!;
    const targets = [
      { host: '198.51.100.10', port: 8080 },
      { host: '169.254.169.254', port: 80 },
      { host: '10.99.0.10', port: 5432 },
      { host: nodeAddr, port: hostPort },
      { host: own.hostIp, port: hostPort },
      { host: '172.31.255.1', port: hostPort },
      { host: other.nsIp, port: 22 },
      { host: other.hostIp, port: hostPort },
    ];
    const r = await probe(pub, targets);
    assert.deepEqual(r.get('198.51.100.10:8080'), {
      ...r.get('198.51.100.10:8080'),
      ok: true,
      data: 'hello from inet',
    });
    for (const t of targets.slice(1)) {
      const x = r.get(`${t.host}:${t.port}`)!;
      assert.equal(x.ok, false, `${x.target} must be refused`);
      // Refused at once (a reset or an ICMP error from the sandbox's namespace), not left to
      // time out: a function learns at once that the address is off limits.
      assert.equal(x.code, 'ECONNREFUSED', x.target);
    }
  });

  test('allowlist policy: only the listed private service', async () => {
    const r = await probe(listed, [
      { host: '10.99.0.10', port: 5432 },
      { host: '198.51.100.10', port: 8080 },
      { host: '169.254.169.254', port: 80 },
    ]);
    assert.equal(r.get('10.99.0.10:5432')!.data, 'hello from priv');
    assert.equal(r.get('198.51.100.10:8080')!.ok, false);
    assert.equal(r.get('169.254.169.254:80')!.ok, false);
  });

  test('none policy: nothing at all', async () => {
    const r = await probe(none, [
      { host: '198.51.100.10', port: 8080 },
      { host: '10.99.0.10', port: 5432 },
    ]);
    for (const x of r.values()) assert.equal(x.ok, false, x.target);
  });

  test('the VMM runs jailed: own user, no capabilities, seccomp, own namespaces, minimal root', () => {
    for (const sb of [pub, none]) {
      const pid = sb.vmmPid!;
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '';
      const uid = Number(field('Uid').split(/\s+/)[0]);
      assert.ok(uid >= 1_600_000_000, `QEMU runs as a jail user, not ${uid}`);
      assert.equal(field('CapEff'), '0000000000000000');
      assert.equal(field('CapPrm'), '0000000000000000');
      assert.equal(field('NoNewPrivs'), '1');
      assert.equal(field('Seccomp'), '2', 'seccomp filter mode');
      assert.ok(Number(field('Seccomp_filters')) >= 2, "the jail's filter and QEMU's own");
      assert.equal(field('NSpid').split(/\s+/).at(-1), '1', 'PID 1 of its own PID namespace');
      for (const nsType of ['mnt', 'net', 'pid', 'ipc', 'uts']) {
        assert.notEqual(
          readlinkSync(`/proc/${pid}/ns/${nsType}`),
          readlinkSync(`/proc/self/ns/${nsType}`),
          nsType,
        );
      }
      const top = readdirSync(`/proc/${pid}/root`).sort();
      for (const absent of ['etc', 'home', 'sys', 'var', 'boot']) {
        assert.ok(!top.includes(absent), `/${absent} is not in the jail (${top.join(' ')})`);
      }
      // A clone's jail has a /proc (for its sealed memory, /proc/self/fd/4) that shows only the
      // jail's own process: PID 1, QEMU.
      if (top.includes('proc')) {
        const procs = readdirSync(`/proc/${pid}/root/proc`).filter((n) => /^\d+$/.test(n));
        assert.deepEqual(procs, ['1']);
      }
      // Of the host's programs only QEMU itself: no shell, no ip, no nft to run.
      assert.deepEqual(readdirSync(`/proc/${pid}/root/usr/bin`), ['qemu-system-x86_64']);
      const dev = readdirSync(`/proc/${pid}/root/dev`).sort();
      assert.deepEqual(dev, ['null'], 'only /dev/null (the tap comes as a descriptor)');
    }
    const a = pub.vmmPid!;
    const b = none.vmmPid!;
    const uidOf = (p: number) =>
      /^Uid:\s*(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))![1];
    assert.notEqual(uidOf(a), uidOf(b), 'each VMM has its own user');
  });

  test('each direction of each sandbox is shaped (a token bucket on its uplink and its tap)', () => {
    const qdiscs = execFileSync(
      'nsenter',
      [`--net=/proc/${pub.vmmPid}/ns/net`, 'tc', 'qdisc', 'show'],
      {
        encoding: 'utf8',
      },
    );
    for (const dev of ['eth0', 'tap0']) {
      assert.match(qdiscs, new RegExp(`qdisc tbf \\S+ dev ${dev} root .*rate 200Mbit`), qdiscs);
    }
  });

  test('destroyed sandboxes leave no uplink, namespace or process', async () => {
    await Promise.all([pub, listed, none].map((s) => s.destroy()));
    assert.deepEqual(leftovers(), { qemu: [], folders: [], cgroups: [], uplinks: [] });
  });
});
