import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { REPO_ROOT } from '../assets/paths.js';
import { IsolaError } from '../errors.js';
import { CAPABILITIES } from './commands/features.js';
import { defaultSpec } from './commands/spec.js';
import {
  DEFAULT_DEVICES,
  DEFAULT_GUEST_MIB,
  GUEST_OVERHEAD_MIB,
  type OciConfig,
  parseConfig,
  translate,
  vmSize,
} from './config.js';
import { checkTransition } from './state.js';

// biome-ignore lint/suspicious/noExplicitAny: tests patch arbitrary parts of a JSON document
type Json = Record<string, any>;

function config(patch: (c: Json) => void = () => {}): OciConfig {
  const c = defaultSpec() as Json;
  patch(c);
  return parseConfig(c);
}

const opts = { id: 'c1', bundle: '/bundles/b1', guestDir: '/run/isola-oci/c1', hostCpus: 4 };

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof IsolaError, String(err));
    return err.code;
  }
  assert.fail('expected an error');
}

describe('parseConfig', () => {
  test('accepts the default spec and ignores unknown properties', () => {
    const c = config((c) => {
      c.someFutureField = { x: 1 };
      c.process.someFutureField = true;
    });
    assert.equal(c.process.args[0], 'sh');
  });

  test('rejects missing args, a relative cwd, a bad ociVersion, with E_OCI_INVALID_CONFIG', () => {
    assert.equal(
      code(() =>
        config((c) => {
          c.process.args = [];
        }),
      ),
      'E_OCI_INVALID_CONFIG',
    );
    assert.equal(
      code(() =>
        config((c) => {
          c.process.cwd = 'relative';
        }),
      ),
      'E_OCI_INVALID_CONFIG',
    );
    assert.equal(
      code(() =>
        config((c) => {
          c.ociVersion = '0.9';
        }),
      ),
      'E_OCI_INVALID_CONFIG',
    );
    assert.equal(
      code(() =>
        config((c) => {
          c.root = undefined;
        }),
      ),
      'E_OCI_INVALID_CONFIG',
    );
  });
});

describe('vmSize', () => {
  test('memory limit -> guest RAM plus overhead; no limit -> default', () => {
    assert.equal(vmSize(config(), 4).memoryMiB, DEFAULT_GUEST_MIB);
    const c = config((c) => {
      c.linux.resources = { memory: { limit: 96 * 2 ** 20 } };
    });
    assert.equal(vmSize(c, 4).memoryMiB, 96 + GUEST_OVERHEAD_MIB);
  });

  test('cpu quota/period -> vCPUs, rounded up and capped at the host', () => {
    const cpus = (quota: number, period: number, host = 4) =>
      vmSize(
        config((c) => {
          c.linux.resources = { cpu: { quota, period } };
        }),
        host,
      ).vcpus;
    assert.equal(cpus(50_000, 100_000), 1);
    assert.equal(cpus(150_000, 100_000), 2);
    assert.equal(cpus(800_000, 100_000, 4), 4);
    assert.equal(vmSize(config(), 4).vcpus, 1);
  });
});

