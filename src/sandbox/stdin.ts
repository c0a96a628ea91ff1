// Feeding a host stream into a sandbox process's stdin with backpressure: one chunk in flight,
// the stream paused until the agent has taken it; end (or an error) closes the process's stdin.
import type { Readable } from 'node:stream';
import type { SandboxProcess } from './sandbox.js';

/** Returns a function that stops forwarding (and leaves the stream alone). */
export function forwardStdin(
  stream: Readable,
  proc: Pick<SandboxProcess, 'writeStdin' | 'closeStdin'>,
): () => void {
  const onData = (d: Buffer) => {
    stream.pause();
    proc.writeStdin(d).then(
      () => stream.resume(),
      () => undefined,
    );
  };
  const onEnd = () => void proc.closeStdin().catch(() => undefined);
  stream.on('data', onData);
  stream.on('end', onEnd);
  stream.on('error', onEnd);
  return () => {
    stream.off('data', onData);
    stream.off('end', onEnd);
    stream.off('error', onEnd);
  };
}
