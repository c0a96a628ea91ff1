// The node's address pool for sandbox uplinks, and the fixed guest link. Pure.
//
// Every sandbox namespace has two links:
//   guest link: tap device <-> the guest's eth0. Identical in every sandbox (GUEST_LINK), so a
//     snapshot's guest network configuration is right in every clone restored from it.
//   uplink: a veth pair between the namespace and the host, addressed from the node's pool: slot
//     i owns the /30 block POOL + 4i (host end .1, namespace end .2). The namespace masquerades
//     the guest behind its uplink address, the host masquerades the pool out of the node.
// A slot's host-side interface is named `isv<i>`; the reaper needs no record of it, because it
// vanishes with the namespace (the namespace holds the other end).

import { IsolaError } from '../errors.js';
import { intToIp, ipToInt, parseCidr } from './policy.js';

export const GUEST_LINK = {
  /** Interface in the namespace that QEMU's virtio-net device is attached to. */
  tap: 'tap0',
  /** The namespace's address on the guest link, the guest's default gateway. */
  gateway: '172.31.255.1',
  guest: '172.31.255.2',
  prefix: 30,
  /** Fixed, so a restored guest's neighbour cache entry for its gateway stays right. */
  tapMac: '02:15:01:a0:00:01',
  guestMac: '52:54:00:15:01:02',
} as const;

/** Namespace end of the uplink veth pair. */
export const UPLINK_IF = 'eth0';
/** Host-side uplink interfaces share this prefix (host rules match `isv*`). */
export const HOST_IF_PREFIX = 'isv';
export const DEFAULT_POOL = '10.213.0.0/16';

export interface Uplink {
  slot: number;
  hostIf: string;
  hostIp: string;
  nsIp: string;
  prefix: 30;
}

export interface Pool {
  cidr: string;
  base: number;
  slots: number;
}

export function parsePool(cidr: string): Pool {
  const { addr, prefix } = parseCidr(cidr);
  if (prefix > 29 || prefix < 8) {
    throw new IsolaError('E_INVALID_ARGUMENT', `network pool ${cidr}: prefix must be 8-29`);
  }
  // Interface names are at most 15 bytes: isv + 12 digits is plenty, but keep slots sane.
  return { cidr, base: ipToInt(addr), slots: Math.min(2 ** (32 - prefix) / 4, 1 << 20) };
}

export function uplinkFor(pool: Pool, slot: number): Uplink {
  if (!Number.isInteger(slot) || slot < 0 || slot >= pool.slots) {
    throw new IsolaError('E_INVALID_ARGUMENT', `slot ${slot} outside the pool ${pool.cidr}`);
  }
  const block = pool.base + slot * 4;
  return {
    slot,
    hostIf: `${HOST_IF_PREFIX}${slot}`,
    hostIp: intToIp(block + 1),
    nsIp: intToIp(block + 2),
    prefix: 30,
  };
}

/**
 * Slot allocation for one process. `taken(slot)` tells whether another process on the node holds
 * a slot (its host interface exists); a race between two processes is caught when creating the
 * interface fails, and the caller asks again. Slots are handed out round-robin so a slot just
 * freed is the last to be reused (a late packet for the old sandbox finds no one).
 */
export class SlotAllocator {
  private readonly used = new Set<number>();
  private next = 0;

  constructor(
    readonly pool: Pool,
    private readonly taken: (slot: number) => boolean = () => false,
  ) {}

  allocate(): Uplink {
    for (let n = 0; n < this.pool.slots; n++) {
      const slot = (this.next + n) % this.pool.slots;
      if (this.used.has(slot) || this.taken(slot)) continue;
      this.used.add(slot);
      this.next = (slot + 1) % this.pool.slots;
      return uplinkFor(this.pool, slot);
    }
    throw new IsolaError('E_NETWORK', `no free address in the network pool ${this.pool.cidr}`);
  }

  release(slot: number): void {
    this.used.delete(slot);
  }

  get inUse(): number {
    return this.used.size;
  }
}
