// Every VMM timeout in one place, with the reason for its value.
import type { Accel } from './qemu-args.js';

/**
 * Boot watchdog per attempt: spawn until the agent answers. A good TCG boot takes 3-6 s here
 * (kernel ~1.5 s, Node.js start ~2-4 s); a hung boot never finishes. 30 s leaves room for two
 * or three boots sharing two cores (the test suite and the benchmark do that) while still
 * retrying a hang quickly. KVM boots take well under a second.
 */
export function bootTimeoutMs(accel: Accel): number {
  return accel === 'kvm' ? 10_000 : 30_000;
}

/**
 * First watchdog stage: CPUs released until the initramfs init runs. The kernel gets there in
 * ~2 s under TCG here (uptime ~1.1 s at init); the hangs seen here happen in this stage, so
 * 12 s kills them long before the whole boot budget is spent.
 */
export function kernelBootTimeoutMs(accel: Accel): number {
  return accel === 'kvm' ? 5_000 : 12_000;
}

/** QEMU creating its QMP socket and answering the greeting (no guest code involved). */
export const QMP_CONNECT_TIMEOUT_MS = 10_000;
/** Graceful guest shutdown (agent `shutdown`, guest powers off) before SIGKILL. */
export const STOP_TIMEOUT_MS = 5_000;
/**
 * Accelerator probe: the probe guest (initramfs only, powers off at once) boots in ~1 s under
 * KVM; a KVM that cannot run a normal guest (nested paravirtual KVM here) crawls or errors. 15 s
 * tells the two apart without waiting on a crawling boot.
 */
export const ACCEL_PROBE_TIMEOUT_MS = 15_000;
