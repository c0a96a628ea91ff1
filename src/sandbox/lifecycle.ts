// The sandbox lifecycle as an explicit state machine (pure; lifecycle.test.ts). Every driver
// moves through the same states, and an action in the wrong state is a typed error rather than
// undefined behaviour.
//
//   created --start--> starting --(booted)--> running --stop--> stopping --> stopped
//                          \--(boot failed)--> failed
//   destroy: from any state to destroyed (idempotent); exec/info/files: only in running.

import { IsolaError } from '../errors.js';

export type SandboxState =
  | 'created'
  | 'starting'
  | 'running'
  | 'stopping'
  | 'stopped'
  | 'failed'
  | 'destroyed';
export type SandboxAction =
  | 'start'
  | 'booted'
  | 'bootFailed'
  | 'exec'
  | 'stop'
  | 'stopped'
  | 'destroy'
  | 'crashed';

const TABLE: Record<SandboxAction, Partial<Record<SandboxState, SandboxState>>> = {
  start: { created: 'starting' },
  booted: { starting: 'running' },
  bootFailed: { starting: 'failed' },
  exec: { running: 'running' },
  stop: { running: 'stopping', failed: 'stopping', created: 'stopped', stopped: 'stopped' },
  stopped: { stopping: 'stopped' },
  crashed: { running: 'failed', stopping: 'stopped', starting: 'failed' },
  destroy: {
    created: 'destroyed',
    starting: 'destroyed',
    running: 'destroyed',
    stopping: 'destroyed',
    stopped: 'destroyed',
    failed: 'destroyed',
    destroyed: 'destroyed',
  },
};

/** The state after `action`, or an E_SANDBOX_INVALID_STATE error. */
export function nextState(from: SandboxState, action: SandboxAction): SandboxState {
  const to = TABLE[action][from];
  if (to === undefined) {
    throw new IsolaError('E_SANDBOX_INVALID_STATE', `cannot ${action} a sandbox that is ${from}`, {
      details: { state: from, action },
    });
  }
  return to;
}

export function canDo(from: SandboxState, action: SandboxAction): boolean {
  return TABLE[action][from] !== undefined;
}
