// Egress policy: where a sandbox's guest may open connections. Pure: parsing, and the nftables
// ruleset that enforces a policy inside the sandbox's own network namespace (net/attach.ts loads
// it there). The guest reaches the world only through that namespace, so the ruleset is the
// one gate; the host adds a second, policy-free one (net/host.ts: nothing from a sandbox reaches
// the host itself or another sandbox).
//
//   mode 'public' (default): the public internet only. Denied: the host and every special-use
//     range (loopback, link-local with the cloud metadata address, RFC 1918 private ranges,
//     carrier-grade NAT, multicast, reserved), the node's own addresses, and so the control
//     plane and every other sandbox. `allow` entries open exceptions (a database on a private
//     address, say).
//   mode 'allowlist': only the `allow` entries.
//   mode 'none': nothing.
// IPv6 is not routed to guests at all.

import { isIPv4 } from 'node:net';
import { z } from 'zod';
import { IsolaError } from '../errors.js';

export type EgressMode = 'public' | 'allowlist' | 'none';

export interface EgressRule {
  /** IPv4 address or CIDR block. */
  cidr: string;
  /** TCP/UDP destination port; all ports when absent. */
  port?: number;
}

export interface EgressPolicy {
  mode: EgressMode;
  allow: EgressRule[];
}

export const DEFAULT_EGRESS: EgressPolicy = { mode: 'public', allow: [] };
export const NO_EGRESS: EgressPolicy = { mode: 'none', allow: [] };

/** Connections one sandbox may have open at once, and new ones per second. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
export const DEFAULT_NEW_CONNECTIONS_PER_S = 200;

/** Most allow entries one function may have (each is one set element; sets are cheap). */
export const MAX_ALLOW_RULES = 64;

/**
 * Special-use IPv4 ranges (RFC 6890 and friends) a guest never reaches in 'public' mode. The
 * documentation ranges (TEST-NET-1..3) are left out on purpose: they are not routed on the
 * internet, so denying them protects nothing, and tests use them as "the internet".
 */
export const DENIED_RANGES: readonly string[] = [
  '0.0.0.0/8', // "this network"
  '10.0.0.0/8', // private (RFC 1918)
  '100.64.0.0/10', // carrier-grade NAT
  '127.0.0.0/8', // loopback
  '169.254.0.0/16', // link-local, cloud metadata (169.254.169.254)
  '172.16.0.0/12', // private (RFC 1918)
  '192.0.0.0/24', // IETF protocol assignments
  '192.168.0.0/16', // private (RFC 1918)
  '198.18.0.0/15', // benchmarking
  '224.0.0.0/4', // multicast
  '240.0.0.0/4', // reserved, broadcast
];

/** "a.b.c.d" or "a.b.c.d/n" with host bits zero; throws E_INVALID_ARGUMENT otherwise. */
export function parseCidr(text: string): { addr: string; prefix: number } {
  const [addr, prefixText, extra] = text.split('/');
  const bad = (why: string) =>
    new IsolaError('E_INVALID_ARGUMENT', `bad egress address '${text.slice(0, 60)}': ${why}`);
  if (extra !== undefined || addr === undefined || !isIPv4(addr)) {
    throw bad('expected an IPv4 address or CIDR block like 203.0.113.0/24');
  }
  const prefix = prefixText === undefined ? 32 : Number(prefixText);
  if (!/^(?:0|[1-9]\d?)$/.test(prefixText ?? '32') || prefix > 32) throw bad('prefix must be 0-32');
  const n = ipToInt(addr);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  if ((n & ~mask) >>> 0 !== 0)
    throw bad(`host bits set (did you mean ${intToIp(n & mask)}/${prefix}?)`);
  return { addr, prefix };
}

/** "cidr" or "cidr:port" (the form the CLI and API take). */
export function parseEgressRule(text: string): EgressRule {
  const m = /^([^:]+)(?::(\d{1,5}))?$/.exec(text.trim());
  if (!m) {
    throw new IsolaError(
      'E_INVALID_ARGUMENT',
      `bad egress rule '${text.slice(0, 60)}' (CIDR[:PORT])`,
    );
  }
  parseCidr(m[1]!);
  if (m[2] === undefined) return { cidr: m[1]! };
  const port = Number(m[2]);
  if (port < 1 || port > 65535) {
    throw new IsolaError('E_INVALID_ARGUMENT', `bad port in egress rule '${text.slice(0, 60)}'`);
  }
  return { cidr: m[1]!, port };
}

