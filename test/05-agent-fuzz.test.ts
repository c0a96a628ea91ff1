// Fuzzes the real guest agent program over its framed protocol: `node dist/src/guest/main.js
// --stdio` runs as a child process and gets well over 100,000 hostile frames on its stdin (random
// bytes, mutated headers, bit-flipped and truncated frames, oversized length claims, and some
// valid requests). It must answer every frame and every protocol error exactly once, stay up,
// and after a resync still serve real requests. No VM is booted.
//
// The agent runs on this host with the test's privileges (often root), so nothing it is fed may
// do harm: every byte written first goes through a shadow FrameDecoder that sees exactly what the
// agent's decoder will see, and frames that would decode to a `shutdown`, to an exec of anything
// but /bin/true or a non-existent program, or to file access outside a non-existent directory
// are dropped before they are written (see `classify`). The seed is printed; set
// ISOLA_FUZZ_SEED to replay a run.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/fuzz/rng.js';
import {
  FRAME_MAGIC,
  FRAME_PREFIX_BYTES,
  FrameDecoder,
  MAX_FRAME_BYTES,
  MAX_HEADER_BYTES,
  encodeFrame,
} from '../src/protocol/frame.js';
import {
  AGENT_VERSION,
  OPS,
  PROTOCOL_VERSION,
  SIGNALS,
  parseRequest,
} from '../src/protocol/messages.js';

const AGENT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/guest/main.js');
const SEED = Number(process.env.ISOLA_FUZZ_SEED ?? 0x150a1);
/** Fuzz until the agent's parser has received this many complete frames (plus all the garbage). */
const TARGET_FRAMES = 100_000;
/** Valid exec requests cost a process spawn each; keep them few on a 2-core machine. */
const EXEC_BUDGET = 150;
/** A directory that does not exist: the only place fuzzed file requests and programs may point. */
const NOWHERE = '/nonexistent-isola-fuzz';
/** Request ids the final checks use; the fuzzer never lets them through. */
const ID_INFO = 777_000_000_001;
const ID_EXEC = 777_000_000_002;
const ID_WAIT = 777_000_000_003;
const RESERVED_IDS = new Set<unknown>([ID_INFO, ID_EXEC, ID_WAIT]);
const SAFE_SIGNALS = SIGNALS.filter((s) => s !== 'SIGSTOP'); // a stopped /bin/true never exits

// ---------------------------------------------------------------------------------------------
// Deterministic randomness.

/** The fuzzers' generator (src/fuzz/rng.ts) with strings from a few awkward alphabets. */
class AgentRng extends Rng {
  str(maxLen: number): string {
    const n = this.int(maxLen + 1);
    const alphabets = [
      'abcdefghijklmnopqrstuvwxyz',
      '/.=\0\n"\\ IS{}[]:,',
      'é€😀\u2028\ud800\uffff',
    ];
    let s = '';
    for (let i = 0; i < n; i++) {
      const a = this.next() < 0.8 ? alphabets[0]! : this.pick(alphabets);
      s += a[this.int(a.length)];
    }
    return s;
  }
}

const rng = new AgentRng(SEED);

// ---------------------------------------------------------------------------------------------
// Frame construction. Headers are JSON text so the fuzzer can send what JSON.stringify cannot
// (deep nesting, broken JSON, headers over the limit).

const DEEP = '\u0000DEEP\u0000';

function rawFrame(
  headerText: string | Buffer,
  body: Buffer = Buffer.alloc(0),
  headerLen?: number,
): Buffer {
  const json = typeof headerText === 'string' ? Buffer.from(headerText, 'utf8') : headerText;
  const pre = Buffer.alloc(FRAME_PREFIX_BYTES + 4);
  pre.writeUInt16BE(FRAME_MAGIC, 0);
  pre.writeUInt32BE(4 + json.length + body.length, 2);
  pre.writeUInt32BE(headerLen ?? json.length, 6);
  return Buffer.concat([pre, json, body]);
}

