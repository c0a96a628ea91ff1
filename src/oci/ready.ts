// The readiness pipe between a verb and the long-lived process it starts (the container monitor
// for `create`, the exec relay for `exec --detach`): the child writes one line on fd 3, READY or
// ERROR <json of an IsolaError>, then closes it; the verb turns an ERROR into the same typed error.

import type { ChildProcess } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import { IsolaError, isErrorCode } from '../errors.js';

export const READY_FD = 3;

/** Child side: report once, then close the pipe. */
export function reportReady(error?: IsolaError): void {
  try {
    writeSync(READY_FD, error ? `ERROR ${JSON.stringify(error.toJSON())}\n` : 'READY\n');
    closeSync(READY_FD);
  } catch {
    // the parent is gone; nothing to tell
  }
}

/** Parent side: wait for the report; throws the child's error (or a generic one). */
export async function awaitReady(child: ChildProcess, what: string): Promise<void> {
  const line = await new Promise<string>((resolve) => {
    let buf = '';
    const pipe = child.stdio[READY_FD] as NodeJS.ReadableStream;
    pipe.setEncoding('utf8');
    pipe.on('data', (d: string) => {
      buf += d;
      if (buf.includes('\n')) resolve(buf.split('\n')[0]!);
    });
    pipe.on('end', () => resolve(buf.split('\n')[0] ?? ''));
    child.once('exit', () => setTimeout(() => resolve(buf.split('\n')[0] ?? ''), 50));
  });
  if (line === 'READY') return;
  let e: { code?: string; message?: string } = {};
  try {
    e = JSON.parse(line.replace(/^ERROR /, '')) as typeof e;
  } catch {
    e = { message: `${what} failed (${line || 'no report'})` };
  }
  throw new IsolaError(
    e.code && isErrorCode(e.code) ? e.code : 'E_INTERNAL',
    e.message ?? `${what} failed`,
  );
}

/** Let the parent exit without waiting for the child. */
export function detachReady(child: ChildProcess): void {
  (child.stdio[READY_FD] as unknown as { destroy(): void }).destroy();
  child.unref();
}
