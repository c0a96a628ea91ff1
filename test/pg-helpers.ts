// A throwaway PostgreSQL server for the platform store's contract tests: Debian's PostgreSQL
// binaries, a fresh cluster in a temp dir (isola-test-pg-*), listening on 127.0.0.1 only with
// password (scram) authentication, its unix socket inside the temp dir too.
//
// initdb and the server refuse to run as root, so as root they run as the `postgres` user
// (runuser), which then owns the temp dir.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from '../src/util/ports.js';

const execFileAsync = promisify(execFile);

const PG_ROOT = '/usr/lib/postgresql';
const TEMP_PREFIX = 'isola-test-pg-';
const SUPERUSER = 'isola_test';
/** pg_ctl waits this long for the server to accept connections (a loaded machine is slow). */
const START_TIMEOUT_S = 60;
/** pg_ctl waits this long for an immediate shutdown. */
const STOP_TIMEOUT_S = 30;
/** Tries with a fresh port, in case another process took ours between probe and start. */
const START_ATTEMPTS = 3;
/** Output kept from a failing command or the server log, for the error message. */
const LOG_TAIL_CHARS = 2000;

// Settings for a disposable server: reachable on loopback only, and no fsync (its data dies
// with the test anyway, and fsync would only slow a shared machine down).
const SERVER_SETTINGS = [
  "listen_addresses = '127.0.0.1'",
  'fsync = off',
  'synchronous_commit = off',
  'full_page_writes = off',
  'max_connections = 50',
];

export interface TestPostgres {
  /** URL of a fresh database made for this server (user and password included). */
  url: string;
  /** The same server's maintenance database, for createDatabase. */
  adminUrl: string;
  stop(): Promise<void>;
}

/** The newest installed PostgreSQL's bin directory, or null when none is installed. */
export function postgresBinDir(): string | null {
  let versions: string[];
  try {
    versions = readdirSync(PG_ROOT).filter((v) => /^\d+$/.test(v));
  } catch {
    return null;
  }
  const usable = versions
    .sort((a, b) => Number(b) - Number(a))
    .map((v) => path.join(PG_ROOT, v, 'bin'))
    .filter((bin) => existsSync(path.join(bin, 'initdb')) && existsSync(path.join(bin, 'pg_ctl')));
  return usable[0] ?? null;
}

const asRoot = process.getuid?.() === 0;

/** Runs a PostgreSQL tool, as the postgres user when we are root. */
async function runPg(bin: string, args: string[]): Promise<string> {
  const [cmd, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  try {
    // cwd '/': the postgres user may not be allowed into ours.
    const { stdout } = await execFileAsync(cmd, argv, { encoding: 'utf8', cwd: '/' });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    const out = `${e.stdout ?? ''}${e.stderr ?? ''}`.slice(-LOG_TAIL_CHARS);
    throw new Error(`${path.basename(bin)} failed: ${e.message}\n${out}`);
  }
}

async function postgresIds(): Promise<{ uid: number; gid: number }> {
  const uid = Number((await execFileAsync('id', ['-u', 'postgres'])).stdout.trim());
  const gid = Number((await execFileAsync('id', ['-g', 'postgres'])).stdout.trim());
  return { uid, gid };
}

function logTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').slice(-LOG_TAIL_CHARS);
  } catch {
    return '(no server log)';
  }
}

/** The postmaster's pid from its pid file, or null when it is not running. */
function postmasterPid(dataDir: string): number | null {
  try {
    const pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** SIGQUIT is PostgreSQL's immediate shutdown; usable where nothing may be awaited. */
function quitNow(dataDir: string): void {
  const pid = postmasterPid(dataDir);
  if (pid === null) return;
  try {
    process.kill(pid, 'SIGQUIT');
  } catch {
    // Already gone.
  }
}

/** Makes a database on the server of `adminUrl`; returns its URL. */
export async function createDatabase(adminUrl: string, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
  } finally {
    await client.end();
  }
  const u = new URL(adminUrl);
  u.pathname = `/${encodeURIComponent(name)}`;
  return u.toString();
}

async function initCluster(bin: string, dir: string, password: string): Promise<string> {
  const data = path.join(dir, 'data');
  const pwfile = path.join(dir, 'pwfile');
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  if (asRoot) {
    const { uid, gid } = await postgresIds();
    chownSync(dir, uid, gid);
    chownSync(pwfile, uid, gid);
  }
  await runPg(path.join(bin, 'initdb'), [
    '-D',
    data,
    '-U',
    SUPERUSER,
    `--pwfile=${pwfile}`,
    '--auth=scram-sha-256',
    '--encoding=UTF8',
    '--locale=C',
    '--no-sync',
  ]);
  rmSync(pwfile, { force: true });
  appendFileSync(
    path.join(data, 'postgresql.conf'),
    `\n${[...SERVER_SETTINGS, `unix_socket_directories = '${dir}'`].join('\n')}\n`,
  );
  return data;
}

/** Starts the server on a free port, trying again when the port was taken meanwhile. */
async function startServer(bin: string, data: string, log: string): Promise<number> {
  let lastErr: unknown;
  for (let i = 0; i < START_ATTEMPTS; i++) {
    const port = await freePort();
    try {
      await runPg(path.join(bin, 'pg_ctl'), [
        'start',
        '-D',
        data,
        '-l',
        log,
        '-w',
        '-t',
        String(START_TIMEOUT_S),
        '-o',
        `-p ${port}`,
      ]);
      return port;
    } catch (err) {
      lastErr = err;
      quitNow(data);
    }
  }
  throw new Error(`PostgreSQL did not start: ${(lastErr as Error).message}\n${logTail(log)}`);
}

async function stopServer(bin: string, data: string): Promise<void> {
  if (postmasterPid(data) === null) return;
  try {
    await runPg(path.join(bin, 'pg_ctl'), [
      'stop',
      '-D',
      data,
      '-m',
      'immediate',
      '-w',
      '-t',
      String(STOP_TIMEOUT_S),
    ]);
  } catch {
    quitNow(data);
  }
}

/** Starts a fresh PostgreSQL server with one fresh database; stop() removes every trace. */
export async function startPostgres(): Promise<TestPostgres> {
  const bin = postgresBinDir();
  if (bin === null)
    throw new Error(
      `PostgreSQL is not installed (no ${PG_ROOT}/<version>/bin/initdb); scripts/setup.sh installs the postgresql package`,
    );
  const dir = mkdtempSync(path.join(os.tmpdir(), TEMP_PREFIX));
  const data = path.join(dir, 'data');
  // If the test process dies without stop(), still take the server down with it.
  const onExit = () => quitNow(data);
  process.once('exit', onExit);
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await stopServer(bin, data);
      process.removeListener('exit', onExit);
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
  try {
    const password = randomBytes(18).toString('hex');
    await initCluster(bin, dir, password);
    const port = await startServer(bin, data, path.join(dir, 'postgres.log'));
    const adminUrl = `postgres://${SUPERUSER}:${password}@127.0.0.1:${port}/postgres`;
    const url = await createDatabase(adminUrl, 'isola_test');
    return { url, adminUrl, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
