import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IsolaError } from '../errors.js';
import { type SandboxAction, type SandboxState, canDo, nextState } from './lifecycle.js';

const STATES: SandboxState[] = [
  'created',
  'starting',
  'running',
  'stopping',
  'stopped',
  'failed',
  'destroyed',
];
const ACTIONS: SandboxAction[] = [
  'start',
  'booted',
  'bootFailed',
  'exec',
  'stop',
  'stopped',
  'destroy',
  'crashed',
];

/** The legal transitions, written out independently of the implementation's table. */
const LEGAL: Array<[SandboxState, SandboxAction, SandboxState]> = [
  ['created', 'start', 'starting'],
  ['starting', 'booted', 'running'],
  ['starting', 'bootFailed', 'failed'],
  ['starting', 'crashed', 'failed'],
  ['running', 'exec', 'running'],
  ['running', 'stop', 'stopping'],
  ['running', 'crashed', 'failed'],
  ['stopping', 'stopped', 'stopped'],
  ['stopping', 'crashed', 'stopped'],
  ['failed', 'stop', 'stopping'],
  ['created', 'stop', 'stopped'],
  ['stopped', 'stop', 'stopped'],
  ...STATES.map((s) => [s, 'destroy', 'destroyed'] as [SandboxState, SandboxAction, SandboxState]),
];

function expectInvalid(from: SandboxState, action: SandboxAction): void {
  assert.throws(
    () => nextState(from, action),
    (e: unknown) => {
      assert.ok(e instanceof IsolaError, `not an IsolaError: ${String(e)}`);
      assert.equal(e.code, 'E_SANDBOX_INVALID_STATE');
      assert.deepEqual(e.details, { state: from, action });
      assert.ok(e.message.includes(action) && e.message.includes(from), e.message);
      return true;
    },
    `${action} from ${from} should be invalid`,
  );
}

describe('nextState', () => {
  for (const [from, action, to] of LEGAL) {
    test(`${from} --${action}--> ${to}`, () => {
      assert.equal(nextState(from, action), to);
      assert.equal(canDo(from, action), true);
    });
  }

  test('every other (state, action) pair is E_SANDBOX_INVALID_STATE', () => {
    let illegal = 0;
    for (const from of STATES) {
      for (const action of ACTIONS) {
        if (LEGAL.some(([f, a]) => f === from && a === action)) continue;
        illegal++;
        expectInvalid(from, action);
        assert.equal(canDo(from, action), false);
      }
    }
    assert.equal(illegal, STATES.length * ACTIONS.length - LEGAL.length);
  });

  test('start twice is invalid', () => {
    const s = nextState('created', 'start');
    expectInvalid(s, 'start');
    expectInvalid(nextState(s, 'booted'), 'start');
  });

  test('exec only while running', () => {
    for (const s of [
      'created',
      'starting',
      'stopping',
      'stopped',
      'failed',
      'destroyed',
    ] as const) {
      expectInvalid(s, 'exec');
    }
  });

  test('booted is only legal from starting', () => {
    expectInvalid('created', 'booted');
    expectInvalid('running', 'booted');
    expectInvalid('failed', 'booted');
  });

  test('a destroyed sandbox can do nothing but destroy again', () => {
    for (const a of ACTIONS) {
      if (a === 'destroy') assert.equal(nextState('destroyed', a), 'destroyed');
      else expectInvalid('destroyed', a);
    }
  });

  test('destroy is idempotent from every state', () => {
    for (const s of STATES) {
      const once = nextState(s, 'destroy');
      assert.equal(once, 'destroyed');
      assert.equal(nextState(once, 'destroy'), 'destroyed');
    }
  });

  test('a full life: create, start, boot, exec, stop, destroy', () => {
    let s: SandboxState = 'created';
    for (const a of ['start', 'booted', 'exec', 'exec', 'stop', 'stopped', 'destroy'] as const)
      s = nextState(s, a);
    assert.equal(s, 'destroyed');
  });
});
