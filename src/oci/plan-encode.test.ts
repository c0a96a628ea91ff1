import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodePlanLines, encodePlan } from './plan-encode.js';
import type { Plan } from './plan.js';

function minimal(): Plan {
  return {
    rootfs: '/run/c1/rootfs',
    readonlyRoot: false,
    namespaces: [],
    mounts: [],
    maskedPaths: [],
    readonlyPaths: [],
    sysctls: [],
    process: {
      args: ['sh'],
      env: [],
      cwd: '/',
      uid: 0,
      gid: 0,
      additionalGids: [],
      rlimits: [],
      capabilities: {},
      noNewPrivileges: false,
    },
  };
}

function full(): Plan {
  return {
    rootfs: '/run/c1/rootfs',
    readonlyRoot: true,
    hostname: 'web-1',
    namespaces: ['mount', 'uts', 'ipc', 'pid', 'cgroup', 'net'],
    mounts: [
      { source: 'proc', destination: '/proc', type: 'proc', options: ['nosuid', 'noexec'] },
      { source: 'tmpfs', destination: '/dev', type: 'tmpfs', options: ['mode=755', 'size=65536k'] },
      { source: '/data/a', destination: '/etc/a', type: 'bind', options: ['bind', 'ro'] },
    ],
    maskedPaths: ['/proc/kcore', '/sys/firmware'],
    readonlyPaths: ['/proc/sys'],
    cgroup: {
      dir: '/sys/fs/cgroup/isola/c1',
      limits: [
        ['memory.max', '268435456'],
        ['pids.max', '100'],
      ],
    },
    sysctls: [['net.ipv4.ip_forward', '1']],
    process: {
      args: ['/bin/app', '--flag'],
      env: ['PATH=/bin', 'HOME=/root'],
      cwd: '/work',
      uid: 1000,
      gid: 1001,
      additionalGids: [5, 20],
      umask: 0o22,
      rlimits: [{ type: 'RLIMIT_NOFILE', soft: 1024, hard: 'unlimited' }],
      capabilities: {
        ambient: ['CAP_NET_BIND_SERVICE'],
        bounding: ['CAP_CHOWN', 'CAP_KILL'],
        effective: [],
      },
      noNewPrivileges: true,
    },
  };
}