function randomJson(depth: number): unknown {
  const r = rng.int(depth > 0 ? 10 : 7);
  switch (r) {
    case 0:
      return rng.int(2000) - 1000;
    case 1:
      return rng.pick([
        0,
        -0,
        1.5,
        -1,
        2 ** 31,
        2 ** 32,
        2 ** 53,
        2 ** 64,
        1e308,
        -1e308,
        Number.MAX_SAFE_INTEGER,
      ]);
    case 2:
      return rng.str(24);
    case 3:
      return rng.pick([
        '/',
        `${NOWHERE}/f`,
        'SIGTERM',
        'SIGSTOP',
        'exec',
        'shutdown',
        '',
        'A=B',
        'x\0y',
      ]);
    case 4:
      return rng.chance(0.5);
    case 5:
      return null;
    case 6:
      return rng.pick([...OPS, 'reboot', 'toString', '__proto__']);
    case 7:
    case 8: {
      const n = rng.int(5);
      return Array.from({ length: n }, () => randomJson(depth - 1));
    }
    default: {
      const o: Record<string, unknown> = {};
      for (let i = rng.int(5); i > 0; i--) {
        o[
          rng.pick([
            'id',
            'op',
            'argv',
            'env',
            'path',
            'execId',
            '__proto__',
            'constructor',
            rng.str(8),
          ])
        ] = randomJson(depth - 1);
      }
      return o;
    }
  }
}

let execsSeen = 0;

/** A well-formed request that is harmless if it gets through (and the seed for mutations). */
function safeRequest(): { header: Record<string, unknown>; body?: Buffer } {
  const id = rng.int(1_000_000);
  const execId = rng.int(execsSeen + 5);
  switch (rng.int(9)) {
    case 0:
      return { header: { id, op: 'info' } };
    case 1:
      return {
        header: {
          id,
          op: 'hello',
          version: rng.pick([PROTOCOL_VERSION, 0, 99]),
          nonce: rng.str(16),
        },
      };
    case 2: {
      const header: Record<string, unknown> = {
        id,
        op: 'exec',
        argv: rng.chance(0.5) ? ['/bin/true', rng.str(8)] : [`${NOWHERE}/x`],
      };
      if (rng.chance(0.3)) header.env = { ISOLA_FUZZ_A: rng.str(8) };
      if (rng.chance(0.3)) header.cwd = rng.pick(['/', '/tmp', NOWHERE]);
      if (rng.chance(0.3)) header.stdin = rng.chance(0.5);
      if (rng.chance(0.2)) header.uid = rng.pick([0, 65534, 0xfffffffe]);
      return { header };
    }
    case 3:
      return {
        header: { id, op: 'stdin', execId, eof: rng.chance(0.5) },
        body: rng.bytes(rng.int(64)),
      };
    case 4:
      return { header: { id, op: 'signal', execId, signal: rng.pick(SAFE_SIGNALS) } };
    case 5:
      return { header: { id, op: 'wait', execId } };
    case 6:
      return {
        header: {
          id,
          op: 'readFile',
          path: `${NOWHERE}/${rng.str(6)}`,
          offset: rng.int(10),
          length: rng.int(100),
        },
      };
    case 7:
      return {
        header: {
          id,
          op: 'writeFile',
          path: `${NOWHERE}/${rng.str(6)}`,
          mode: rng.int(0o10000),
          append: rng.chance(0.5),
        },
        body: rng.bytes(rng.int(64)),
      };
    default:
      return { header: { id, op: 'shutdown' } };
  }
}

