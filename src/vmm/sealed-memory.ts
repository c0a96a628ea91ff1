// Snapshot memory that clones cannot write: native/isola-memfd.c copies a snapshot's memory file
// into a memfd sealed against every change and holds it; each clone's jail opens it through
// /proc/<holder>/fd/<n> and hands it to QEMU as fd 4 (QEMU maps /proc/self/fd/4 private,
// copy-on-write). QEMU 7.2 opens a memory file read-write even for a private mapping, so without
// the seal a compromised QEMU could change the memory every later clone of the snapshot starts
// from. One holder per snapshot file and process, kept while clones are being made and released
// when the snapshot goes or has not been used for HOLD_IDLE_MS.

import { type ChildProcess, spawn } from 'node:child_process';
import { nativeHelper } from '../assets/native.js';
import { IsolaError } from '../errors.js';
import { envNumber } from '../util/env.js';

/** What the VMM opens: the descriptor the jail passes on (JailPlan.memfdFrom). */
export const SEALED_MEMORY_PATH = '/proc/self/fd/4';
/** A holder nobody restored from for this long lets its memory go (the next restore reloads). */
export const HOLD_IDLE_MS = envNumber('ISOLA_SNAPSHOT_HOLD_S', 600) * 1000;

interface Holder {
  child: ChildProcess;
  /** /proc/<pid>/fd/<n>: what the jail opens. */
  source: string;
  lastUse: number;
}

const holders = new Map<string, Promise<Holder>>();
let sweeper: NodeJS.Timeout | null = null;

/** The sealed copy of `file` (made on first use); the path the jail opens. */
export async function sealedMemory(file: string): Promise<string> {
  let p = holders.get(file);
  if (!p) {
    p = startHolder(file);
    holders.set(file, p);
    p.catch(() => holders.delete(file));
    sweeper ??= setInterval(sweep, Math.max(1000, HOLD_IDLE_MS / 4)).unref();
  }
  const h = await p;
  if (h.child.exitCode !== null || h.child.signalCode !== null) {
    holders.delete(file);
    return sealedMemory(file);
  }
  h.lastUse = Date.now();
  return h.source;
}

/** Let the sealed copy of `file` go (its snapshot was removed); running clones keep their maps. */
export async function releaseSealedMemory(file: string): Promise<void> {
  const p = holders.get(file);
  if (!p) return;
  holders.delete(file);
  const h = await p.catch(() => null);
  h?.child.stdin?.end();
}

function sweep(): void {
  const now = Date.now();
  for (const [file, p] of holders) {
    void p.then(
      (h) => {
        if (now - h.lastUse > HOLD_IDLE_MS && holders.get(file) === p)
          void releaseSealedMemory(file);
      },
      () => {},
    );
  }
}

function startHolder(file: string): Promise<Holder> {
  const bin = nativeHelper('isola-memfd');
  if (!bin) {
    return Promise.reject(
      new IsolaError('E_JAIL', 'the sealed-memory helper (native/isola-memfd.c) cannot be built'),
    );
  }
  return new Promise((resolve, reject) => {
    const child = spawn(bin, [file], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /ISOLA_MEMFD (\d+)/.exec(out);
      if (m) {
        // The holder must not keep this process alive; it ends when our end of its stdin does.
        child.unref();
        (child.stdin as unknown as { unref?: () => void }).unref?.();
        (child.stdout as unknown as { unref?: () => void }).unref?.();
        (child.stderr as unknown as { unref?: () => void }).unref?.();
        resolve({ child, source: `/proc/${child.pid}/fd/${m[1]}`, lastUse: Date.now() });
      }
    });
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.stdin!.on('error', () => {});
    child.once('error', (e) => reject(new IsolaError('E_SNAPSHOT', `isola-memfd: ${e.message}`)));
    child.once('exit', (code) =>
      reject(new IsolaError('E_SNAPSHOT', `sealing ${file} failed (${code}): ${err.trim()}`)),
    );
  });
}
