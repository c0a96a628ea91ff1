// Processes that stand for a container process on the host (the monitor for the container's
// init, the exec relay for an exec'd process) end the way that process ended: the same exit
// code, or death by the same signal, so a waiting parent (containerd's shim, conmon) sees
// exactly what runc would give it.

import os from 'node:os';

/** Signals these processes forward while they run; their handlers go before the re-raise. */
export const FORWARDED_SIGNALS = [
  'SIGTERM',
  'SIGINT',
  'SIGHUP',
  'SIGQUIT',
  'SIGUSR1',
  'SIGUSR2',
] as const;

export async function exitLike(st: {
  exitCode: number | null;
  signal: string | null;
}): Promise<never> {
  await new Promise<void>((r) =>
    process.stdout.write('', () => process.stderr.write('', () => r())),
  );
  const signals = os.constants.signals as Record<string, number>;
  // Stop/continue are not how a process ends; re-raising them would only suspend us.
  if (st.signal && st.signal in signals && st.signal !== 'SIGSTOP' && st.signal !== 'SIGCONT') {
    for (const s of FORWARDED_SIGNALS) process.removeAllListeners(s);
    process.kill(process.pid, st.signal as NodeJS.Signals);
    await new Promise((r) => setTimeout(r, 100));
    process.exit(128 + signals[st.signal]!);
  }
  process.exit(st.exitCode ?? 1);
}