/** (b) A frame from a valid request whose header was mutated. */
function mutatedHeaderFrame(): Buffer {
  const { header: h, body } = safeRequest();
  let header: unknown = h;
  let deep = false;
  for (let n = 1 + rng.int(3); n > 0; n--) {
    const keys = Object.keys(h);
    // Huge values (long strings, deep nesting) are rare so the stream stays a few tens of MiB.
    const r = rng.next();
    switch (r < 0.005 ? 'long' : r < 0.01 ? 'deep' : rng.int(8)) {
      case 'long':
        // A long string, up to just under and sometimes over the header limit.
        h[rng.pick([...keys, 'op', 'path', 'nonce'])] = rng
          .pick(['x', 'é', '\0', '"'])
          .repeat(rng.int(MAX_HEADER_BYTES / 2 + 2000));
        break;
      case 'deep':
        // Deep nesting, inserted as text (JSON.stringify itself would overflow the stack).
        h[rng.pick([...keys, 'op', 'argv', 'env', 'signal'])] = DEEP;
        deep = true;
        break;
      case 0:
        h[
          rng.pick([
            ...keys,
            'argv',
            'env',
            'cwd',
            'uid',
            'path',
            'signal',
            'execId',
            'length',
            'mode',
          ])
        ] = randomJson(3);
        break;
      case 1:
        delete h[rng.pick(keys)];
        break;
      case 2:
        h[rng.chance(0.5) ? rng.str(12) : rng.pick(['__proto__', 'constructor', 'prototype'])] =
          randomJson(2);
        break;
      case 3:
        h.op = rng.chance(0.5) ? rng.str(12) : rng.chance(0.5) ? rng.pick(OPS) : randomJson(2);
        break;
      case 4:
        h.id = rng.pick([
          -1,
          1.5,
          2 ** 53,
          2 ** 64,
          1e308,
          -0,
          '7',
          null,
          true,
          [],
          {},
          Number.MAX_SAFE_INTEGER,
        ]);
        break;
      case 5:
        header = randomJson(4);
        break;
      case 6:
        h.argv = rng.pick([
          [],
          [''],
          ['/bin/true\0'],
          [1],
          'x',
          Array.from({ length: 500 }, () => 'a'),
        ]);
        break;
      default:
        h.env = rng.pick([{ 'A=B': 'c' }, { '': 'x' }, { A: 1 }, [], 'A=b', { A: 'x\0' }]);
        break;
    }
  }
  let text = JSON.stringify(header) ?? 'undefined';
  if (deep) {
    const depth = 100 + rng.int(20_000);
    const nest = rng.chance(0.5)
      ? '['.repeat(depth) + ']'.repeat(depth)
      : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
    text = text.replace(JSON.stringify(DEEP), nest);
  }
  if (rng.chance(0.05)) {
    // Break the JSON text itself.
    const at = rng.int(text.length + 1);
    text = rng.chance(0.5)
      ? text.slice(0, at)
      : text.slice(0, at) + rng.pick(['"', '{', ']', '\\', ',', '\u0000']) + text.slice(at);
  }
  return rawFrame(text, body);
}

/** (c) A valid frame with flipped bits and/or truncated. */
function corruptedFrame(): Buffer {
  const { header, body } = safeRequest();
  const f = encodeFrame(header, body);
  const jsonLen = f.readUInt32BE(6);
  for (let n = 1 + rng.int(4); n > 0; n--) {
    const where = rng.next();
    // Mostly in the JSON header; sometimes the body or the length fields; rarely anywhere.
    const at =
      where < 0.7
        ? 10 + rng.int(jsonLen)
        : where < 0.85
          ? 10 + jsonLen + rng.int(Math.max(1, f.length - 10 - jsonLen))
          : where < 0.95
            ? rng.pick([5, 9, 0, 1])
            : rng.int(f.length);
    if (at < f.length) f[at] = f[at]! ^ (1 << rng.int(8));
  }
  return rng.chance(0.3) ? f.subarray(0, rng.int(f.length)) : f;
}

/** (d) A frame whose length prefix claims more than MAX_FRAME_BYTES. */
function oversizedFrame(): Buffer {
  const pre = Buffer.alloc(FRAME_PREFIX_BYTES);
  pre.writeUInt16BE(FRAME_MAGIC, 0);
  pre.writeUInt32BE(MAX_FRAME_BYTES + 1 + rng.int(0xffffffff - MAX_FRAME_BYTES), 2);
  const rest = rng.chance(0.5)
    ? encodeFrame({ id: rng.int(100), op: 'info' }).subarray(FRAME_PREFIX_BYTES)
    : rng.bytes(rng.int(32));
  return Buffer.concat([pre, rest]);
}

/** Structurally broken frames: short payloads, header lengths that do not fit, empty headers. */
function malformedFrame(): Buffer {
  switch (rng.int(5)) {
    case 0: {
      const b = Buffer.alloc(FRAME_PREFIX_BYTES + 3);
      b.writeUInt16BE(FRAME_MAGIC, 0);
      b.writeUInt32BE(rng.int(4), 2);
      return b.subarray(0, FRAME_PREFIX_BYTES + b.readUInt32BE(2));
    }
    case 1:
      return rawFrame('{"id":1,"op":"info"}', Buffer.alloc(0), 21 + rng.int(1000));
    case 2:
      return rawFrame('{}', Buffer.alloc(0), 0);
    case 3:
      return rawFrame(rng.bytes(rng.int(40)));
    default:
      return rawFrame(
        rng.pick(['null', '[]', '1', '"info"', 'true', '{"id":1}', '{"op":"info"}', '\ufeff{}']),
      );
  }
}

