// Supervision of one QEMU process: spawn it jailed (vmm/jail.ts) inside its cgroups, with a
// parent-death signal so it cannot outlive a crashed host process, follow the guest console (the
// emulated UART, on a unix socket) line by line, and report its exit. Teardown is idempotent.

import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { constants, accessSync, existsSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import path from 'node:path';
import { nativeHelper } from '../assets/native.js';
import { IsolaError } from '../errors.js';
import { type JailPlan, jailArgs } from './jail.js';
import { connectUnix } from './qmp.js';

export const QEMU_BINARY = process.env.ISOLA_QEMU ?? 'qemu-system-x86_64';
/** Console lines kept for diagnostics (boot failures quote the tail). */
const CONSOLE_LINES_KEPT = 200;
/** After SIGKILL to QEMU, time for the jail helper to reap it and exit before it is killed too. */
const KILL_GRACE_MS = 2_000;
/** Exit codes of isola-jail itself (native/isola-jail.c). */
const JAIL_CGROUP_FAILED = 97;
const JAIL_SETUP_FAILED = 99;
/** The helper reports QEMU's pid within milliseconds; this only guards against a stuck fork. */
const PID_REPORT_TIMEOUT_MS = 10_000;

function jailExitReason(code: number | null): string {
  if (code === JAIL_CGROUP_FAILED) return ' (could not join the sandbox cgroup)';
  if (code === JAIL_SETUP_FAILED) return ' (the jail could not be set up)';
  return '';
}

let qemuPath: string | null = null;

/** QEMU's absolute path ($ISOLA_QEMU or the first on $PATH): the jail execs it directly. */
export function qemuBinaryPath(): string {
  if (qemuPath) return qemuPath;
  if (QEMU_BINARY.includes('/')) {
    qemuPath = path.resolve(QEMU_BINARY);
    return qemuPath;
  }
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = path.join(dir || '.', QEMU_BINARY);
    try {
      accessSync(p, constants.X_OK);
      qemuPath = p;
      return p;
    } catch {
      // next
    }
  }
  throw new IsolaError('E_QEMU_NOT_FOUND', `${QEMU_BINARY} is not on PATH; run scripts/setup.sh`);
}

export interface SpawnOptions {
  cgroupProcs: string[];
  /** Confinement (vmm/jail.ts); null runs QEMU unconfined but for its cgroups. */
  jail?: JailPlan | null;
}

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

  private constructor(child: ChildProcess, pid: number) {
    super();
    this.child = child;
    this.pid = pid;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
        this.emit('exit', this.exitInfo);
      });
    });
    lineReader(child.stderr!, (line) => {
      if (line.startsWith('ISOLA_QEMU_PID ')) return;
      this.stderr.push(line);
      if (this.stderr.length > CONSOLE_LINES_KEPT) this.stderr.shift();
    });
  }

  /**
   * Start QEMU through isola-jail, which stays its parent:
   *
   *   isola (node) -> isola-jail (root; cgroups, namespaces, minimal root) -> QEMU (PID 1 of its
   *   PID namespace, as the jail's user)
   *
   * Keeping the helper as QEMU's parent means a killed QEMU is always reaped at once, even when
   * isola itself died and the host's PID 1 does not reap orphans (seen on these machines); a
   * zombie would keep the cgroup busy. Parent-death signals chain isola -> helper -> QEMU;
   * ISOLA_PDEATHSIG=0 turns off the first link (the reaper test uses it to show the reaper alone
   * suffices).
   */
  static async spawn(args: string[], opts: SpawnOptions): Promise<QemuProcess> {
    const helper = nativeHelper('isola-jail');
    if (!helper) {
      throw new IsolaError(
        'E_JAIL',
        'the jail helper (native/isola-jail.c) cannot be built: is gcc installed? run scripts/setup.sh',
      );
    }
    const jail = opts.jail ?? null;
    const child = spawn(
      helper,
      [
        ...jailArgs(jail, {
          cgroupProcs: opts.cgroupProcs,
          pdeathsig: process.env.ISOLA_PDEATHSIG !== '0',
        }),
        '--',
        qemuBinaryPath(),
        ...args,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const pid = await new Promise<number>((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(
        () => fail(new Error(`no pid from the jail within ${PID_REPORT_TIMEOUT_MS} ms`)),
        PID_REPORT_TIMEOUT_MS,
      );
      const fail = (err: Error, code: 'E_JAIL' | 'E_QEMU_SPAWN' = 'E_QEMU_SPAWN') => {
        clearTimeout(timer);
        child.stderr!.off('data', onData);
        child.kill('SIGKILL');
        reject(
          new IsolaError(code, `cannot start ${QEMU_BINARY}: ${err.message} ${buf.trim()}`, {
            cause: err,
          }),
        );
      };
      const onData = (d: Buffer) => {
        buf += d.toString();
        const m = /ISOLA_QEMU_PID (\d+)/.exec(buf);
        if (m) {
          clearTimeout(timer);
          child.stderr!.off('data', onData);
          child.stderr!.unshift(Buffer.from(buf.slice(buf.indexOf('\n', m.index) + 1)));
          resolve(Number(m[1]));
        }
      };
      child.stderr!.on('data', onData);
      child.once('error', fail);
      child.once('exit', (code) =>
        fail(
          new Error(`the jail exited with ${code}${jailExitReason(code)}`),
          code === JAIL_SETUP_FAILED ? 'E_JAIL' : 'E_QEMU_SPAWN',
        ),
      );
    });
    child.removeAllListeners('exit');
    child.removeAllListeners('error');
    return new QemuProcess(child, pid);
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
    const why = jailExitReason(e?.code ?? null);
    return new IsolaError(
      'E_QEMU_EXITED',
      `QEMU exited (code ${e?.code ?? '-'}, signal ${e?.signal ?? '-'})${why}: ${this.stderr.slice(-5).join(' | ')}`,
      { details: { consoleTail: this.console.slice(-20), stderrTail: this.stderr.slice(-20) } },
    );
  }

  /** SIGKILL and wait for the exit; idempotent. */
  async kill(): Promise<void> {
    if (this.running) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      const timer = setTimeout(() => this.child.kill('SIGKILL'), KILL_GRACE_MS);
      await this.exited;
      clearTimeout(timer);
    }
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
