// The guest agent's core: decodes frames from the host, dispatches requests, streams process
// output back. Transport-agnostic (the caller feeds bytes in and gives a writer), so the same
// code runs inside the VM on the virtio-serial port and on the host over pipes for the fuzz
// tests. Malformed input produces error replies and never throws out of `onData`.

import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { readFile as fsReadFile, writeFile as fsWriteFile, open, stat } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import { FRAME_BODY_CHUNK, FrameDecoder, encodeFrame } from '../protocol/frame.js';
import {
  AGENT_VERSION,
  type Event,
  type ExecArgs,
  type ExitStatus,
  type GuestInfo,
  PROTOCOL_VERSION,
  type Request,
  type Response,
  parseRequest,
} from '../protocol/messages.js';

/** Environment every exec starts from; the request's env is laid over it. */
const BASE_ENV: Record<string, string> = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  TERM: 'xterm',
};
/** Exited processes kept so that a late `wait` still gets the status; oldest dropped first. */
const MAX_EXITED_KEPT = 1024;

interface ExecRecord {
  child: ChildProcess;
  status: ExitStatus | null;
  waiters: Array<(s: ExitStatus) => void>;
}

export type Writer = (frame: Buffer) => void;

export interface AgentOptions {
  write: Writer;
  /** Called for `shutdown` after the reply is written; inside the VM it powers off. */
  onShutdown?: () => void;
  /** Extra info fields (for tests). */
  now?: () => number;
  /**
   * Set on every process the agent starts. Inside the VM the agent protects itself from the OOM
   * killer with -1000, which children would inherit: a container whose cgroup ran out of memory
   * would then have no process the kernel may kill, and the guest would spin forever.
   */
  childOomScoreAdj?: number;
}

export class Agent {
  private readonly decoder = new FrameDecoder();
  private readonly execs = new Map<number, ExecRecord>();
  private readonly exitedOrder: number[] = [];
  private nextExecId = 1;
  private readonly conns = new Map<number, net.Socket>();
  private nextConnId = 1;
  /** Counters, exposed for tests and `info`. */
  readonly stats = { frames: 0, errors: 0 };

  constructor(private readonly opts: AgentOptions) {}

  /** Announce readiness (the host waits for this after boot). */
  sendReady(): void {
    this.emit({
      ev: 'ready',
      version: PROTOCOL_VERSION,
      agentVersion: AGENT_VERSION,
      bootUptimeSec: os.uptime(),
    });
  }

  onData(chunk: Buffer): void {
    for (const ev of this.decoder.push(chunk)) {
      if (ev.kind === 'error') {
        this.stats.errors++;
        this.reply({ id: null, ok: false, error: { code: ev.code, message: ev.message } });
        continue;
      }
      this.stats.frames++;
      const parsed = parseRequest(ev.frame.header);
      if (!parsed.ok) {
        this.stats.errors++;
        const code = parsed.error.startsWith('unknown op') ? 'E_UNKNOWN_OP' : 'E_AGENT_PROTOCOL';
        this.reply({ id: parsed.id, ok: false, error: { code, message: parsed.error } });
        continue;
      }
      const req = parsed.req;
      this.handle(req, ev.frame.body).then(
        (r) => this.reply({ id: req.id, ok: true, result: r.result }, r.body),
        (err: unknown) => {
          this.stats.errors++;
          this.reply({ id: req.id, ok: false, error: wireError(err) });
        },
      );
    }
  }

  /** Kill every process still running and drop every connection (transport loss in tests). */
  killAll(): void {
    for (const rec of this.execs.values()) {
      if (rec.status === null) rec.child.kill('SIGKILL');
    }
    for (const sock of this.conns.values()) sock.destroy();
  }

  private async handle(req: Request, body: Buffer): Promise<{ result?: unknown; body?: Buffer }> {
    switch (req.op) {
      case 'hello':
        if (req.version !== PROTOCOL_VERSION) {
          throw new AgentError(
            'E_AGENT_VERSION',
            `agent speaks protocol ${PROTOCOL_VERSION}, host ${req.version}`,
          );
        }
        return {
          result: { nonce: req.nonce, version: PROTOCOL_VERSION, agentVersion: AGENT_VERSION },
        };
      case 'info':
        return { result: info() };
      case 'exec':
        return { result: await this.exec(req) };
      case 'stdin': {
        const rec = this.lookup(req.execId);
        const stdin = rec.child.stdin;
        if (!stdin) throw new AgentError('E_AGENT_PROTOCOL', 'process was started without stdin');
        if (body.length > 0 && !stdin.destroyed) {
          await new Promise<void>((resolve) => stdin.write(body, () => resolve()));
        }
        if (req.eof) stdin.end();
        return {};
      }
      case 'signal': {
        const rec = this.lookup(req.execId);
        if (rec.status !== null) return { result: { delivered: false } };
        return { result: { delivered: rec.child.kill(req.signal) } };
      }
      case 'wait': {
        const rec = this.lookup(req.execId);
        const status = rec.status ?? (await new Promise<ExitStatus>((r) => rec.waiters.push(r)));
        return { result: status };
      }
      case 'readFile':
        return readChunk(req.path, req.offset ?? 0, req.length ?? FRAME_BODY_CHUNK);
      case 'writeFile':
        try {
          await fsWriteFile(req.path, body, {
            mode: req.mode ?? 0o644,
            flag: req.append ? 'a' : 'w',
          });
        } catch (err) {
          throw new AgentError('E_GUEST_IO', (err as Error).message);
        }
        return { result: { written: body.length } };
      case 'shutdown':
        setImmediate(() => this.opts.onShutdown?.());
        return {};
      case 'connect':
        return { result: await this.connect(req.port) };
      case 'send': {
        const sock = this.conns.get(req.connId);
        if (!sock) throw new AgentError('E_GUEST_CONNECT', `no connection ${req.connId}`);
        if (body.length > 0) {
          await new Promise<void>((resolve) => sock.write(body, () => resolve()));
        }
        if (req.eof) sock.end();
        return {};
      }
      case 'close':
        this.conns.get(req.connId)?.destroy();
        return {};
    }
  }