/** (a) Random bytes, sometimes starting with the magic. */
function randomBytesItem(): Buffer {
  const b = rng.bytes(1 + rng.int(300));
  if (b.length >= 2 && rng.chance(0.1)) b.writeUInt16BE(FRAME_MAGIC, 0);
  return b;
}

function generateItem(): Buffer {
  const r = rng.next();
  if (r < 0.2) return randomBytesItem();
  if (r < 0.55) return mutatedHeaderFrame();
  if (r < 0.8) return corruptedFrame();
  if (r < 0.85) return oversizedFrame();
  if (r < 0.9) return malformedFrame();
  const { header, body } = safeRequest();
  return encodeFrame(header, body);
}

// ---------------------------------------------------------------------------------------------
// Safety filter. A decoder's buffer is always a suffix of its input and the frames it emits
// depend on nothing else, so a fresh decoder fed (unconsumed tail + new bytes) emits exactly the
// frames the agent's decoder will emit for the new bytes.

type Verdict = 'unsafe' | 'exec' | 'ok';

/** parseRequest, but a throw (a validator bug the agent must survive) counts as a rejection. */
function safeParseRequest(header: unknown): ReturnType<typeof parseRequest> {
  try {
    return parseRequest(header);
  } catch (err) {
    return { ok: false, id: null, error: `parseRequest threw: ${String(err)}` };
  }
}

function classify(header: unknown): Verdict {
  if (
    typeof header === 'object' &&
    header !== null &&
    RESERVED_IDS.has((header as { id?: unknown }).id)
  ) {
    return 'unsafe';
  }
  const r = safeParseRequest(header);
  if (!r.ok) return 'ok'; // answered with an error and nothing else
  const req = r.req;
  switch (req.op) {
    case 'shutdown':
      return 'unsafe';
    case 'exec': {
      const file = req.argv[0] ?? '';
      const program =
        file === '/bin/true' || (file.startsWith(`${NOWHERE}/`) && !file.includes('..'));
      const env = Object.keys(req.env ?? {}).every((k) => k.startsWith('ISOLA_FUZZ_'));
      return program && env ? 'exec' : 'unsafe';
    }
    case 'readFile':
    case 'writeFile':
      return req.path.startsWith(`${NOWHERE}/`) && !req.path.includes('..') ? 'ok' : 'unsafe';
    case 'signal':
      return req.signal === 'SIGSTOP' ? 'unsafe' : 'ok';
    default:
      return 'ok';
  }
}

/** The header of a frame still waiting for its body, if the header bytes are all there. */
function pendingHeader(tail: Buffer): { header: unknown } | null {
  if (tail.length < 10 || tail.readUInt16BE(0) !== FRAME_MAGIC) return null;
  const payload = tail.readUInt32BE(2);
  const hl = tail.readUInt32BE(6);
  if (payload > MAX_FRAME_BYTES || payload < 4 || hl > payload - 4 || hl > MAX_HEADER_BYTES)
    return null;
  if (tail.length < 10 + hl) return null;
  try {
    return { header: JSON.parse(tail.subarray(10, 10 + hl).toString('utf8')) };
  } catch {
    return null;
  }
}

/** Checks bytes appended after `tail`; returns the new tail and the execs they start, or null. */
function check(
  tail: Buffer,
  bytes: Buffer,
  execBudget: number,
): { tail: Buffer; execs: number } | null {
  const all = tail.length > 0 ? Buffer.concat([tail, bytes]) : bytes;
  const d = new FrameDecoder();
  let execs = 0;
  for (const ev of d.push(all)) {
    if (ev.kind !== 'frame') continue;
    const v = classify(ev.frame.header);
    if (v === 'unsafe') return null;
    if (v === 'exec' && ++execs > execBudget) return null;
  }
  const newTail = all.subarray(all.length - d.buffered);
  // A frame whose header is complete but whose body is not will be decoded with whatever comes
  // next, so its header must already be safe.
  const p = pendingHeader(newTail);
  if (p) {
    const v = classify(p.header);
    if (v === 'unsafe' || (v === 'exec' && execs + 1 > execBudget)) return null;
  }
  return { tail: Buffer.from(newTail), execs };
}

// ---------------------------------------------------------------------------------------------

interface Reply {
  id: unknown;
  ok: boolean;
  result?: unknown;
  error?: { code: string; message: string };
}