export function formatEgressRule(r: EgressRule): string {
  return r.port === undefined ? r.cidr : `${r.cidr}:${r.port}`;
}

/** One line for people: "public", "public +10.99.0.0/24:5432", "allowlist 203.0.113.7", "none". */
export function describeEgress(p: EgressPolicy): string {
  if (p.mode === 'none') return 'none';
  const rules = p.allow.map(formatEgressRule);
  if (p.mode === 'public') return rules.length ? `public +${rules.join(',')}` : 'public';
  return `allowlist ${rules.join(',') || '(empty)'}`;
}

/**
 * The policy as a schema field (sandbox specs, function configs): parseEgressPolicy's message
 * becomes the field's problem.
 */
export const egressSchema = z.unknown().transform((v, ctx): EgressPolicy => {
  try {
    return parseEgressPolicy(v);
  } catch (err) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (err as Error).message });
    return z.NEVER;
  }
});

/** Validates a policy (from the API or the store); throws E_INVALID_ARGUMENT. */
export function parseEgressPolicy(input: unknown): EgressPolicy {
  if (input === undefined || input === null) return DEFAULT_EGRESS;
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new IsolaError('E_INVALID_ARGUMENT', 'egress policy must be an object');
  }
  const o = input as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (k !== 'mode' && k !== 'allow') {
      throw new IsolaError('E_INVALID_ARGUMENT', `unknown egress policy field '${k.slice(0, 40)}'`);
    }
  }
  const mode = o.mode ?? 'public';
  if (mode !== 'public' && mode !== 'allowlist' && mode !== 'none') {
    throw new IsolaError(
      'E_INVALID_ARGUMENT',
      "egress mode must be 'public', 'allowlist' or 'none'",
    );
  }
  const allowIn = o.allow ?? [];
  if (!Array.isArray(allowIn)) {
    throw new IsolaError('E_INVALID_ARGUMENT', 'egress allow must be a list');
  }
  if (allowIn.length > MAX_ALLOW_RULES) {
    throw new IsolaError('E_INVALID_ARGUMENT', `at most ${MAX_ALLOW_RULES} egress allow rules`);
  }
  const allow = allowIn.map((r) => {
    if (typeof r === 'string') return parseEgressRule(r);
    if (r && typeof r === 'object' && typeof (r as EgressRule).cidr === 'string') {
      for (const k of Object.keys(r)) {
        if (k !== 'cidr' && k !== 'port') {
          throw new IsolaError(
            'E_INVALID_ARGUMENT',
            `unknown egress rule field '${k.slice(0, 40)}'`,
          );
        }
      }
      const rule = parseEgressRule((r as EgressRule).cidr);
      const port = (r as EgressRule).port;
      if (port === undefined) return rule;
      if (rule.port !== undefined) {
        throw new IsolaError(
          'E_INVALID_ARGUMENT',
          'egress rule has a port twice (in cidr and port)',
        );
      }
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new IsolaError('E_INVALID_ARGUMENT', `bad port ${String(port)} in egress rule`);
      }
      return { cidr: rule.cidr, port };
    }
    throw new IsolaError('E_INVALID_ARGUMENT', 'egress allow entries are "CIDR[:PORT]" strings');
  });
  if (mode === 'none' && allow.length > 0) {
    throw new IsolaError('E_INVALID_ARGUMENT', "egress mode 'none' takes no allow rules");
  }
  return { mode, allow };
}

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((n, part) => ((n << 8) | Number(part)) >>> 0, 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}

/** What the ruleset needs besides the policy: the namespace's interfaces and what to deny. */
export interface RulesetContext {
  /** Interface facing the guest (the tap QEMU opens). */
  guestIf: string;
  /** Interface facing the host (the namespace's end of the veth pair). */
  uplinkIf: string;
  /** Open connections the guest may hold at once (tracked by the namespace); default 1024. */
  maxConnections?: number;
  /** New connections per second the guest may open (burst twice as many); default 200. */
  newConnectionsPerS?: number;
  /**
   * Denied in every mode, allow-lists notwithstanding: the node's own IPv4 addresses (every
   * interface, so the control plane too) and the sandbox address pool (every other sandbox).
   */
  denied: string[];
}