  private lookup(execId: number): ExecRecord {
    const rec = this.execs.get(execId);
    if (!rec) throw new AgentError('E_EXEC_NOT_FOUND', `no process with exec id ${execId}`);
    return rec;
  }

  private exec(args: ExecArgs): Promise<{ execId: number; pid: number }> {
    const execId = this.nextExecId++;
    const [file, ...rest] = args.argv;
    return new Promise((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = spawn(file!, rest, {
          env: { ...BASE_ENV, ...args.env },
          cwd: args.cwd ?? '/',
          uid: args.uid,
          gid: args.gid,
          stdio: [args.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
        });
      } catch (err) {
        reject(new AgentError('E_EXEC_FAILED', (err as Error).message));
        return;
      }
      const rec: ExecRecord = { child, status: null, waiters: [] };
      child.once('error', (err) => {
        if (rec.status === null && child.pid === undefined) {
          reject(new AgentError('E_EXEC_FAILED', `${file}: ${err.message}`));
        }
      });
      // A successful spawn has its pid at once (a failed one reports 'error' on the next tick):
      // answering now instead of on the 'spawn' event saves an event-loop turn per exec.
      if (child.pid !== undefined && this.opts.childOomScoreAdj !== undefined) {
        try {
          writeFileSync(`/proc/${child.pid}/oom_score_adj`, String(this.opts.childOomScoreAdj));
        } catch {
          // the process may already be gone
        }
      }
      if (child.pid !== undefined) {
        this.execs.set(execId, rec);
        resolve({ execId, pid: child.pid });
      }
      child.stdin?.on('error', () => {}); // EPIPE after the process exits is not an agent error
      for (const name of ['stdout', 'stderr'] as const) {
        child[name]?.on('data', (data: Buffer) => {
          for (let off = 0; off < data.length; off += FRAME_BODY_CHUNK) {
            this.emit({ ev: name, execId }, data.subarray(off, off + FRAME_BODY_CHUNK));
          }
        });
      }
      // 'close' comes after both output streams ended, so the exit event follows all output.
      child.once('close', (code, signal) => {
        if (child.pid === undefined) return;
        const status: ExitStatus = { exitCode: code, signal };
        rec.status = status;
        this.emit({ ev: 'exit', execId, ...status });
        for (const w of rec.waiters.splice(0)) w(status);
        this.exitedOrder.push(execId);
        while (this.exitedOrder.length > MAX_EXITED_KEPT)
          this.execs.delete(this.exitedOrder.shift()!);
      });
    });
  }

  /** Open a TCP connection to the guest's loopback and relay it as connection events. */
  private connect(port: number): Promise<{ connId: number }> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      sock.setNoDelay(true);
      const connId = this.nextConnId++;
      let open = false;
      sock.once('connect', () => {
        open = true;
        this.conns.set(connId, sock);
        resolve({ connId });
      });
      sock.on('data', (data: Buffer) => {
        for (let off = 0; off < data.length; off += FRAME_BODY_CHUNK) {
          this.emit({ ev: 'data', connId }, data.subarray(off, off + FRAME_BODY_CHUNK));
        }
      });
      sock.on('end', () => this.emit({ ev: 'end', connId }));
      let error: string | undefined;
      sock.on('error', (err) => {
        error = err.message;
        if (!open) reject(new AgentError('E_GUEST_CONNECT', `127.0.0.1:${port}: ${err.message}`));
      });
      sock.once('close', () => {
        if (!open) return;
        this.conns.delete(connId);
        this.emit(error === undefined ? { ev: 'closed', connId } : { ev: 'closed', connId, error });
      });
    });
  }

  private emit(ev: Event, body?: Buffer): void {
    this.opts.write(encodeFrame(ev, body));
  }

  private reply(res: Response, body?: Buffer): void {
    this.opts.write(encodeFrame(res, body));
  }
}

class AgentError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function wireError(err: unknown): { code: string; message: string } {
  if (err instanceof AgentError) return { code: err.code, message: err.message };
  return { code: 'E_INTERNAL', message: err instanceof Error ? err.message : String(err) };
}

async function readChunk(
  path: string,
  offset: number,
  length: number,
): Promise<{ result: unknown; body: Buffer }> {
  let fh: Awaited<ReturnType<typeof open>> | null = null;
  try {
    fh = await open(path, 'r');
    const st = await fh.stat();
    // Regular files are read at the offset. /proc and /sys files say size 0 but have content,
    // and devices and pipes cannot seek (/dev/zero never ends): for those, one bounded read.
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, st.isFile() ? offset : null);
    const size = st.isFile() && st.size > 0 ? st.size : null;
    const eof = size !== null ? offset + bytesRead >= size : bytesRead < length;
    return { result: { size, eof }, body: buf.subarray(0, bytesRead) };
  } catch (err) {
    throw new AgentError('E_GUEST_IO', (err as Error).message);
  } finally {
    await fh?.close();
  }
}

function info(): GuestInfo {
  return {
    agentVersion: AGENT_VERSION,
    protocolVersion: PROTOCOL_VERSION,
    kernelRelease: os.release(),
    kernelVersion: os.version(),
    hostname: os.hostname(),
    uptimeSec: os.uptime(),
    memTotalBytes: os.totalmem(),
    memFreeBytes: os.freemem(),
    cpus: os.cpus().length,
    nodeVersion: process.version,
  };
}