test(
  'guest agent survives 100,000+ fuzzed frames and still serves requests',
  { timeout: 180_000 },
  async (t) => {
    assert.ok(existsSync(AGENT), `agent not built at ${AGENT}`);
    assert.ok(!existsSync(NOWHERE), `${NOWHERE} must not exist`);
    t.diagnostic(`seed ${SEED} (replay with ISOLA_FUZZ_SEED=${SEED})`);
    const started = performance.now();

    const child: ChildProcess = spawn(process.execPath, [AGENT, '--stdio'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    t.after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    const stdin = child.stdin!;
    stdin.on('error', () => {}); // an EPIPE shows up as the agent's exit below
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      if (stderr.length < 20_000) stderr += d.toString();
    });
    let exitInfo: string | null = null;
    const exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        exitInfo = `agent exited (code ${code}, signal ${signal}); stderr:\n${stderr}`;
        resolve();
      });
    });
    const alive = () => {
      if (exitInfo !== null) assert.fail(exitInfo);
    };

    // Everything the agent sends.
    const out = new FrameDecoder();
    const stats = { responses: 0, errorReplies: 0, okReplies: 0, events: 0, undecodable: 0 };
    const errorCodes = new Map<string, number>();
    const replies = new Map<unknown, Reply>();
    const stdoutByExec = new Map<number, Buffer[]>();
    const exitByExec = new Map<number, { exitCode: number | null; signal: string | null }>();
    let first: unknown;
    let wake: () => void = () => {};
    child.stdout!.on('data', (chunk: Buffer) => {
      for (const ev of out.push(chunk)) {
        if (ev.kind === 'error') {
          stats.undecodable++;
          continue;
        }
        const h = ev.frame.header as Record<string, unknown>;
        first ??= h;
        if (typeof h.ev === 'string') {
          stats.events++;
          const execId = h.execId as number;
          if (h.ev === 'stdout')
            stdoutByExec.set(execId, [...(stdoutByExec.get(execId) ?? []), ev.frame.body]);
          if (h.ev === 'exit')
            exitByExec.set(execId, {
              exitCode: h.exitCode as number | null,
              signal: h.signal as string | null,
            });
          continue;
        }
        stats.responses++;
        if (h.ok === false) {
          stats.errorReplies++;
          const code = (h.error as { code?: string } | undefined)?.code ?? '?';
          errorCodes.set(code, (errorCodes.get(code) ?? 0) + 1);
        } else stats.okReplies++;
        if (RESERVED_IDS.has(h.id)) replies.set(h.id, h as unknown as Reply);
      }
      wake();
    });
    /** Wait until `cond` holds (re-checked on every output chunk), the agent dies, or timeout. */
    const until = async (what: string, cond: () => boolean, timeoutMs = 30_000) => {
      const deadline = Date.now() + timeoutMs;
      while (!cond()) {
        alive();
        if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
        await Promise.race([
          new Promise<void>((r) => {
            wake = r;
          }),
          exited,
          new Promise((r) => setTimeout(r, 200).unref()),
        ]);
      }
    };

    // What the agent's decoder sees, tracked on our side.
    const accounting = new FrameDecoder();
    const expected = { frames: 0, decodeErrors: 0, invalidRequests: 0 };
    let tail: Buffer = Buffer.alloc(0);
    let bytesWritten = 0;
    const write = async (bytes: Buffer) => {
      for (const ev of accounting.push(bytes)) {
        if (ev.kind === 'error') {
          expected.decodeErrors++;
          continue;
        }
        expected.frames++;
        if (!safeParseRequest(ev.frame.header).ok) expected.invalidRequests++;
      }
      bytesWritten += bytes.length;
      if (!stdin.write(bytes)) {
        await Promise.race([new Promise((r) => stdin.once('drain', r)), exited]);
      }
      alive();
    };

    await until('the ready event', () => first !== undefined, 20_000);
    assert.equal(
      (first as { ev?: string }).ev,
      'ready',
      `first frame was ${JSON.stringify(first)}`,
    );
    assert.equal((first as { version?: number }).version, PROTOCOL_VERSION);

    // The fuzz.
    let items = 0;
    let dropped = 0;
    let droppedBatches = 0;
    while (expected.frames < TARGET_FRAMES) {
      const batch: Buffer[] = [];
      let size = 0;
      let batchExecs = 0;
      while (batch.length < 256 && size < 64 * 1024) {
        const item = generateItem();
        // Judge each item alone first so one bad item does not cost a whole batch.
        const alone = check(Buffer.alloc(0), item, EXEC_BUDGET - execsSeen - batchExecs);
        if (!alone) {
          dropped++;
          continue;
        }
        batchExecs += alone.execs;
        batch.push(item);
        size += item.length;
      }
      const bytes = Buffer.concat(batch);
      const ok = check(tail, bytes, EXEC_BUDGET - execsSeen);
      if (!ok) {
        droppedBatches++;
        continue;
      }
      tail = ok.tail;
      execsSeen += ok.execs;
      items += batch.length;
      await write(bytes);
    }
    const fuzzDone = performance.now();

    // Resynchronise: enough zeros to complete any partial frame, then discarded as bad magic.
    const zeros = Buffer.alloc(MAX_FRAME_BYTES + 16);
    const z = check(tail, zeros, EXEC_BUDGET - execsSeen);
    assert.ok(z, 'the resync padding would complete an unsafe frame');
    assert.equal(z.tail.length, 0);
    await write(zeros);
    // Every frame and every protocol error so far gets exactly one response.
    await until(
      'a response to every fuzzed frame',
      () => stats.responses >= expected.frames + expected.decodeErrors,
      60_000,
    );

    // The agent still works.
    await write(encodeFrame({ id: ID_INFO, op: 'info' }));
    await until('the info reply', () => replies.has(ID_INFO));
    const info = replies.get(ID_INFO)!;
    assert.equal(info.ok, true, JSON.stringify(info));
    assert.equal((info.result as { agentVersion?: string }).agentVersion, AGENT_VERSION);
    assert.equal((info.result as { protocolVersion?: number }).protocolVersion, PROTOCOL_VERSION);

    await write(encodeFrame({ id: ID_EXEC, op: 'exec', argv: ['/bin/echo', 'alive'] }));
    await until('the exec reply', () => replies.has(ID_EXEC));
    const execReply = replies.get(ID_EXEC)!;
    assert.equal(execReply.ok, true, JSON.stringify(execReply));
    const execId = (execReply.result as { execId: number }).execId;
    await write(encodeFrame({ id: ID_WAIT, op: 'wait', execId }));
    await until('the exit of /bin/echo', () => exitByExec.has(execId) && replies.has(ID_WAIT));
    assert.equal(Buffer.concat(stdoutByExec.get(execId) ?? []).toString(), 'alive\n');
    assert.deepEqual(exitByExec.get(execId), { exitCode: 0, signal: null });
    assert.deepEqual(replies.get(ID_WAIT)?.result, { exitCode: 0, signal: null });

    await until('all responses', () => stats.responses >= expected.frames + expected.decodeErrors);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    t.diagnostic(
      `${items} items (${(bytesWritten / 1048576).toFixed(1)} MiB) written in ${((fuzzDone - started) / 1000).toFixed(1)} s, ` +
        `${dropped} unsafe items and ${droppedBatches} batches dropped; agent decoded ${expected.frames} frames and ` +
        `${expected.decodeErrors} protocol errors (${expected.invalidRequests} frames were invalid requests); replies: ${stats.responses} (${stats.errorReplies} errors, ` +
        `${stats.okReplies} ok), ${stats.events} events, ${execsSeen} fuzzed execs; total ${seconds} s`,
    );
    t.diagnostic(`error codes: ${JSON.stringify(Object.fromEntries(errorCodes))}`);

    alive();
    assert.equal(child.exitCode, null, 'the agent exited');
    assert.equal(stats.undecodable, 0, 'the agent wrote bytes that are not frames');
    // Exactly one response per frame and per protocol error: nothing dropped, nothing doubled.
    assert.equal(stats.responses, expected.frames + expected.decodeErrors);
    // Every protocol error and every invalid request was answered with an error (valid requests may
    // fail too, for example a wait for an unknown exec id).
    assert.ok(stats.errorReplies >= expected.decodeErrors + expected.invalidRequests);
    assert.ok(stats.errorReplies > TARGET_FRAMES, `only ${stats.errorReplies} error replies`);
    assert.ok(items >= TARGET_FRAMES);

    // Closing stdin makes the agent kill its processes and exit 0.
    stdin.end();
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000).unref())]);
    assert.equal(child.exitCode, 0, `agent did not exit cleanly: ${exitInfo}`);
  },
);
