// The QEMU command line as pure data: a VM description in, argv out. Unit-tested without QEMU
// (qemu-args.test.ts). Machine type `microvm`: no PCI, no firmware, virtio-mmio devices found by
// the guest through ACPI, direct kernel boot. The legacy PIT/PIC/RTC are on because without them
// a TCG guest hangs about half the time calibrating its TSC (../shared/HOST-NOTES.md).

import { FUNCTION_PORT_NAME } from '../protocol/function.js';
import { AGENT_PORT_NAME, CONTROL_PORT_NAME } from '../protocol/messages.js';

export type Accel = 'kvm' | 'tcg';

export interface DriveSpec {
  id: string;
  path: string;
  readonly: boolean;
  format?: 'raw' | 'qcow2';
}

export interface VmDescription {
  /** Sandbox id; appears in `-name` so the reaper can recognise the process. */
  id: string;
  accel: Accel;
  vcpus: number;
  memoryMiB: number;
  kernel: string;
  initrd: string;
  /** The guest image, attached first so the guest sees it as /dev/vda. */
  rootfs: string;
  drives: DriveSpec[];
  hostname: string;
  qmpSocket: string;
  agentSocket: string;
  /** The control port (CONTROL_PORT_NAME), served in the guest by guestctl. */
  controlSocket: string;
  /**
   * A second virtio-serial port, named FUNCTION_PORT_NAME, for a function runtime to talk to the
   * host directly (no agent hop on the invocation path).
   */
  functionSocket?: string;
  /**
   * The guest console (UART) as a unix socket the host reads. Not stdio: QEMU exits when its
   * stdio breaks, and a VM must survive its owner's crash until the reaper decides.
   */
  consoleSocket: string;
  /** Start with the CPUs stopped (`-S`) so the host can connect before the guest runs. */
  paused: boolean;
  /** TCG translation-cache size in MiB; bounds host memory per sandbox under TCG. */
  tcgTbSizeMiB: number;
  /** Boot probe: the initramfs prints a marker and powers off without mounting anything. */
  probe?: boolean;
  /**
   * TSC frequency in kHz, when known (TCG): the guest skips its TSC calibration, which hangs the
   * boot now and then under TCG (see vmm/accel.ts tcgTscKhz).
   */
  tscKhz?: number;
  /** Extra kernel command-line words (validated by the caller). */
  kernelArgs?: string[];
  /**
   * Guest RAM in a file instead of an anonymous memfd. `share: true` (a sandbox that will be
   * snapshotted): the file is the guest's memory, written through, so a snapshot needs only the
   * device state. `share: false` (a clone restored from a snapshot): the file is mapped private,
   * copy-on-write, so clones share the pages they never write and never see each other's writes.
   */
  memoryFile?: { path: string; share: boolean };
  /** Wait for an incoming migration (`-incoming defer`): a pre-spawned VMM for a restore. */
  incoming?: boolean;
  /**
   * A virtio-net NIC on a tap device (in the VMM's network namespace, net/attach.ts) and the
   * guest's address on it; the guest's init configures eth0 from the kernel command line.
   */
  network?: VmNetwork;
  /**
   * I/O limits for every drive but the guest image (read-only, shared, served from the host's
   * page cache): sustained bytes and operations per second, with bursts of BURST_FACTOR times
   * that for BURST_SECONDS, so one sandbox cannot hog the node's disk.
   */
  diskLimits?: DiskLimits;
  /**
   * QEMU's seccomp filter: no obsolete system calls, no privilege changes, no new processes
   * (fork/exec), no resource-control calls (the jailed VMM needs none of them).
   */
  seccomp?: boolean;
}

export interface DiskLimits {
  bytesPerS: number;
  opsPerS: number;
}

/** A drive may run at this many times its limit for this long (QEMU's leaky-bucket bursts). */
export const DISK_BURST_FACTOR = 4;
export const DISK_BURST_SECONDS = 30;

export interface VmNetwork {
  /** The tap device as an open descriptor the VMM inherits (the jail opens it). */
  tapFd: number;
  mac: string;
  /** Guest address with prefix, e.g. 172.31.255.2/30. */
  address: string;
  gateway: string;
  dns: string[];
}

export function kernelCmdline(vm: VmDescription): string {
  const words = [
    'console=ttyS0',
    // Quiet console: every byte on the emulated UART costs time under TCG.
    'quiet',
    'loglevel=3',
    // Triple-fault reboot + QEMU -no-reboot: a guest reboot or panic ends the QEMU process.
    'reboot=t',
    'panic=-1',
    'pci=off',
    'nomodeset',
    'i8042.noaux',
    'i8042.nopnp',
    'i8042.dumbkbd',
    '8250.nr_uarts=1',
    'random.trust_cpu=on',
    `isola.hostname=${vm.hostname}`,
  ];
  if (vm.accel === 'tcg') {
    // Spectre/Meltdown mitigations protect guest processes from each other inside one sandbox
    // (which holds one tenant's workload); under TCG they only cost time. Kept on under KVM.
    words.push('mitigations=off');
  }
  if (vm.tscKhz && !vm.probe) {
    // The guest's TSC is the host's under TCG: constant and monotonic, so no watchdog needed.
    words.push(`tsc_early_khz=${Math.round(vm.tscKhz)}`, 'tsc=reliable');
  }
  if (vm.probe) words.push('isola.probe=1');
  if (vm.network) {
    words.push(`isola.net=${vm.network.address},${vm.network.gateway}`);
    if (vm.network.dns.length) words.push(`isola.dns=${vm.network.dns.join(',')}`);
  }
  if (vm.kernelArgs) words.push(...vm.kernelArgs);
  return words.join(' ');
}