function elements(list: string[]): string {
  return `{ ${list.join(', ')} }`;
}

/**
 * The nftables ruleset for one sandbox namespace (loaded with `nft -f`, atomically). The
 * namespace forwards guest traffic to its uplink and masquerades it; it accepts nothing for
 * itself and sends nothing of its own (a VMM that opened a socket would reach nothing), except
 * the resets and ICMP errors its reject rules generate, so a denied connection fails at once in
 * the guest (ECONNREFUSED) instead of timing out.
 */
export function renderRuleset(policy: EgressPolicy, ctx: RulesetContext): string {
  const g = JSON.stringify(ctx.guestIf);
  const u = JSON.stringify(ctx.uplinkIf);
  const fromGuest = `iifname ${g} oifname ${u}`;
  const rate = ctx.newConnectionsPerS ?? DEFAULT_NEW_CONNECTIONS_PER_S;
  const lines: string[] = ['table inet isola {'];
  const denied = [...new Set(ctx.denied)];
  for (const d of denied) parseCidr(d);
  lines.push(
    `  set node4 { type ipv4_addr; flags interval; auto-merge; ${denied.length ? `elements = ${elements(denied)}` : ''} }`,
  );
  lines.push(
    `  set deny4 { type ipv4_addr; flags interval; auto-merge; elements = ${elements([...DENIED_RANGES])} }`,
  );
  const anyPort = policy.allow.filter((r) => r.port === undefined).map((r) => r.cidr);
  const withPort = [
    ...new Set(
      policy.allow.filter((r) => r.port !== undefined).map((r) => `${r.cidr} . ${r.port}`),
    ),
  ];
  lines.push(
    `  set allow4 { type ipv4_addr; flags interval; auto-merge; ${anyPort.length ? `elements = ${elements(anyPort)}` : ''} }`,
    `  set allow4p { type ipv4_addr . inet_service; flags interval; ${withPort.length ? `elements = ${elements(withPort)}` : ''} }`,
  );
  // Refusals: a TCP reset for TCP (ICMP errors are rate-limited by the kernel, so under a
  // flood most would never arrive and the guest would wait for timeouts), ICMP for the rest.
  lines.push('  chain refuse {', '    meta l4proto tcp reject with tcp reset', '    reject', '  }');
  lines.push(
    '  chain forward {',
    '    type filter hook forward priority filter; policy drop;',
    `    iifname ${u} oifname ${g} ct state established,related accept`,
    `    ${fromGuest} ct state established,related accept`,
    // Bounded connection tracking: a sandbox cannot fill the node's conntrack table (shared by
    // every sandbox behind the host's NAT) or churn connections without limit.
    `    ${fromGuest} ct count over ${ctx.maxConnections ?? DEFAULT_MAX_CONNECTIONS} counter goto refuse`,
    `    ${fromGuest} limit rate over ${rate}/second burst ${rate * 2} packets counter goto refuse`,
    `    ${fromGuest} ip daddr @node4 counter goto refuse`,
  );
  if (policy.mode !== 'none') {
    lines.push(
      `    ${fromGuest} ip daddr @allow4 counter accept`,
      `    ${fromGuest} ip daddr . tcp dport @allow4p counter accept`,
      `    ${fromGuest} ip daddr . udp dport @allow4p counter accept`,
    );
  }
  if (policy.mode === 'public') {
    lines.push(
      `    ${fromGuest} ip daddr @deny4 counter goto refuse`,
      `    ${fromGuest} meta nfproto ipv4 counter accept`,
    );
  }
  lines.push(
    `    ${fromGuest} counter goto refuse`,
    '  }',
    '  chain input {',
    '    type filter hook input priority filter; policy drop;',
    `    iifname ${g} counter goto refuse`,
    '  }',
    '  chain output {',
    '    type filter hook output priority filter; policy drop;',
    '    tcp flags & rst == rst accept',
    '    icmp type destination-unreachable accept',
    '  }',
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    oifname ${u} masquerade`,
    '  }',
    '}',
  );
  return `${lines.join('\n')}\n`;
}
