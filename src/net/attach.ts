// Gives one sandbox its network, in the network namespace isola-jail made for its VMM (found at
// /proc/PID/ns/net), where the jail has already created the tap device it hands to QEMU: the
// uplink veth pair between the host and the namespace, addresses, a default route, the egress
// ruleset, and forwarding, turned on last, so a guest that runs before the rules are in place
// reaches nothing. Runs while the VMM starts. Everything but the host end of the veth lives in
// the namespace, and that end is destroyed with its peer: when the VMM exits the namespace goes,
// and with it the whole network of the sandbox.

import { existsSync } from 'node:fs';
import { IsolaError } from '../errors.js';
import { envNumber } from '../util/env.js';
import { jailEnabled } from '../vmm/jail.js';
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

let allocator: SlotAllocator | null = null;

/**
 * Whether sandboxes of the platform get a network: root (namespaces, veth, nftables) and the
 * VMM jail, unless ISOLA_NETWORK=0. Without it, functions have no network interface at all.
 */
export function networkEnabled(): boolean {
  return jailEnabled() && process.env.ISOLA_NETWORK !== '0';
}

/** Resolvers for guests: $ISOLA_DNS (comma-separated IPv4 addresses) or the spec's default. */
export function guestResolvers(): string[] | undefined {
  const v = process.env.ISOLA_DNS;
  return v
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : undefined;
}

/** The network part of a sandbox spec for a platform sandbox with this egress policy. */
export function sandboxNetwork(
  egress: EgressPolicy,
): { egress: EgressPolicy; dns?: string[] } | undefined {
  if (!networkEnabled()) return undefined;
  const dns = guestResolvers();
  return dns ? { egress, dns } : { egress };
}

/** The process's slot allocator over $ISOLA_NET_POOL (default 10.213.0.0/16). */
export function slots(): SlotAllocator {
  allocator ??= new SlotAllocator(parsePool(process.env.ISOLA_NET_POOL ?? DEFAULT_POOL), (slot) =>
    existsSync(`/sys/class/net/isv${slot}`),
  );
  return allocator;
}

/** Shell for the namespace side, run by nsenter in the namespace (one process chain). */
/** Bandwidth per sandbox and direction: $ISOLA_NET_MBIT Mbit/s (default 200; 0: none). */
export function bandwidthMbit(env: NodeJS.ProcessEnv = process.env): number {
  return Math.round(envNumber('ISOLA_NET_MBIT', 200, env));
}

function namespaceScript(uplink: Uplink, ruleset: string): string {
  const g = GUEST_LINK;
  const mbit = bandwidthMbit();
  // A token bucket each way: out of the namespace (guest to world) and into the guest's tap.
  const shape =
    mbit > 0
      ? [UPLINK_IF, g.tap].map(
          (dev) => `qdisc replace dev ${dev} root tbf rate ${mbit}mbit burst 256kb latency 50ms`,
        )
      : [];
  return [
    'set -e',
    'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6',
    'echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6',
    // Every refusal reaches the guest (the namespace answers only its own guest).
    'echo 0 > /proc/sys/net/ipv4/icmp_ratelimit',
    "ip -batch - <<'ISOLA_IP'",
    'link set lo up',
    `addr add ${uplink.nsIp}/${uplink.prefix} dev ${UPLINK_IF}`,
    `link set ${UPLINK_IF} up`,
    `link set ${g.tap} address ${g.tapMac}`,
    `addr add ${g.gateway}/${g.prefix} dev ${g.tap}`,
    `link set ${g.tap} up`,
    `route add default via ${uplink.hostIp}`,
    'ISOLA_IP',
    ...(shape.length ? ["tc -batch - <<'ISOLA_TC'", ...shape, 'ISOLA_TC'] : []),
    "nft -f - <<'ISOLA_NFT'",
    ruleset.trimEnd(),
    'ISOLA_NFT',
    // Last: until the ruleset is in place nothing is forwarded (the guest may already run).
    'echo 1 > /proc/sys/net/ipv4/ip_forward',
    '',
  ].join('\n');
}

/**
 * Network for the namespace of process `pid`. Returns the uplink (its slot goes back with
 * releaseUplink). On failure nothing is left: the host end is deleted, the rest dies with the
 * namespace.
 */
export async function attachNetwork(pid: number, policy: EgressPolicy): Promise<Uplink> {
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
        namespaceScript(uplink, ruleset),
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

/**
 * Give the slot back once its host interface is gone: the kernel destroys a dead namespace's
 * devices asynchronously (milliseconds), and the slot must not be handed out before.
 */
export async function releaseUplink(uplink: Uplink, waitMs = 5_000): Promise<void> {
  await removeHostLink(uplink.hostIf, waitMs);
  slots().release(uplink.slot);
}

/**
 * Wait for a dead sandbox's uplink to vanish with its namespace; delete it when something else
 * keeps the namespace alive (a stray nsenter). Also the reaper's way after a crash.
 */
export async function removeHostLink(hostIf: string, waitMs = 5_000): Promise<void> {
  if (!/^isv\d+$/.test(hostIf)) return;
  const deadline = Date.now() + waitMs;
  while (existsSync(`/sys/class/net/${hostIf}`) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  if (existsSync(`/sys/class/net/${hostIf}`)) {
    await feed('ip', ['-batch', '-'], `link del ${hostIf}\n`, 'uplink clean-up').catch(() => {});
  }
}