describe('encodePlan', () => {
  test('a minimal plan: rootfs, user, groups (empty), cwd, args', () => {
    assert.equal(
      encodePlan(minimal()),
      'rootfs\t/run/c1/rootfs\nuid\t0\ngid\t0\ngroups\t\ncwd\t/\narg\tsh\n',
    );
  });

  test('every directive, in the documented order', () => {
    assert.deepEqual(decodePlanLines(encodePlan(full())), [
      ['rootfs', '/run/c1/rootfs'],
      ['readonly', '1'],
      ['hostname', 'web-1'],
      ['ns', 'mount'],
      ['ns', 'uts'],
      ['ns', 'ipc'],
      ['ns', 'pid'],
      ['ns', 'cgroup'],
      ['ns', 'net'],
      ['mount', 'proc', '/proc', 'proc', 'nosuid,noexec'],
      ['mount', 'tmpfs', '/dev', 'tmpfs', 'mode=755,size=65536k'],
      ['mount', '/data/a', '/etc/a', 'bind', 'bind,ro'],
      ['masked', '/proc/kcore'],
      ['masked', '/sys/firmware'],
      ['rdonly', '/proc/sys'],
      ['cgroup', '/sys/fs/cgroup/isola/c1'],
      ['cglimit', 'memory.max', '268435456'],
      ['cglimit', 'pids.max', '100'],
      ['sysctl', 'net.ipv4.ip_forward', '1'],
      ['rlimit', 'RLIMIT_NOFILE', '1024', 'unlimited'],
      // Sets in a fixed order, whatever the object's key order; an empty set stays (drop all).
      ['cap', 'bounding', 'CAP_CHOWN,CAP_KILL'],
      ['cap', 'effective', ''],
      ['cap', 'ambient', 'CAP_NET_BIND_SERVICE'],
      ['nnp', '1'],
      ['uid', '1000'],
      ['gid', '1001'],
      ['groups', '5,20'],
      ['umask', '0022'],
      ['cwd', '/work'],
      ['env', 'PATH=/bin'],
      ['env', 'HOME=/root'],
      ['arg', '/bin/app'],
      ['arg', '--flag'],
    ]);
  });

  test('one directive per line, TAB-separated, newline-terminated', () => {
    const text = encodePlan(full());
    assert.ok(text.endsWith('\n'));
    for (const line of text.slice(0, -1).split('\n')) assert.match(line, /^[a-z]+(\t[^\t\n]*)+$/);
  });

  test('absent optional parts write nothing', () => {
    const text = encodePlan(minimal());
    for (const d of ['readonly', 'hostname', 'ns', 'mount', 'cgroup', 'cap', 'nnp', 'umask'])
      assert.doesNotMatch(text, new RegExp(`^${d}\\t`, 'm'), d);
  });

  test('backslash, TAB and newline are escaped inside fields and round-trip', () => {
    const plan = minimal();
    const tricky = 'a\\b\tc\nd\\\\t\\n';
    plan.process.args = ['sh', '-c', tricky];
    plan.process.env = ['X=1\n2', 'Y=tab\there'];
    plan.hostname = 'h\\';
    const text = encodePlan(plan);
    assert.ok(text.includes('arg\ta\\\\b\\tc\\nd\\\\\\\\t\\\\n\n'), text);
    assert.equal(text.split('\n').length - 1, decodePlanLines(text).length);
    const lines = decodePlanLines(text);
    assert.deepEqual(
      lines.filter((l) => l[0] === 'arg').map((l) => l[1]),
      ['sh', '-c', tricky],
    );
    assert.deepEqual(
      lines.filter((l) => l[0] === 'env').map((l) => l[1]),
      ['X=1\n2', 'Y=tab\there'],
    );
    assert.deepEqual(
      lines.find((l) => l[0] === 'hostname'),
      ['hostname', 'h\\'],
    );
  });

  test('empty strings and unicode survive', () => {
    const plan = minimal();
    plan.process.args = ['echo', '', 'héllo ✓'];
    const args = decodePlanLines(encodePlan(plan)).filter((l) => l[0] === 'arg');
    assert.deepEqual(args, [
      ['arg', 'echo'],
      ['arg', ''],
      ['arg', 'héllo ✓'],
    ]);
  });

  test('umask is octal, zero-padded', () => {
    for (const [umask, text] of [
      [0, '0000'],
      [0o27, '0027'],
      [0o777, '0777'],
    ] as const) {
      const plan = minimal();
      plan.process.umask = umask;
      assert.match(encodePlan(plan), new RegExp(`^umask\\t${text}$`, 'm'));
    }
  });

  test('NUL characters are rejected, wherever they are', () => {
    const cases: Array<(p: Plan) => void> = [
      (p) => {
        p.rootfs = '/a\0b';
      },
      (p) => {
        p.hostname = 'h\0';
      },
      (p) => {
        p.process.args = ['sh', '\0'];
      },
      (p) => {
        p.process.env = ['A=\0'];
      },
      (p) => {
        p.process.cwd = '/\0';
      },
      (p) => {
        p.mounts = [{ source: 's\0', destination: '/d', type: 't', options: [] }];
      },
      (p) => {
        p.maskedPaths = ['/x\0'];
      },
      (p) => {
        p.sysctls = [['k', 'v\0']];
      },
      (p) => {
        p.cgroup = { dir: '/c', limits: [['pids.max', '1\0']] };
      },
    ];
    for (const [i, mutate] of cases.entries()) {
      const plan = minimal();
      mutate(plan);
      assert.throws(() => encodePlan(plan), /NUL/, `case ${i}`);
    }
  });

  test('fields that cannot be carried are rejected', () => {
    const cases: Array<[string, (p: Plan) => void]> = [
      [
        'comma in a mount option',
        (p) => {
          p.mounts = [{ source: 'tmpfs', destination: '/t', type: 'tmpfs', options: ['a,b'] }];
        },
      ],
      [
        'empty mount option',
        (p) => {
          p.mounts = [{ source: 'tmpfs', destination: '/t', type: 'tmpfs', options: [''] }];
        },
      ],
      [
        'comma in a capability',
        (p) => {
          p.process.capabilities = { bounding: ['CAP_CHOWN,CAP_KILL'] };
        },
      ],
      [
        'negative uid',
        (p) => {
          p.process.uid = -1;
        },
      ],
      [
        'uid -1 as unsigned',
        (p) => {
          p.process.uid = 0xffffffff;
        },
      ],
      [
        'fractional gid',
        (p) => {
          p.process.gid = 1.5;
        },
      ],
      [
        'NaN group',
        (p) => {
          p.process.additionalGids = [Number.NaN];
        },
      ],
      [
        'umask out of range',
        (p) => {
          p.process.umask = 0o1000;
        },
      ],
      [
        'unsafe rlimit',
        (p) => {
          p.process.rlimits = [{ type: 'RLIMIT_NOFILE', soft: 2 ** 64, hard: 'unlimited' }];
        },
      ],
      [
        'negative rlimit',
        (p) => {
          p.process.rlimits = [{ type: 'RLIMIT_NOFILE', soft: -1, hard: 1 }];
        },
      ],
      [
        'cgroup file with a slash',
        (p) => {
          p.cgroup = { dir: '/c', limits: [['../x', '1']] };
        },
      ],
      [
        'unknown namespace',
        (p) => {
          p.namespaces = ['user' as never];
        },
      ],
      [
        'no args',
        (p) => {
          p.process.args = [];
        },
      ],
    ];
    for (const [name, mutate] of cases) {
      const plan = minimal();
      mutate(plan);
      assert.throws(() => encodePlan(plan), /^Error: plan: /, name);
    }
  });
});

describe('decodePlanLines', () => {
  test('splits lines and fields and unescapes', () => {
    assert.deepEqual(decodePlanLines('a\tb\\tc\n\nd\t\\\\\t\\n\n'), [
      ['a', 'b\tc'],
      ['d', '\\', '\n'],
    ]);
  });

  test('rejects unknown and dangling escapes', () => {
    assert.throws(() => decodePlanLines('arg\t\\x\n'), /bad escape/);
    assert.throws(() => decodePlanLines('arg\tend\\\n'), /bad escape/);
  });
});
