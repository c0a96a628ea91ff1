import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IsolaError } from '../errors.js';
import {
  DEFAULT_EGRESS,
  DENIED_RANGES,
  describeEgress,
  formatEgressRule,
  intToIp,
  ipToInt,
  parseCidr,
  parseEgressPolicy,
  parseEgressRule,
  renderRuleset,
} from './policy.js';

const ctx = { guestIf: 'tap0', uplinkIf: 'eth0', denied: ['192.0.2.2', '10.213.0.0/16'] };

function invalid(f: () => unknown, re: RegExp): void {
  assert.throws(
    f,
    (e: unknown) =>
      e instanceof IsolaError && e.code === 'E_INVALID_ARGUMENT' && re.test(e.message),
  );
}

describe('egress rules', () => {
  test('addresses, blocks and ports parse; host bits and bad ports are refused', () => {
    assert.deepEqual(parseEgressRule('203.0.113.7'), { cidr: '203.0.113.7' });
    assert.deepEqual(parseEgressRule('10.99.0.0/24:5432'), { cidr: '10.99.0.0/24', port: 5432 });
    assert.equal(formatEgressRule({ cidr: '10.0.0.0/8', port: 443 }), '10.0.0.0/8:443');
    assert.equal(describeEgress(DEFAULT_EGRESS), 'public');
    assert.equal(
      describeEgress({ mode: 'public', allow: [{ cidr: '10.99.0.0/24', port: 5432 }] }),
      'public +10.99.0.0/24:5432',
    );
    assert.equal(
      describeEgress({ mode: 'allowlist', allow: [{ cidr: '203.0.113.7' }] }),
      'allowlist 203.0.113.7',
    );
    assert.equal(describeEgress({ mode: 'none', allow: [] }), 'none');
    invalid(() => parseEgressRule('10.99.0.1/24'), /host bits set .*10\.99\.0\.0\/24/);
    invalid(() => parseEgressRule('10.0.0.0/33'), /prefix/);
    invalid(() => parseEgressRule('10.0.0.0/8:0'), /port/);
    invalid(() => parseEgressRule('10.0.0.0/8:70000'), /port/);
    invalid(() => parseEgressRule('example.com'), /IPv4/);
    invalid(() => parseEgressRule('::1'), /CIDR|IPv4/);
    invalid(() => parseEgressRule('1.2.3.4/8/9'), /IPv4/);
  });

  test('address arithmetic round-trips', () => {
    for (const ip of ['0.0.0.0', '10.213.0.1', '255.255.255.255', '192.0.2.2']) {
      assert.equal(intToIp(ipToInt(ip)), ip);
    }
    assert.deepEqual(parseCidr('0.0.0.0/0'), { addr: '0.0.0.0', prefix: 0 });
  });
});

describe('egress policies', () => {
  test('absent means the public internet only', () => {
    assert.deepEqual(parseEgressPolicy(undefined), DEFAULT_EGRESS);
    assert.deepEqual(parseEgressPolicy({}), { mode: 'public', allow: [] });
  });

  test('allow lists take strings and objects; unknown fields and bad modes are refused', () => {
    assert.deepEqual(
      parseEgressPolicy({
        mode: 'allowlist',
        allow: ['10.99.0.0/24', { cidr: '10.98.0.1', port: 80 }],
      }),
      { mode: 'allowlist', allow: [{ cidr: '10.99.0.0/24' }, { cidr: '10.98.0.1', port: 80 }] },
    );
    invalid(() => parseEgressPolicy({ mode: 'open' }), /mode/);
    invalid(() => parseEgressPolicy({ mode: 'public', deny: [] }), /unknown/);
    invalid(() => parseEgressPolicy({ mode: 'none', allow: ['10.0.0.0/8'] }), /none/);
    invalid(() => parseEgressPolicy({ allow: '10.0.0.0/8' }), /list/);
    invalid(() => parseEgressPolicy({ allow: Array(65).fill('10.0.0.0/8') }), /at most/);
    invalid(() => parseEgressPolicy([]), /object/);
    invalid(() => parseEgressPolicy({ allow: [{ cidr: '10.0.0.0/8', port: 1.5 }] }), /port/);
  });
});

