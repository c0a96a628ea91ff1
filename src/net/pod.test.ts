import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IsolaError } from '../errors.js';
import { parsePodLink } from './pod.js';

const addr = JSON.stringify([
  {
    ifname: 'lo',
    link_type: 'loopback',
    address: '00:00:00:00:00:00',
    mtu: 65536,
    addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8 }],
  },
  {
    ifname: 'eth0',
    link_type: 'ether',
    address: 'fe:85:a6:87:99:23',
    mtu: 1450,
    addr_info: [
      { family: 'inet6', local: 'fe80::1', prefixlen: 64 },
      { family: 'inet', local: '10.88.0.7', prefixlen: 16 },
    ],
  },
]);

test("a pod's link: the Ethernet interface with IPv4, its MAC, MTU and default route", () => {
  const route = JSON.stringify([{ dst: 'default', gateway: '10.88.0.1', dev: 'eth0' }]);
  assert.deepEqual(parsePodLink(addr, route), {
    ifname: 'eth0',
    mac: 'fe:85:a6:87:99:23',
    address: '10.88.0.7/16',
    gateway: '10.88.0.1',
    mtu: 1450,
  });
  assert.equal(parsePodLink(addr, '').gateway, null, 'no default route: no gateway');
});

test('a namespace without such an interface is a clear error', () => {
  const onlyLo = JSON.stringify([JSON.parse(addr)[0]]);
  assert.throws(
    () => parsePodLink(onlyLo, '[]'),
    (e: unknown) => e instanceof IsolaError && e.code === 'E_NETWORK',
  );
});