export function buildQemuArgs(vm: VmDescription): string[] {
  const args: string[] = [
    '-name',
    `isola-${vm.id}`,
    '-M',
    'microvm,pit=on,pic=on,rtc=on,isa-serial=on,memory-backend=ram',
    // Guest RAM in a memfd: QEMU asks for transparent huge pages on anonymous guest RAM, and a
    // guest that touches scattered 4 KiB pages then costs whole 2 MiB pages on the host (190 MiB
    // of a 256 MiB guest after boot, measured). shmem is not huge-paged by default, gives pages
    // back on free page reporting (hole punching), and is what snapshot/restore will map.
    '-object',
    vm.memoryFile
      ? `memory-backend-file,id=ram,size=${vm.memoryMiB}M,mem-path=${escapeOpt(vm.memoryFile.path)},share=${vm.memoryFile.share ? 'on' : 'off'}`
      : `memory-backend-memfd,id=ram,size=${vm.memoryMiB}M,share=on`,
    ...(vm.accel === 'kvm'
      ? ['-accel', 'kvm', '-cpu', 'host']
      : ['-accel', `tcg,tb-size=${vm.tcgTbSizeMiB}`, '-cpu', 'max']),
    '-m',
    `${vm.memoryMiB}M`,
    '-smp',
    String(vm.vcpus),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-chardev',
    `socket,id=console,path=${escapeOpt(vm.consoleSocket)},server=on,wait=off`,
    '-serial',
    'chardev:console',
    '-kernel',
    vm.kernel,
    '-initrd',
    vm.initrd,
    '-append',
    kernelCmdline(vm),
    '-qmp',
    `unix:${vm.qmpSocket},server=on,wait=off`,
  ];
  if (vm.seccomp) {
    args.push(
      '-sandbox',
      'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    );
  }
  if (!vm.probe) {
    const drives: DriveSpec[] = [
      { id: 'rootfs', path: vm.rootfs, readonly: true, format: 'raw' },
      ...vm.drives,
    ];
    for (const d of drives) {
      const opts = [
        `id=${d.id}`,
        `file=${escapeOpt(d.path)}`,
        `format=${d.format ?? 'raw'}`,
        'if=none',
      ];
      // Read-only images skip flushes; writable disks keep QEMU's safe default cache mode.
      if (d.readonly) opts.push('readonly=on', 'cache=unsafe');
      if (vm.diskLimits && d.id !== 'rootfs') {
        const { bytesPerS: b, opsPerS: o } = vm.diskLimits;
        opts.push(
          `throttling.bps-total=${b}`,
          `throttling.bps-total-max=${b * DISK_BURST_FACTOR}`,
          `throttling.bps-total-max-length=${DISK_BURST_SECONDS}`,
          `throttling.iops-total=${o}`,
          `throttling.iops-total-max=${o * DISK_BURST_FACTOR}`,
          `throttling.iops-total-max-length=${DISK_BURST_SECONDS}`,
        );
      }
      args.push('-drive', opts.join(','), '-device', `virtio-blk-device,drive=${d.id}`);
    }
    args.push(
      '-device',
      // Port 0 is reserved (console compatibility): one more than the named ports.
      `virtio-serial-device,max_ports=${vm.functionSocket ? 4 : 3}`,
      '-chardev',
      `socket,id=agent,path=${escapeOpt(vm.agentSocket)},server=on,wait=off`,
      '-device',
      `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
      '-chardev',
      `socket,id=ctl,path=${escapeOpt(vm.controlSocket)},server=on,wait=off`,
      '-device',
      `virtserialport,chardev=ctl,name=${CONTROL_PORT_NAME}`,
      ...(vm.functionSocket
        ? [
            '-chardev',
            `socket,id=fn,path=${escapeOpt(vm.functionSocket)},server=on,wait=off`,
            '-device',
            `virtserialport,chardev=fn,name=${FUNCTION_PORT_NAME}`,
          ]
        : []),
      // Free page reporting: the guest hands pages it no longer uses back to the host. Not with
      // RAM in a file: QEMU 7.2 gives pages back by punching holes in the file even when it is
      // mapped private, which would zero pages of the snapshot every clone maps (seen: clones
      // dying after one clone freed much memory). Snapshot sources and clones share one device
      // layout, so neither has it.
      '-device',
      vm.memoryFile ? 'virtio-balloon-device' : 'virtio-balloon-device,free-page-reporting=on',
    );
    if (vm.network) {
      args.push(
        '-netdev',
        `tap,id=net0,fd=${vm.network.tapFd}`,
        '-device',
        `virtio-net-device,netdev=net0,mac=${vm.network.mac}`,
      );
    }
  }
  if (vm.paused) args.push('-S');
  if (vm.incoming) args.push('-incoming', 'defer');
  return args;
}

/** QEMU option values escape a comma by doubling it. */
export function escapeOpt(s: string): string {
  return s.replaceAll(',', ',,');
}
