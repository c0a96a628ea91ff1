// isola sandbox run [--memory MiB] [--vcpus N] [--env K=V]... [--json] -- CMD [ARGS...]
// Boots a fresh micro-VM, runs CMD inside with stdin/stdout/stderr attached, exits with its exit
// code (128+N when a signal ended it, as shells do) and always destroys the VM.
// Example: isola sandbox run --memory 512 -- sh -c 'uname -r; cat /proc/meminfo | head -1'
import os from 'node:os';
import type { Signal } from '../../protocol/messages.js';
import { MicroVmDriver } from '../../sandbox/drivers/microvm.js';
import type { Sandbox } from '../../sandbox/sandbox.js';
import { forwardStdin } from '../../sandbox/stdin.js';
import { ms, parseCli, reportError, usageError } from '../output.js';

export async function sandboxRun(argv: string[]): Promise<number> {
  const dd = argv.indexOf('--');
  const { values } = parseCli({
    args: dd >= 0 ? argv.slice(0, dd) : argv,
    options: {
      memory: { type: 'string' },
      vcpus: { type: 'string' },
      env: { type: 'string', multiple: true },
      json: { type: 'boolean', default: false },
      verbose: { type: 'boolean', short: 'v', default: false },
    },
    strict: true,
  });
  const cmd = dd >= 0 ? argv.slice(dd + 1) : [];
  try {
    if (cmd.length === 0)
      throw usageError('missing command: isola sandbox run [options] -- CMD [ARGS...]');
    const env: Record<string, string> = {};
    for (const kv of values.env ?? []) {
      const i = kv.indexOf('=');
      if (i <= 0) throw usageError(`--env wants K=V, got "${kv}"`);
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    const num = (s: string | undefined, name: string) => {
      if (s === undefined) return undefined;
      if (!/^-?\d+$/.test(s)) throw usageError(`--${name} wants an integer, got "${s}"`);
      return Number(s);
    };
    const sandbox = await new MicroVmDriver().create({
      memoryMiB: num(values.memory, 'memory'),
      vcpus: num(values.vcpus, 'vcpus'),
      env,
    });
    return await runIn(sandbox, cmd, values.verbose === true);
  } catch (err) {
    return reportError(err, values.json === true);
  }
}

async function runIn(sandbox: Sandbox, cmd: string[], verbose: boolean): Promise<number> {
  const forward = (sig: NodeJS.Signals) => {
    void proc?.signal(sig as Signal).catch(() => undefined);
  };
  let proc: Awaited<ReturnType<Sandbox['exec']>> | null = null;
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  try {
    await sandbox.start();
    if (verbose && sandbox.boot) {
      const b = sandbox.boot;
      process.stderr.write(
        `[isola] ${sandbox.id} booted (${b.accel}) in ${ms(b.totalMs)}: qemu ${ms(b.qemuStartMs)}, kernel ${ms(b.kernelToInitMs)}, agent ${ms(b.agentStartMs)}, retries ${b.retries}\n`,
      );
    } else if (verbose && sandbox.restore) {
      const r = sandbox.restore;
      process.stderr.write(
        `[isola] ${sandbox.id} resumed from a snapshot in ${ms(r.totalMs)}: vmm ${ms(r.spawnMs)}, load ${ms(r.loadMs)}, resume ${ms(r.resumeMs)}\n`,
      );
    }
    const p = await sandbox.exec(
      { argv: cmd, stdin: true },
      { onStdout: (d) => process.stdout.write(d), onStderr: (d) => process.stderr.write(d) },
    );
    proc = p;
    const stop = forwardStdin(process.stdin, p);
    const status = await p.exited;
    stop();
    process.stdin.destroy();
    if (status.exitCode !== null) return status.exitCode;
    const signo = status.signal
      ? (os.constants.signals as Record<string, number>)[status.signal]
      : undefined;
    return 128 + (signo ?? 0);
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
    await sandbox.destroy();
  }
}
