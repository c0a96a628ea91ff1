// isola serve [--listen HOST:PORT] [--data-dir DIR] [--database-url URL] [--image-store DIR]
//             [--insecure-registry HOST]... [--json]
// The platform server: the /v1 API, HTTP routing to functions, the instance pool. State lives in
// DIR/isola.db (SQLite), or PostgreSQL when --database-url / DATABASE_URL is set. On first start
// an admin key is written to DIR/admin.key (0600). SIGTERM/SIGINT stop it gracefully.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, runDir } from '../../assets/paths.js';
import { rateLimitsFromEnv } from '../../gateway/limits.js';
import { Gateway, SHUTDOWN_GRACE_MS } from '../../gateway/server.js';
import { defaultStoreDir } from '../../image/store/store.js';
import { Platform } from '../../platform/platform.js';
import { openPlatformStore } from '../../platform/store/open.js';
import { reap } from '../../sandbox/reaper.js';
import { defaultDataDir, parseListen } from '../client.js';
import { parseCli, printJson, usageError } from '../output.js';

const QUICKSTART_TENANT = 'default';

export async function serve(argv: string[]): Promise<number> {
  const { values } = parseCli({
    args: argv,
    options: {
      listen: { type: 'string' },
      'data-dir': { type: 'string' },
      'database-url': { type: 'string' },
      'image-store': { type: 'string' },
      'insecure-registry': { type: 'string', multiple: true },
      'shutdown-grace': { type: 'string' },
      quickstart: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
    allowPositionals: false,
  });
  const { host, port } = parseListen(values.listen ?? process.env.ISOLA_LISTEN ?? '127.0.0.1:8787');
  const dataDir = path.resolve(
    values['data-dir'] ?? process.env.ISOLA_DATA_DIR ?? defaultDataDir(),
  );
  const databaseUrl = values['database-url'] ?? process.env.DATABASE_URL;
  const grace = values['shutdown-grace']
    ? Number(values['shutdown-grace']) * 1000
    : SHUTDOWN_GRACE_MS;
  if (!Number.isFinite(grace) || grace < 0) throw usageError('--shutdown-grace is seconds');
  // ISOLA_RATE_LIMIT_* and ISOLA_AUTH_FAILURE_* (gateway/limits.ts); checked before anything starts.
  const rateLimits = rateLimitsFromEnv();
  const log = (msg: string, extra: Record<string, unknown> = {}) => {
    if (values.json) printJson({ ts: new Date().toISOString(), msg, ...extra });
    else process.stdout.write(`isola: ${msg}\n`);
  };

  // What a previous server that died left behind (QEMU processes, cgroups, run folders).
  const reaped = await reap(runDir());
  if (reaped.sandboxes.length > 0)
    log(`reaped ${reaped.sandboxes.length} sandbox(es) left by a dead process`);
  const store = await openPlatformStore({ dataDir, ...(databaseUrl ? { databaseUrl } : {}) });
  const platform = await Platform.open({
    dataDir,
    store,
    imageStoreDir: path.resolve(values['image-store'] ?? defaultStoreDir()),
    insecureRegistries: values['insecure-registry'] ?? [],
  });
  const admin = await platform.bootstrapAdminKey();
  if (admin) log(`first start: admin key written to ${path.join(dataDir, 'admin.key')}`);
  const gateway = new Gateway(platform, { rateLimits });
  const addr = await gateway.listen(host, port);
  log(
    `listening on http://${addr.address}:${addr.port} (data ${dataDir}, store ${store.dialect})`,
    {
      url: `http://${addr.address}:${addr.port}`,
      dataDir,
      store: store.dialect,
    },
  );

  if (values.quickstart)
    await quickstart(platform, dataDir, `http://${addr.address}:${addr.port}`, log);

  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      log(`${sig}: finishing running invocations (up to ${grace / 1000} s), then stopping`);
      gateway.close(grace).then(resolve, (err: unknown) => {
        process.stderr.write(`isola: shutdown: ${String(err)}\n`);
        resolve();
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log('stopped');
  return 0;
}

/**
 * `npm start`: a first tenant and key if there are none, the bundled example deployed, and the
 * curl lines to call it. The tenant key is kept in DATA_DIR/quickstart.key (0600) so that later
 * starts print working lines again.
 */
async function quickstart(
  platform: Platform,
  dataDir: string,
  url: string,
  log: (msg: string, extra?: Record<string, unknown>) => void,
): Promise<void> {
  const keyFile = path.join(dataDir, 'quickstart.key');
  let tenant = await platform.store.getTenantByName(QUICKSTART_TENANT);
  if (!tenant) tenant = await platform.createTenant(QUICKSTART_TENANT, {});
  let key = existsSync(keyFile) ? readFileSync(keyFile, 'utf8').trim() : '';
  if (
    !key ||
    !(await platform.authenticate(`Bearer ${key}`).then(
      () => true,
      () => false,
    ))
  ) {
    key = (await platform.createKey(tenant, 'quickstart')).key;
    writeFileSync(keyFile, `${key}\n`, { mode: 0o600 });
  }
  if (!(await platform.store.getFunction(tenant.id, 'hello'))) {
    log('deploying the example function examples/hello as "hello"');
    await platform.deployBundle(
      tenant,
      'hello',
      { kind: 'dir', path: path.join(REPO_ROOT, 'examples/hello') },
      {},
    );
  }
  log(
    `tenant "${tenant.name}", key in ${keyFile}; call the example (the first call waits for its snapshot or boot; later cold starts restore in ~0.3 s):`,
    { tenant: tenant.name, key },
  );
  process.stdout.write(
    `\n  curl -s -X POST ${url}/v1/functions/hello/invoke -H "Authorization: Bearer ${key}" -d '{"name":"Ada"}'\n` +
      `  curl -s "${url}/${tenant.name}/hello?name=Ada" -H "Authorization: Bearer ${key}"\n` +
      `  ISOLA_URL=${url} ISOLA_API_KEY=${key} bin/isola invoke hello --data '{"name":"Ada"}'\n\n`,
  );
}
