// OCI hooks from config.json, run on the host with the container's state JSON on stdin, as the
// runtime spec describes. A failing prestart/createRuntime/createContainer/startContainer hook
// fails the operation; poststart and poststop failures are only logged (spec: "MUST warn").

import { spawn } from 'node:child_process';
import { IsolaError } from '../errors.js';
import type { OciHooks } from './config.js';

/** Hooks without their own timeout get this long before they are killed. */
export const DEFAULT_HOOK_TIMEOUT_MS = 30_000;

export type HookName = keyof OciHooks;

export async function runHooks(
  hooks: OciHooks | undefined,
  name: HookName,
  state: Record<string, unknown>,
): Promise<void> {
  for (const h of hooks?.[name] ?? []) {
    const [argv0, ...args] = h.args && h.args.length > 0 ? h.args : [h.path];
    const timeout = (h.timeout ?? DEFAULT_HOOK_TIMEOUT_MS / 1000) * 1000;
    await new Promise<void>((resolve, reject) => {
      const child = spawn(h.path, args, {
        argv0,
        env: Object.fromEntries(
          (h.env ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
        ),
        stdio: ['pipe', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new IsolaError('E_OCI_HOOK', `${name} hook ${h.path}: ${err.message}`));
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else
          reject(
            new IsolaError(
              'E_OCI_HOOK',
              `${name} hook ${h.path} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`,
            ),
          );
      });
      child.stdin!.on('error', () => {});
      child.stdin!.end(JSON.stringify(state));
    });
  }
}