describe('the namespace ruleset', () => {
  const forward = (text: string) =>
    text
      .slice(text.indexOf('chain forward'), text.indexOf('chain input'))
      .split('\n')
      .map((l) => l.trim());

  test('public mode: node addresses first, then allow-list exceptions, then special ranges, then the internet', () => {
    const text = renderRuleset({ mode: 'public', allow: [{ cidr: '10.99.0.0/24' }] }, ctx);
    const rules = forward(text);
    const at = (re: RegExp) => rules.findIndex((l) => re.test(l));
    assert.ok(at(/@node4 .*goto refuse/) >= 0);
    assert.ok(at(/@node4/) < at(/@allow4 .*accept/), 'allow lists never open the node');
    assert.ok(at(/@allow4 .*accept/) < at(/@deny4 .*goto refuse/));
    assert.ok(at(/@deny4/) < at(/nfproto ipv4 .*accept/));
    assert.match(rules.at(-3) ?? '', /counter goto refuse$/, 'everything else is refused');
    assert.match(text, /policy drop/);
    for (const r of DENIED_RANGES) assert.ok(text.includes(r), r);
    assert.match(text, /set node4 .*elements = \{ 192\.0\.2\.2, 10\.213\.0\.0\/16 \}/);
    assert.match(text, /oifname "eth0" masquerade/);
  });

  test('allowlist mode has no internet rule; none mode accepts nothing from the guest', () => {
    const allow = renderRuleset(
      { mode: 'allowlist', allow: [{ cidr: '198.51.100.0/24', port: 443 }] },
      ctx,
    );
    assert.doesNotMatch(allow, /nfproto ipv4 counter accept/);
    assert.match(allow, /elements = \{ 198\.51\.100\.0\/24 \. 443 \}/);
    const none = forward(renderRuleset({ mode: 'none', allow: [] }, ctx));
    const guestAccepts = none.filter((l) => l.startsWith('iifname "tap0"') && l.endsWith('accept'));
    assert.deepEqual(guestAccepts, [
      'iifname "tap0" oifname "eth0" ct state established,related accept',
    ]);
  });

  test('the namespace itself accepts nothing and sends only rejects', () => {
    const text = renderRuleset(DEFAULT_EGRESS, ctx);
    const input = text.slice(text.indexOf('chain input'), text.indexOf('chain output'));
    assert.match(input, /policy drop;\s*iifname "tap0" counter goto refuse\s*\}/);
    const output = text.slice(text.indexOf('chain output'), text.indexOf('chain postrouting'));
    assert.match(output, /policy drop/);
    assert.deepEqual(
      output
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l.endsWith('accept')),
      ['tcp flags & rst == rst accept', 'icmp type destination-unreachable accept'],
    );
  });

  test('connection limits come before any rule that accepts a new connection', () => {
    const rules = forward(
      renderRuleset(DEFAULT_EGRESS, { ...ctx, maxConnections: 64, newConnectionsPerS: 50 }),
    );
    const count = rules.findIndex((l) => l.includes('ct count over 64 counter goto refuse'));
    const rate = rules.findIndex((l) =>
      l.includes('limit rate over 50/second burst 100 packets counter goto refuse'),
    );
    const firstNewAccept = rules.findIndex(
      (l) => l.startsWith('iifname "tap0"') && l.endsWith('accept') && !l.includes('established'),
    );
    assert.ok(count > 0 && rate > 0 && count < firstNewAccept && rate < firstNewAccept);
  });

  test('a malformed denied address is refused before nft sees it', () => {
    invalid(
      () => renderRuleset(DEFAULT_EGRESS, { ...ctx, denied: ['10.0.0.1; flush ruleset'] }),
      /IPv4/,
    );
  });
});

describe('egress rule objects (fuzzer findings)', () => {
  test('unknown fields, a port given twice and prefixes with a leading zero are refused', () => {
    invalid(
      () => parseEgressPolicy({ allow: [{ cidr: '10.0.0.0/8', prot: 443 }] }),
      /unknown egress rule field/,
    );
    invalid(
      () => parseEgressPolicy({ allow: [{ cidr: '10.0.0.0/8:80', port: 443 }] }),
      /port twice/,
    );
    invalid(() => parseEgressRule('10.0.0.0/08'), /prefix/);
    assert.deepEqual(parseEgressRule('0.0.0.0/0'), { cidr: '0.0.0.0/0' });
  });

  test('error messages quote at most a bounded piece of the input', () => {
    assert.throws(
      () => parseEgressRule(`${'9'.repeat(100_000)}`),
      (e: unknown) => e instanceof IsolaError && e.message.length < 200,
    );
  });
});
