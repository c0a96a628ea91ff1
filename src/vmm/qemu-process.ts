// Supervision of one QEMU process: spawn it inside its cgroups, with a parent-death signal so it
// cannot outlive a crashed host process, follow the guest console (the emulated UART, on a unix
// socket) line by line, and report its exit. Teardown is idempotent.

import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { IsolaError } from '../errors.js';
import { connectUnix } from './qmp.js';

export const QEMU_BINARY = process.env.ISOLA_QEMU ?? 'qemu-system-x86_64';
/** Console lines kept for diagnostics (boot failures quote the tail). */
const CONSOLE_LINES_KEPT = 200;
/** Exit code the launcher uses when it cannot join the sandbox cgroup. */
const LAUNCHER_CGROUP_FAILED = 97;

/**
 * The launcher runs before QEMU: it moves itself into the cgroups (so QEMU starts confined), then
 * execs QEMU through setpriv so that QEMU gets SIGKILL when its parent (this process) dies.
 * ISOLA_PDEATHSIG=0 turns the latter off (the reaper test uses it to show the reaper alone
 * suffices).
 */
const LAUNCHER = [
  // QEMU must outlive a broken console pipe (the reaper, not SIGPIPE, decides its fate).
  "trap '' PIPE",
  'for f in $ISOLA_CGROUP_PROCS; do echo $$ > "$f" || exit ' + LAUNCHER_CGROUP_FAILED + '; done',
  'if [ "${ISOLA_PDEATHSIG:-1}" != 0 ] && command -v setpriv >/dev/null 2>&1; then exec setpriv --pdeathsig SIGKILL -- "$@"; fi',
  'exec "$@"',
].join('\n');

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class QemuProcess extends EventEmitter {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly console: string[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<QemuExit>;
  private exitInfo: QemuExit | null = null;

  private constructor(child: ChildProcess) {
    super();
    this.child = child;
    this.pid = child.pid!;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
        this.emit('exit', this.exitInfo);
      });
    });
    lineReader(child.stderr!, (line) => {
      this.stderr.push(line);
      if (this.stderr.length > CONSOLE_LINES_KEPT) this.stderr.shift();
    });
  }

  static async spawn(args: string[], opts: { cgroupProcs: string[] }): Promise<QemuProcess> {
    const child = spawn('/bin/sh', ['-c', LAUNCHER, 'isola-launch', QEMU_BINARY, ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ISOLA_CGROUP_PROCS: opts.cgroupProcs.join(' ') },
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err) =>
        reject(
          new IsolaError('E_QEMU_SPAWN', `cannot start ${QEMU_BINARY}: ${err.message}`, {
            cause: err,
          }),
        ),
      );
    });
    const proc = new QemuProcess(child);
    return proc;
  }

  /** Connect to the console socket and follow the guest console line by line. */
  async attachConsole(socketPath: string, timeoutMs: number): Promise<void> {
    const sock = await connectUnix(socketPath, timeoutMs);
    this.consoleSocket = sock;
    sock.on('error', () => {});
    lineReader(sock, (line) => {
      this.console.push(line);
      if (this.console.length > CONSOLE_LINES_KEPT) this.console.shift();
      this.emit('console', line);
    });
  }

  private consoleSocket: Socket | null = null;

  get running(): boolean {
    return this.exitInfo === null;
  }

  get exit(): QemuExit | null {
    return this.exitInfo;
  }

  /** Wait for a console line matching `re`, or reject when QEMU exits or the time is up. */
  waitConsole(re: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const onLine = (line: string) => {
        if (re.test(line)) finish(() => resolve(line));
      };
      const onExit = () => finish(() => reject(this.exitError()));
      const timer = setTimeout(() => finish(() => reject(new Error('timeout'))), timeoutMs);
      const finish = (f: () => void) => {
        clearTimeout(timer);
        this.off('console', onLine);
        this.off('exit', onExit);
        f();
      };
      this.on('console', onLine);
      this.on('exit', onExit);
      if (!this.running) onExit();
    });
  }

  exitError(): IsolaError {
    const e = this.exitInfo;
    const why = e?.code === LAUNCHER_CGROUP_FAILED ? ' (could not join the sandbox cgroup)' : '';
    return new IsolaError(
      'E_QEMU_EXITED',
      `QEMU exited (code ${e?.code ?? '-'}, signal ${e?.signal ?? '-'})${why}: ${this.stderr.slice(-5).join(' | ')}`,
      { details: { consoleTail: this.console.slice(-20), stderrTail: this.stderr.slice(-20) } },
    );
  }

  /** SIGKILL and wait for the exit; idempotent. */
  async kill(): Promise<void> {
    if (this.running) this.child.kill('SIGKILL');
    await this.exited;
    this.consoleSocket?.destroy();
  }
}

function lineReader(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (d: string) => {
    buf += d;
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      onLine(buf.slice(0, nl).replace(/\r$/, ''));
      buf = buf.slice(nl + 1);
      nl = buf.indexOf('\n');
    }
    if (buf.length > 64 * 1024) {
      onLine(buf);
      buf = '';
    }
  });
}

/** Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), or null. */
export function processStartTime(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[19]);
  } catch {
    return null;
  }
}

/** True when `pid` runs (not a zombie) and is the same process that started at `startTime`. */
export function sameProcessAlive(pid: number, startTime: number | null): boolean {
  if (!existsSync(`/proc/${pid}`)) return false;
  let state = '';
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '';
  } catch {
    return false;
  }
  if (state === 'Z' || state === 'X') return false;
  const now = processStartTime(pid);
  return now !== null && (startTime === null || now === startTime);
}
