// The function runtime contract, shared by the host (platform/instance.ts) and the in-guest
// Node.js runtime (guest/fn-runtime.ts): where the code is, which port the runtime serves, the
// shape of an invocation's reply, and how output lines carry their request id.
//
// Node.js functions: the runtime loads the handler and serves HTTP on RUNTIME_PORT of the
// guest's loopback; the host reaches it through the agent's `connect` stream.
//   GET  /_isola/health   200 {ready:true} | 500 {error}   (the handler loaded, or why not)
//   POST /_isola/invoke   JSON event in (headers: request id, deadline) -> InvokeReply
// Image functions: the image's own server on IMAGE_PORT; requests pass through unchanged.

export const RUNTIME_PORT = 9001;
export const IMAGE_PORT = 8080;
/** Where the code bundle's block device is mounted in the guest (read-only). */
export const TASK_DIR = '/var/task';
export const RUNTIME_SCRIPT = '/opt/isola/agent/src/guest/fn-runtime.js';

export const HEADER_REQUEST_ID = 'x-isola-request-id';
/** Epoch milliseconds by which the invocation must end (the handler's context sees it). */
export const HEADER_DEADLINE = 'x-isola-deadline-ms';

export interface HandlerError {
  type: string;
  message: string;
  stack?: string;
}

export type InvokeReply =
  | { ok: true; result: unknown; durationMs: number }
  | { ok: false; error: HandlerError; durationMs: number };

/** Output of the runtime: one JSON line per write, tagged with the request it belongs to. */
export interface OutputLine {
  /** Request id, or null for output outside any invocation (module load, timers). */
  r: string | null;
  /** 'o' stdout, 'e' stderr. */
  s: 'o' | 'e';
  t: string;
}

export function encodeOutputLine(line: OutputLine): string {
  return `${JSON.stringify(line)}\n`;
}

/**
 * Parse one line of runtime output. Lines that are not ours (a child process, or Node's own
 * fatal error text written straight to the file descriptor) come back as raw text.
 */
export function decodeOutputLine(text: string): OutputLine | { raw: string } {
  if (text.startsWith('{"r":')) {
    try {
      const v = JSON.parse(text) as OutputLine;
      if ((v.r === null || typeof v.r === 'string') && typeof v.t === 'string') return v;
    } catch {
      // not ours after all
    }
  }
  return { raw: text };
}

/** Heap for the runtime's V8: guest memory less room for the kernel, the agent and buffers. */
export function heapLimitMiB(memoryMiB: number): number {
  return Math.max(32, Math.floor(memoryMiB - 112));
}
