// isola-runtime delete [--force] ID: remove a stopped container (--force: stop it first, also
// when its monitor or VM was killed), run the poststop hooks.
import { rmSync } from 'node:fs';
import { IsolaError } from '../../errors.js';
import { reap } from '../../sandbox/reaper.js';
import { sameProcessAlive } from '../../vmm/qemu-process.js';
import { type Ctx, logLine, verbArgs } from '../cli.js';
import { controlCall } from '../control.js';
import { runHooks } from '../hooks.js';
import { checkTransition, ociState, validateId } from '../state.js';
import { loadBundle } from './create.js';

/** Time for a killed container's monitor to tear its VM down and exit. */
const DELETE_WAIT_MS = 15_000;

export async function deleteContainer(ctx: Ctx, id: string, force: boolean): Promise<void> {
  const s = ctx.store.read(id);
  if (!force) checkTransition(id, s.status, 'delete');
  if (s.status !== 'stopped' && s.pid > 0) {
    await controlCall(s.control, { op: 'kill', signal: 'SIGKILL' }).catch(() => {
      try {
        process.kill(s.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    });
    const deadline = Date.now() + DELETE_WAIT_MS;
    while (Date.now() < deadline && sameProcessAlive(s.pid, s.pidStartTime))
      await new Promise((r) => setTimeout(r, 20));
    if (sameProcessAlive(s.pid, s.pidStartTime)) process.kill(s.pid, 'SIGKILL');
  }
  // Whatever a killed monitor left (QEMU, cgroups, sockets) goes with the reaper.
  await reap();
  rmSync(s.control, { force: true });
  try {
    await runHooks(loadBundle(s.bundle).hooks, 'poststop', ociState({ ...s, status: 'stopped' }));
  } catch (err) {
    logLine(ctx.g, 'warning', `poststop hook: ${(err as Error).message}`);
  }
  ctx.store.remove(id);
}

export async function del(ctx: Ctx, argv: string[]): Promise<number> {
  const { values, positionals } = verbArgs(argv, { force: { type: 'boolean', short: 'f' } });
  const id = validateId(positionals[0]);
  try {
    await deleteContainer(ctx, id, values.force === true);
  } catch (err) {
    // Like runc: --force on a container that does not exist (or never got its state written)
    // removes whatever folder there is and succeeds.
    if (values.force === true && err instanceof IsolaError && err.code === 'E_OCI_NOT_FOUND') {
      ctx.store.remove(id);
      return 0;
    }
    throw err;
  }
  return 0;
}
