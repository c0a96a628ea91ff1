// A VM wired into a network namespace someone else made: a container engine's (Podman, containerd
// with CNI, Kubernetes) pod namespace, with its veth and address. As Kata Containers does: the
// VMM runs in that namespace (isola-jail joins it and creates the tap there), the guest's NIC
// takes the veth's MAC and address, and tc redirects every frame between the veth and the tap in
// both directions, so the namespace's own stack sees nothing and the engine's network (bridge,
// NAT, its firewall) works unchanged. The engine owns the namespace and removes it.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { IsolaError } from '../errors.js';
import { feed } from './host.js';

const run = promisify(execFile);

/** The tap isola creates in a pod's namespace. */
export const POD_TAP = 'isola0';

export interface PodLink {
  /** The engine's interface in the namespace (the veth end), e.g. eth0. */
  ifname: string;
  mac: string;
  /** Address with prefix, e.g. 10.88.0.7/16. */
  address: string;
  gateway: string | null;
  mtu: number;
}

interface IpAddr {
  ifname?: string;
  link_type?: string;
  address?: string;
  mtu?: number;
  addr_info?: Array<{ family?: string; local?: string; prefixlen?: number }>;
}

/** From `ip -j addr show` and `ip -j route show default`: the first Ethernet link with IPv4. */
export function parsePodLink(addrJson: string, routeJson: string): PodLink {
  const links = JSON.parse(addrJson) as IpAddr[];
  const routes = JSON.parse(routeJson || '[]') as Array<{
    dst?: string;
    gateway?: string;
    dev?: string;
  }>;
  for (const l of links) {
    if (l.link_type !== 'ether' || !l.ifname || !l.address) continue;
    const v4 = l.addr_info?.find(
      (a) => a.family === 'inet' && a.local && a.prefixlen !== undefined,
    );
    if (!v4) continue;
    const route = routes.find((r) => (r.dst ?? 'default') === 'default' && r.dev === l.ifname);
    return {
      ifname: l.ifname,
      mac: l.address,
      address: `${v4.local}/${v4.prefixlen}`,
      gateway: route?.gateway ?? null,
      mtu: l.mtu ?? 1500,
    };
  }
  throw new IsolaError(
    'E_NETWORK',
    'the network namespace has no Ethernet interface with an IPv4 address to give the VM',
  );
}

/** Read the pod namespace's interface (before the VMM starts). */
export async function discoverPodLink(netnsPath: string): Promise<PodLink> {
  const inNs = (args: string[]) =>
    run('nsenter', [`--net=${netnsPath}`, '--', 'ip', '-j', ...args], { timeout: 10_000 });
  try {
    const [addr, route] = await Promise.all([
      inNs(['addr', 'show']),
      inNs(['route', 'show', 'default']),
    ]);
    return parsePodLink(addr.stdout, route.stdout);
  } catch (err) {
    if (err instanceof IsolaError) throw err;
    throw new IsolaError(
      'E_NETWORK',
      `cannot read the network namespace ${netnsPath}: ${String(err)}`,
    );
  }
}

/** Wire the tap to the pod's interface (tc redirect both ways), once the jail created the tap. */
export function attachPod(netnsPath: string, link: PodLink): Promise<void> {
  const e = link.ifname;
  const script = [
    'set -e',
    `ip link set ${POD_TAP} mtu ${link.mtu} up`,
    "tc -batch - <<'ISOLA_TC'",
    `qdisc replace dev ${e} ingress`,
    `filter add dev ${e} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev ${POD_TAP}`,
    `qdisc replace dev ${POD_TAP} ingress`,
    `filter add dev ${POD_TAP} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev ${e}`,
    'ISOLA_TC',
    '',
  ].join('\n');
  return feed(
    'nsenter',
    [`--net=${netnsPath}`, '--', '/bin/sh', '-s'],
    script,
    'wiring the VM into the pod network',
  );
}

/** Take the redirect off the pod's interface (the tap goes with the VMM); best effort. */
export async function detachPod(netnsPath: string, link: PodLink): Promise<void> {
  await feed(
    'nsenter',
    [`--net=${netnsPath}`, '--', 'tc', 'qdisc', 'del', 'dev', link.ifname, 'ingress'],
    '',
    'unwiring the pod network',
  ).catch(() => {});
}
