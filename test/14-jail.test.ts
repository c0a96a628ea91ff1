// The VMM's jail helper (native/isola-jail.c) on its own, with a shell in place of QEMU (no VM):
// what a process in the jail can see and do. The same jail runs every QEMU; 13-network checks it
// on running VMMs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { nativeHelper } from '../src/assets/native.js';
import { IsolaError } from '../src/errors.js';
import { QemuProcess } from '../src/vmm/qemu-process.js';

const root = process.getuid?.() === 0;
const skip = root ? false : 'the jail needs root (namespaces, mounts, a user switch)';

describe('the VMM jail', { skip }, () => {
  const base = mkdtempSync(path.join(os.tmpdir(), 'isola-test-jail-'));
  const jailRoot = path.join(base, 'root');
  const shared = path.join(base, 'shared');
  const secret = path.join(base, 'secret.txt');
  after(() => rmSync(base, { recursive: true, force: true }));

  /** Run `script` with /bin/sh in a jail that binds /usr (for the shell) and `shared` only. */
  const jailed = (script: string) => {
    const helper = nativeHelper('isola-jail');
    assert.ok(helper, 'the jail helper builds');
    spawnSync('mkdir', ['-p', jailRoot, shared]);
    writeFileSync(secret, 'host secret\n');
    writeFileSync(path.join(shared, 'visible.txt'), 'visible\n');
    const r = spawnSync(
      helper,
      [
        '--ns',
        '--netns',
        '--root',
        jailRoot,
        '--ro-exec',
        '/usr',
        '--ro',
        shared,
        '--dev',
        '/dev/null',
        '--uid',
        '1600000123',
        '--gid',
        '1600000123',
        '--',
        '/usr/bin/sh',
        '-c',
        script,
      ],
      { encoding: 'utf8', timeout: 20_000 },
    );
    return { code: r.status, out: r.stdout, err: r.stderr };
  };

  test('its own user and hostname, no capabilities, only what was bound', () => {
    const r = jailed(
      `id -u; hostname; cat ${shared}/visible.txt; cat ${secret} 2>&1 || true; ls /; ls /dev`,
    );
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trim().split('\n');
    assert.equal(lines[0], '1600000123');
    assert.equal(lines[1], 'isola-vmm');
    assert.equal(lines[2], 'visible');
    assert.match(lines[3]!, /No such file/, 'a file beside the bound folder is not there');
    assert.ok(!r.out.includes('etc\n') && !r.out.includes('home\n'), r.out);
  });

  test('the root is read-only, the bound folder too', () => {
    const r = jailed(`touch /x 2>&1; touch ${shared}/y 2>&1; echo done`);
    assert.match(r.out, /Read-only file system[\s\S]*Read-only file system[\s\S]*done/);
  });

  test('system calls a VMM never needs are refused: namespaces, mounts, ptrace', () => {
    // The control: the same user, outside the jail, may create a user namespace on this kernel,
    // so the refusal below is the jail's filter.
    const outside = spawnSync(
      'setpriv',
      ['--reuid=1600000123', '--regid=1600000123', '--clear-groups', 'unshare', '--user', 'true'],
      { encoding: 'utf8' },
    );
    assert.equal(outside.status, 0, `unshare outside the jail: ${outside.stderr}`);
    const r = jailed(
      'unshare --user true; echo "unshare $?"; mount -t tmpfs t /tmp 2>&1; echo "mount $?"',
    );
    assert.match(r.err + r.out, /unshare: unshare failed: Operation not permitted/);
    assert.match(r.out, /unshare 1/);
    assert.match(r.out, /mount [1-9]/);
  });

  test('it sees only its own processes and has no network but loopback', () => {
    const r = jailed('ls /proc 2>&1; ip -o link 2>&1 | cut -d: -f2');
    assert.match(r.out, /No such file or directory/, 'no /proc without sealed memory to reach');
    assert.match(r.out, /^ lo$/m, 'ip lists the links it sees: loopback');
    assert.doesNotMatch(r.out, /eth|ens|isv/);
  });

  test('a jail that cannot be set up is a typed error (E_JAIL), and nothing runs', async () => {
    await assert.rejects(
      QemuProcess.spawn(['-version'], {
        cgroupProcs: [],
        jail: {
          root: jailRoot,
          uid: 1600000123,
          gid: 1600000123,
          groups: [],
          binds: [{ path: path.join(base, 'no-such-file'), kind: 'ro' }],
          netns: true,
        },
      }),
      (e: unknown) =>
        e instanceof IsolaError && e.code === 'E_JAIL' && /no-such-file/.test(e.message),
    );
  });
});
