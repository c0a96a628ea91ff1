import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FUNCTION_PORT_NAME } from '../protocol/function.js';
import { AGENT_PORT_NAME, CONTROL_PORT_NAME } from '../protocol/messages.js';
import { type VmDescription, buildQemuArgs, escapeOpt, kernelCmdline } from './qemu-args.js';

function vm(over: Partial<VmDescription> = {}): VmDescription {
  return {
    id: 'sb-123',
    accel: 'tcg',
    vcpus: 2,
    memoryMiB: 384,
    kernel: '/assets/vmlinuz',
    initrd: '/assets/initrd.cpio',
    rootfs: '/assets/guest.ext4',
    drives: [],
    hostname: 'myhost',
    qmpSocket: '/run/isola/sb-123/qmp.sock',
    agentSocket: '/run/isola/sb-123/agent.sock',
    controlSocket: '/run/isola/sb-123/ctl.sock',
    consoleSocket: '/run/isola/sb-123/console.sock',
    paused: false,
    tcgTbSizeMiB: 64,
    ...over,
  };
}

/** Every value that follows an occurrence of `flag`. */
function valuesOf(args: string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === flag && i + 1 < args.length) out.push(args[i + 1]!);
  });
  return out;
}

function valueAfter(args: string[], flag: string): string {
  const v = valuesOf(args, flag);
  assert.equal(v.length, 1, `expected exactly one ${flag}, got ${JSON.stringify(v)}`);
  return v[0]!;
}

/** Parse a QEMU option string "a,b=c,d=e,,f" into key/value pairs (",," is a literal comma). */
function parseOpts(s: string): Array<[string, string]> {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === ',') {
      if (s[i + 1] === ',') {
        cur += ',';
        i++;
      } else {
        parts.push(cur);
        cur = '';
      }
    } else cur += s[i];
  }
  parts.push(cur);
  return parts.map((p) => {
    const eq = p.indexOf('=');
    return eq === -1 ? [p, ''] : [p.slice(0, eq), p.slice(eq + 1)];
  });
}

const optMap = (s: string) => new Map(parseOpts(s));

/** The -chardev with the given id: its backend and options. */
function chardev(args: string[], id: string): { backend: string; opts: Map<string, string> } {
  const found = valuesOf(args, '-chardev').filter((c) => optMap(c).get('id') === id);
  assert.equal(found.length, 1, `expected one chardev with id ${id}`);
  return { backend: parseOpts(found[0]!)[0]?.[0] ?? '', opts: optMap(found[0]!) };
}

