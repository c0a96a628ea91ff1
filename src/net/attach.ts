// Gives one sandbox its network: the uplink veth pair between the host and the sandbox's network
// namespace (created by isola-jail for the VMM; found at /proc/PID/ns/net), the tap device the
// VMM opens (owned by the VMM's unprivileged user), routes, forwarding, and the egress ruleset.
// Everything but the host end of the veth lives in the namespace, and that end is destroyed with
// its peer: when the VMM exits the namespace goes, and with it the whole network of the sandbox.

import { existsSync } from 'node:fs';
import { IsolaError } from '../errors.js';
import { ensureHostNetwork, feed, nodeAddresses } from './host.js';
import { type EgressPolicy, renderRuleset } from './policy.js';
import {
  DEFAULT_POOL,
  GUEST_LINK,
  SlotAllocator,
  UPLINK_IF,
  type Uplink,
  parsePool,
} from './pool.js';

export interface NetworkOwner {
  uid: number;
  gid: number;
}

let allocator: SlotAllocator | null = null;

/** The process's slot allocator over $ISOLA_NET_POOL (default 10.213.0.0/16). */
export function slots(): SlotAllocator {
  allocator ??= new SlotAllocator(parsePool(process.env.ISOLA_NET_POOL ?? DEFAULT_POOL), (slot) =>
    existsSync(`/sys/class/net/isv${slot}`),
  );
  return allocator;
}

/** Shell for the namespace side, run by nsenter in the namespace (one process chain). */
function namespaceScript(uplink: Uplink, owner: NetworkOwner, ruleset: string): string {
  const g = GUEST_LINK;
  return [
    'set -e',
    'echo 1 > /proc/sys/net/ipv4/ip_forward',
    'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6',
    'echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6',
    "ip -batch - <<'ISOLA_IP'",
    'link set lo up',
    `addr add ${uplink.nsIp}/${uplink.prefix} dev ${UPLINK_IF}`,
    `link set ${UPLINK_IF} up`,
    `tuntap add dev ${g.tap} mode tap user ${owner.uid} group ${owner.gid}`,
    `link set ${g.tap} address ${g.tapMac}`,
    `addr add ${g.gateway}/${g.prefix} dev ${g.tap}`,
    `link set ${g.tap} up`,
    `route add default via ${uplink.hostIp}`,
    'ISOLA_IP',
    "nft -f - <<'ISOLA_NFT'",
    ruleset.trimEnd(),
    'ISOLA_NFT',
    '',
  ].join('\n');
}

/**
 * Network for the namespace of process `pid`. Returns the uplink (its slot goes back with
 * releaseUplink). On failure nothing is left: the host end is deleted, the rest dies with the
 * namespace.
 */
export async function attachNetwork(
  pid: number,
  policy: EgressPolicy,
  owner: NetworkOwner,
): Promise<Uplink> {
  await ensureHostNetwork();
  const pool = slots();
  for (let tries = 0; ; tries++) {
    const uplink = pool.allocate();
    try {
      await feed(
        'ip',
        ['-batch', '-'],
        [
          `link add ${uplink.hostIf} type veth peer name ${UPLINK_IF} netns ${pid}`,
          `addr add ${uplink.hostIp}/${uplink.prefix} dev ${uplink.hostIf}`,
          `link set ${uplink.hostIf} up`,
          '',
        ].join('\n'),
        'creating the uplink',
      );
    } catch (err) {
      pool.release(uplink.slot);
      // Another isola process took the slot between the check and the creation: next slot.
      if (tries < 8 && /File exists/.test(String((err as Error).message))) continue;
      throw err;
    }
    try {
      const ruleset = renderRuleset(policy, {
        guestIf: GUEST_LINK.tap,
        uplinkIf: UPLINK_IF,
        denied: [...nodeAddresses(), pool.pool.cidr],
      });
      await feed(
        'nsenter',
        [`--net=/proc/${pid}/ns/net`, '--', '/bin/sh', '-s'],
        namespaceScript(uplink, owner, ruleset),
        'configuring the sandbox network',
      );
      return uplink;
    } catch (err) {
      await feed('ip', ['-batch', '-'], `link del ${uplink.hostIf}\n`, 'cleanup').catch(() => {});
      pool.release(uplink.slot);
      throw err instanceof IsolaError
        ? err
        : new IsolaError('E_NETWORK', `sandbox network: ${String(err)}`);
    }
  }
}

export function releaseUplink(uplink: Uplink): void {
  slots().release(uplink.slot);
}