describe('translate', () => {
  test('namespaces map to the guest (network -> net); cgroup mounts become cgroup2', () => {
    const { plan } = translate(config(), opts);
    assert.deepEqual(plan.namespaces.sort(), ['cgroup', 'ipc', 'mount', 'net', 'pid', 'uts']);
    const cg = plan.mounts.find((m) => m.destination === '/sys/fs/cgroup');
    assert.equal(cg?.type, 'cgroup2');
    assert.equal(plan.rootfs, '/run/isola-oci/c1/rootfs');
    assert.equal(plan.hostname, 'isola');
  });

  test('a fresh /dev gets the default devices, bound from the guest', () => {
    const { plan } = translate(config(), opts);
    for (const dev of DEFAULT_DEVICES) {
      assert.deepEqual(
        plan.mounts.find((m) => m.destination === dev),
        { source: dev, destination: dev, type: 'bind', options: ['bind'] },
      );
    }
    const noDev = translate(
      config((c) => {
        c.mounts = c.mounts.filter((m: Json) => m.destination !== '/dev');
      }),
      opts,
    );
    assert.equal(
      noDev.plan.mounts.filter((m) => DEFAULT_DEVICES.includes(m.destination)).length,
      0,
    );
  });

  test('bind mounts of host paths are copied into the guest, relative sources resolved against the bundle', () => {
    const t = translate(
      config((c) => {
        c.mounts.push({
          destination: '/etc/resolv.conf',
          type: 'bind',
          source: '/etc/resolv.conf',
          options: ['rbind', 'ro'],
        });
        c.mounts.push({ destination: '/data', source: 'data', options: ['bind'] });
      }),
      opts,
    );
    assert.deepEqual(t.binds, [
      { hostPath: '/etc/resolv.conf', guestPath: '/run/isola-oci/c1/binds/0' },
      { hostPath: '/bundles/b1/data', guestPath: '/run/isola-oci/c1/binds/1' },
    ]);
    const m = t.plan.mounts.find((x) => x.destination === '/etc/resolv.conf');
    assert.deepEqual(m, {
      source: '/run/isola-oci/c1/binds/0',
      destination: '/etc/resolv.conf',
      type: 'bind',
      options: ['rbind', 'ro'],
    });
  });

  test('resources become guest cgroup limits', () => {
    const { plan } = translate(
      config((c) => {
        c.linux.resources = {
          memory: { limit: 1048576 },
          pids: { limit: 10 },
          cpu: { quota: 50000, period: 100000 },
        };
      }),
      opts,
    );
    assert.deepEqual(plan.cgroup, {
      dir: '/sys/fs/cgroup/isola/c1',
      limits: [
        ['memory.max', '1048576'],
        ['pids.max', '10'],
        ['cpu.max', '50000 100000'],
      ],
    });
  });

  test('process fields carry over; terminal needs a console socket', () => {
    const { plan } = translate(
      config((c) => {
        c.process.user = { uid: 1000, gid: 100, additionalGids: [5], umask: 0o22 };
        c.process.rlimits = [{ type: 'RLIMIT_NOFILE', soft: 10, hard: 2 ** 64 }];
      }),
      opts,
    );
    assert.equal(plan.process.uid, 1000);
    assert.deepEqual(plan.process.additionalGids, [5]);
    assert.equal(plan.process.umask, 0o22);
    assert.deepEqual(plan.process.rlimits, [
      { type: 'RLIMIT_NOFILE', soft: 10, hard: 'unlimited' },
    ]);
    assert.equal(plan.process.noNewPrivileges, true);
    assert.deepEqual(plan.process.capabilities.bounding, [
      'CAP_AUDIT_WRITE',
      'CAP_KILL',
      'CAP_NET_BIND_SERVICE',
    ]);
    const tty = config((c) => {
      c.process.terminal = true;
      c.process.consoleSize = { height: 40, width: 120 };
    });
    assert.equal(
      code(() => translate(tty, opts)),
      'E_OCI_INVALID_CONFIG',
    );
    assert.deepEqual(translate(tty, { ...opts, consoleSocket: true }).plan.process.terminal, {
      rows: 40,
      cols: 120,
    });
  });

  test("a network namespace made by the engine is the VM's: the container shares the guest's", () => {
    const t = translate(
      config((c) => {
        c.linux.namespaces = [
          { type: 'network', path: '/run/netns/cni-1234' },
          { type: 'mount' },
          { type: 'pid' },
          { type: 'uts' },
        ];
      }),
      opts,
    );
    assert.equal(t.netnsPath, '/run/netns/cni-1234');
    assert.deepEqual(t.plan.namespaces.sort(), ['mount', 'pid', 'uts']);
    assert.equal(
      translate(
        config(() => {}),
        opts,
      ).netnsPath,
      undefined,
    );
  });

  test('what isola cannot honour is rejected, not dropped', () => {
    assert.equal(
      code(() =>
        translate(
          config((c) => {
            c.linux.namespaces.push({ type: 'user' });
          }),
          opts,
        ),
      ),
      'E_OCI_UNSUPPORTED',
    );
    assert.equal(
      code(() =>
        translate(
          config((c) => {
            c.linux.namespaces = [{ type: 'ipc', path: '/proc/1/ns/ipc' }, { type: 'mount' }];
          }),
          opts,
        ),
      ),
      'E_OCI_UNSUPPORTED',
    );
    assert.equal(
      code(() =>
        translate(
          config((c) => {
            c.linux.uidMappings = [{ containerID: 0, hostID: 1000, size: 1 }];
          }),
          opts,
        ),
      ),
      'E_OCI_UNSUPPORTED',
    );
    assert.equal(
      code(() =>
        translate(
          config((c) => {
            c.linux.namespaces = [{ type: 'mount' }];
          }),
          opts,
        ),
      ),
      'E_OCI_INVALID_CONFIG',
      'hostname without uts',
    );
    assert.equal(
      code(() =>
        translate(
          config((c) => {
            c.linux.namespaces.push({ type: 'bogus' });
          }),
          opts,
        ),
      ),
      'E_OCI_INVALID_CONFIG',
    );
  });
});

test('`features` lists exactly the capabilities the in-guest init knows', () => {
  const c = readFileSync(path.join(REPO_ROOT, 'guest-assets/cinit.c'), 'utf8');
  const known = [...c.matchAll(/"(CAP_[A-Z_]+)"/g)].map((m) => m[1]);
  assert.deepEqual([...CAPABILITIES], known);
});

describe('OCI lifecycle', () => {
  test('legal transitions pass, illegal ones are E_OCI_STATE', () => {
    checkTransition('c', 'created', 'start');
    checkTransition('c', 'running', 'kill');
    checkTransition('c', 'running', 'pause');
    checkTransition('c', 'paused', 'resume');
    checkTransition('c', 'stopped', 'delete');
    assert.equal(
      code(() => checkTransition('c', 'running', 'start')),
      'E_OCI_STATE',
    );
    assert.equal(
      code(() => checkTransition('c', 'created', 'exec')),
      'E_OCI_STATE',
    );
    assert.equal(
      code(() => checkTransition('c', 'running', 'delete')),
      'E_OCI_STATE',
    );
    assert.equal(
      code(() => checkTransition('c', 'stopped', 'kill')),
      'E_OCI_STATE',
    );
    assert.equal(
      code(() => checkTransition('c', 'paused', 'exec')),
      'E_OCI_STATE',
    );
  });
});