describe('buildQemuArgs', () => {
  test('microvm machine with the legacy PIT, PIC and RTC on', () => {
    const m = optMap(valueAfter(buildQemuArgs(vm()), '-M'));
    assert.equal(parseOpts(valueAfter(buildQemuArgs(vm()), '-M'))[0]?.[0], 'microvm');
    assert.equal(m.get('pit'), 'on');
    assert.equal(m.get('pic'), 'on');
    assert.equal(m.get('rtc'), 'on');
  });

  test('TCG: -accel tcg,tb-size=N and -cpu max', () => {
    const args = buildQemuArgs(vm({ accel: 'tcg', tcgTbSizeMiB: 96 }));
    assert.equal(valueAfter(args, '-accel'), 'tcg,tb-size=96');
    assert.equal(valueAfter(args, '-cpu'), 'max');
  });

  test('KVM: -accel kvm and -cpu host, no tb-size', () => {
    const args = buildQemuArgs(vm({ accel: 'kvm', tcgTbSizeMiB: 96 }));
    assert.equal(valueAfter(args, '-accel'), 'kvm');
    assert.equal(valueAfter(args, '-cpu'), 'host');
    assert.ok(!args.join(' ').includes('tb-size'));
  });

  test('memory and vCPU count', () => {
    const args = buildQemuArgs(vm({ memoryMiB: 1024, vcpus: 3 }));
    assert.equal(valueAfter(args, '-m'), '1024M');
    assert.equal(valueAfter(args, '-smp'), '3');
  });

  test('-S only when paused', () => {
    assert.ok(buildQemuArgs(vm({ paused: true })).includes('-S'));
    assert.ok(!buildQemuArgs(vm({ paused: false })).includes('-S'));
  });

  test('-name isola-<id>, kernel, initrd, QMP socket', () => {
    const args = buildQemuArgs(vm({ id: 'abc-9' }));
    assert.equal(valueAfter(args, '-name'), 'isola-abc-9');
    assert.equal(valueAfter(args, '-kernel'), '/assets/vmlinuz');
    assert.equal(valueAfter(args, '-initrd'), '/assets/initrd.cpio');
    const qmp = valueAfter(args, '-qmp');
    assert.ok(qmp.startsWith('unix:/run/isola/sb-123/qmp.sock,'), qmp);
    assert.equal(optMap(qmp).get('server'), 'on');
    assert.equal(optMap(qmp).get('wait'), 'off');
    assert.ok(args.includes('-no-reboot'));
    assert.ok(args.includes('-nodefaults'));
  });

  test('the rootfs is the first virtio-blk drive and read-only', () => {
    const args = buildQemuArgs(vm({ drives: [{ id: 'data', path: '/d.img', readonly: false }] }));
    const drives = valuesOf(args, '-drive').map(optMap);
    assert.equal(drives[0]?.get('file'), '/assets/guest.ext4');
    assert.equal(drives[0]?.get('readonly'), 'on');
    assert.equal(drives[0]?.get('if'), 'none');
    const blk = valuesOf(args, '-device').filter((d) => d.startsWith('virtio-blk-device,'));
    assert.equal(blk[0], `virtio-blk-device,drive=${drives[0]?.get('id')}`);
  });

  test('extra drives follow in order; readonly only when asked; format honoured', () => {
    const args = buildQemuArgs(
      vm({
        drives: [
          { id: 'a', path: '/a.img', readonly: false },
          { id: 'b', path: '/b.qcow2', readonly: true, format: 'qcow2' },
          { id: 'c', path: '/c.img', readonly: false },
        ],
      }),
    );
    const drives = valuesOf(args, '-drive').map(optMap);
    assert.deepEqual(
      drives.map((d) => d.get('file')),
      ['/assets/guest.ext4', '/a.img', '/b.qcow2', '/c.img'],
    );
    assert.deepEqual(
      drives.map((d) => d.get('readonly')),
      ['on', undefined, 'on', undefined],
    );
    assert.deepEqual(
      drives.map((d) => d.get('format')),
      ['raw', 'raw', 'qcow2', 'raw'],
    );
    const blk = valuesOf(args, '-device').filter((d) => d.startsWith('virtio-blk-device,'));
    assert.deepEqual(
      blk.map((d) => optMap(d).get('drive')),
      drives.map((d) => d.get('id')),
    );
    // Each -drive is immediately followed by its -device, so the guest sees them as vda, vdb, ...
    args.forEach((a, i) => {
      if (a !== '-drive') return;
      assert.equal(args[i + 2], '-device');
      assert.equal(args[i + 3], `virtio-blk-device,drive=${optMap(args[i + 1]!).get('id')}`);
    });
  });

  test('commas in paths are doubled', () => {
    const args = buildQemuArgs(
      vm({
        rootfs: '/a,b/guest.ext4',
        agentSocket: '/run/x,y/agent.sock',
        controlSocket: '/run/x,y/ctl.sock',
        consoleSocket: '/run/x,y/console.sock',
        drives: [{ id: 'd', path: '/data,readonly=off', readonly: true }],
      }),
    );
    const drives = valuesOf(args, '-drive');
    assert.ok(drives[0]?.includes('file=/a,,b/guest.ext4,'), drives[0]);
    assert.equal(optMap(drives[0]!).get('file'), '/a,b/guest.ext4');
    // A comma cannot smuggle in an option: readonly stays on for the drive that asked for it.
    assert.equal(optMap(drives[1]!).get('file'), '/data,readonly=off');
    assert.equal(optMap(drives[1]!).get('readonly'), 'on');
    const port = valuesOf(args, '-device').find((d) => d.startsWith('virtserialport,'));
    assert.equal(
      chardev(args, optMap(port ?? '').get('chardev') ?? '').opts.get('path'),
      '/run/x,y/agent.sock',
    );
    const serial = valueAfter(args, '-serial');
    assert.equal(
      chardev(args, serial.replace(/^chardev:/, '')).opts.get('path'),
      '/run/x,y/console.sock',
    );
  });

  test('escapeOpt doubles every comma and nothing else', () => {
    assert.equal(escapeOpt('a,b,,c'), 'a,,b,,,,c');
    assert.equal(escapeOpt('plain/path'), 'plain/path');
    assert.equal(escapeOpt(''), '');
  });

  test('agent virtio-serial port is named AGENT_PORT_NAME on the agent chardev', () => {
    const args = buildQemuArgs(vm());
    const devices = valuesOf(args, '-device');
    assert.ok(devices.some((d) => d.startsWith('virtio-serial-device')));
    const port = devices.find((d) => d.startsWith('virtserialport,'));
    assert.ok(port, 'no virtserialport device');
    const opts = optMap(port);
    assert.equal(opts.get('name'), AGENT_PORT_NAME);
    const agent = chardev(args, opts.get('chardev') ?? '');
    assert.equal(agent.backend, 'socket');
    assert.equal(agent.opts.get('path'), '/run/isola/sb-123/agent.sock');
    assert.equal(agent.opts.get('server'), 'on');
    assert.equal(agent.opts.get('wait'), 'off');
  });

  test('a function port is a second named virtserialport only when asked', () => {
    const without = buildQemuArgs(vm());
    assert.ok(valuesOf(without, '-device').includes('virtio-serial-device,max_ports=3'));
    assert.ok(!valuesOf(without, '-chardev').some((c) => c.startsWith('socket,id=fn,')));
    const args = buildQemuArgs(vm({ functionSocket: '/run/isola/sb-123/fn.sock' }));
    const devices = valuesOf(args, '-device');
    assert.ok(devices.includes('virtio-serial-device,max_ports=4'));
    assert.ok(devices.includes(`virtserialport,chardev=fn,name=${FUNCTION_PORT_NAME}`));
    assert.ok(
      valuesOf(args, '-chardev').includes(
        'socket,id=fn,path=/run/isola/sb-123/fn.sock,server=on,wait=off',
      ),
    );
  });

  test('the control port is always there, on its own socket', () => {
    const args = buildQemuArgs(vm());
    assert.ok(
      valuesOf(args, '-device').includes(`virtserialport,chardev=ctl,name=${CONTROL_PORT_NAME}`),
    );
    assert.ok(
      valuesOf(args, '-chardev').includes(
        'socket,id=ctl,path=/run/isola/sb-123/ctl.sock,server=on,wait=off',
      ),
    );
  });

  test('the serial console goes to the console socket, not stdio', () => {
    const args = buildQemuArgs(vm());
    const serial = valueAfter(args, '-serial');
    assert.notEqual(serial, 'stdio');
    assert.match(serial, /^chardev:/);
    const console = chardev(args, serial.slice('chardev:'.length));
    assert.equal(console.backend, 'socket');
    assert.equal(console.opts.get('path'), '/run/isola/sb-123/console.sock');
    assert.equal(console.opts.get('server'), 'on');
  });

  test('probe mode attaches no drives and no agent port', () => {
    const args = buildQemuArgs(
      vm({ probe: true, drives: [{ id: 'x', path: '/x', readonly: true }] }),
    );
    assert.deepEqual(valuesOf(args, '-drive'), []);
    assert.ok(!valuesOf(args, '-device').some((d) => d.startsWith('virtio-blk-device')));
    assert.ok(!valuesOf(args, '-device').some((d) => d.startsWith('virtserialport')));
    assert.ok(valueAfter(args, '-append').split(' ').includes('isola.probe=1'));
  });

  test('-append carries the kernel command line', () => {
    const v = vm();
    assert.equal(valueAfter(buildQemuArgs(v), '-append'), kernelCmdline(v));
  });
});

describe('kernelCmdline', () => {
  test('carries the hostname', () => {
    assert.ok(
      kernelCmdline(vm({ hostname: 'fn-7' }))
        .split(' ')
        .includes('isola.hostname=fn-7'),
    );
  });

  test('mitigations=off only under TCG', () => {
    assert.ok(
      kernelCmdline(vm({ accel: 'tcg' }))
        .split(' ')
        .includes('mitigations=off'),
    );
    assert.ok(!kernelCmdline(vm({ accel: 'kvm' })).includes('mitigations'));
  });

  test('a known TSC frequency skips calibration, never in probe mode', () => {
    const words = kernelCmdline(vm({ tscKhz: 2596161.4 })).split(' ');
    assert.ok(words.includes('tsc_early_khz=2596161'));
    assert.ok(words.includes('tsc=reliable'));
    assert.ok(!kernelCmdline(vm()).includes('tsc_early_khz'));
    assert.ok(!kernelCmdline(vm({ tscKhz: 2596161, probe: true })).includes('tsc_early_khz'));
  });

  test('guest RAM is a memfd backend of the configured size', () => {
    const args = buildQemuArgs(vm({ memoryMiB: 384 }));
    assert.ok(valuesOf(args, '-object').includes('memory-backend-memfd,id=ram,size=384M,share=on'));
    assert.match(valuesOf(args, '-M')[0]!, /memory-backend=ram/);
  });

  test('snapshot source maps its RAM file shared; a clone maps it private (copy-on-write)', () => {
    const src = buildQemuArgs(vm({ memoryFile: { path: '/s/a,b/mem', share: true } }));
    assert.ok(
      valuesOf(src, '-object').includes(
        'memory-backend-file,id=ram,size=384M,mem-path=/s/a,,b/mem,share=on',
      ),
    );
    const clone = buildQemuArgs(
      vm({ memoryFile: { path: '/s/mem', share: false }, incoming: true }),
    );
    assert.ok(
      valuesOf(clone, '-object').includes(
        'memory-backend-file,id=ram,size=384M,mem-path=/s/mem,share=off',
      ),
    );
    assert.deepEqual(valuesOf(clone, '-incoming'), ['defer']);
    // No free page reporting on file RAM (it would punch holes in the shared snapshot file).
    assert.ok(valuesOf(clone, '-device').includes('virtio-balloon-device'));
    assert.ok(valuesOf(src, '-device').includes('virtio-balloon-device'));
    assert.ok(
      valuesOf(buildQemuArgs(vm()), '-device').includes(
        'virtio-balloon-device,free-page-reporting=on',
      ),
    );
    assert.deepEqual(valuesOf(src, '-incoming'), []);
  });

  test('isola.probe=1 only in probe mode', () => {
    assert.ok(!kernelCmdline(vm()).includes('isola.probe'));
    assert.ok(
      kernelCmdline(vm({ probe: true }))
        .split(' ')
        .includes('isola.probe=1'),
    );
  });

  test('serial console, panic ends the VM, extra kernel args appended last', () => {
    const words = kernelCmdline(vm({ kernelArgs: ['foo=1', 'bar'] })).split(' ');
    assert.ok(words.includes('console=ttyS0'));
    assert.ok(words.includes('panic=-1'));
    assert.deepEqual(words.slice(-2), ['foo=1', 'bar']);
  });

  test('a NIC: virtio-net on the inherited tap descriptor, guest address on the command line', () => {
    const net = {
      tapFd: 3,
      mac: '52:54:00:15:01:02',
      address: '172.31.255.2/30',
      gateway: '172.31.255.1',
      dns: ['1.1.1.1', '9.9.9.9'],
    };
    const args = buildQemuArgs(vm({ network: net }));
    assert.deepEqual(valuesOf(args, '-netdev'), ['tap,id=net0,fd=3']);
    assert.ok(
      valuesOf(args, '-device').includes('virtio-net-device,netdev=net0,mac=52:54:00:15:01:02'),
    );
    const words = kernelCmdline(vm({ network: net })).split(' ');
    assert.ok(words.includes('isola.net=172.31.255.2/30,172.31.255.1'));
    assert.ok(words.includes('isola.dns=1.1.1.1,9.9.9.9'));
    assert.deepEqual(valuesOf(buildQemuArgs(vm()), '-netdev'), [], 'no NIC unless asked');
  });

  test('seccomp: no spawning, no privilege changes, no obsolete calls', () => {
    const opts = new Map(parseOpts(valueAfter(buildQemuArgs(vm({ seccomp: true })), '-sandbox')));
    assert.equal(opts.get('on'), '');
    for (const k of ['obsolete', 'elevateprivileges', 'spawn', 'resourcecontrol']) {
      assert.equal(opts.get(k), 'deny', k);
    }
    assert.deepEqual(valuesOf(buildQemuArgs(vm()), '-sandbox'), []);
  });

  test('disk limits on every drive but the guest image, with bursts', () => {
    const args = buildQemuArgs(
      vm({
        drives: [{ id: 'drive0', path: '/d/rw.qcow2', readonly: false, format: 'qcow2' }],
        diskLimits: { bytesPerS: 1000, opsPerS: 10 },
      }),
    );
    const drives = valuesOf(args, '-drive').map((d) => new Map(parseOpts(d)));
    const root = drives.find((d) => d.get('id') === 'rootfs')!;
    const rw = drives.find((d) => d.get('id') === 'drive0')!;
    assert.equal(
      root.get('throttling.bps-total'),
      undefined,
      'the shared guest image is not throttled',
    );
    assert.equal(rw.get('throttling.bps-total'), '1000');
    assert.equal(rw.get('throttling.bps-total-max'), '4000');
    assert.equal(rw.get('throttling.iops-total'), '10');
    assert.equal(rw.get('throttling.iops-total-max'), '40');
    assert.equal(rw.get('throttling.iops-total-max-length'), '30');
    const none = buildQemuArgs(vm({ drives: [{ id: 'drive0', path: '/x', readonly: true }] }));
    assert.ok(!none.some((a) => a.includes('throttling')), 'no limits unless asked');
  });
});
