// isola run [--store DIR] [--memory MiB] [--env K=V]... [-t] [--platform P] IMAGE [CMD [ARGS...]]
// Runs an image as a container in its own micro-VM, like `docker run --rm`: pulls the image when
// the store lacks it, writes a bundle whose root is the image's shared root filesystem (with a
// private writable layer), runs it with isola-runtime, exits with the container's status and
// removes the bundle.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../../assets/paths.js';
import { IsolaError } from '../../errors.js';
import { resolveImage } from '../../image/images.js';
import { parsePlatform } from '../../image/manifest.js';
import { pullImage } from '../../image/pull.js';
import { loadImage } from '../../image/rootfs.js';
import { imageRunSpec } from '../../image/runtime-spec.js';
import { ImageStore, defaultStoreDir } from '../../image/store/store.js';
import { FORWARDED_SIGNALS } from '../../oci/exit-like.js';
import { parseCli, reportError, usageError } from '../output.js';

export async function run(argv: string[]): Promise<number> {
  // Options end at the image name; everything after it is the command.
  const valued = new Set(['--store', '--memory', '--env', '-e', '--platform', '--name']);
  let i = 0;
  while (i < argv.length && (argv[i] as string).startsWith('-') && argv[i] !== '--')
    i += valued.has(argv[i] as string) ? 2 : 1;
  if (argv[i] === '--') i++;
  const { values } = parseCli({
    args: argv.slice(0, i).filter((a) => a !== '--'),
    options: {
      store: { type: 'string' },
      memory: { type: 'string' },
      env: { type: 'string', short: 'e', multiple: true },
      platform: { type: 'string' },
      tty: { type: 'boolean', short: 't', default: false },
      interactive: { type: 'boolean', short: 'i', default: false },
      name: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const [imageArg, ...command] = argv.slice(i);
  let bundle: string | undefined;
  try {
    if (!imageArg) throw usageError('usage: isola run [options] IMAGE [CMD [ARGS...]]');
    const memoryMiB = values.memory === undefined ? undefined : Number(values.memory);
    if (memoryMiB !== undefined && !(Number.isInteger(memoryMiB) && memoryMiB >= 16))
      throw usageError(`--memory wants MiB (an integer >= 16), got "${values.memory}"`);
    const storeDir = values.store ? path.resolve(values.store) : defaultStoreDir();
    const store = ImageStore.open(storeDir);
    let spec: Record<string, unknown>;
    try {
      let rec: ReturnType<typeof resolveImage>;
      try {
        rec = resolveImage(store, imageArg);
      } catch (err) {
        if (!(err instanceof IsolaError && err.code === 'E_IMAGE_NOT_FOUND')) throw err;
        process.stderr.write(`${imageArg}: not in the store, pulling\n`);
        rec = await pullImage(store, imageArg, {
          platform: values.platform ? parsePlatform(values.platform) : undefined,
        });
      }
      const { config } = loadImage(store, rec);
      spec = imageRunSpec(config, {
        image: rec.manifestDigest,
        store: storeDir,
        command,
        env: values.env,
        memoryMiB,
        terminal: values.tty,
      });
    } finally {
      store.close();
    }
    bundle = mkdtempSync(path.join(os.tmpdir(), 'isola-run-'));
    mkdirSync(path.join(bundle, 'rootfs'));
    writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec, null, 2));
    const id = values.name ?? `run-${randomBytes(6).toString('hex')}`;
    const child = spawn(
      path.join(REPO_ROOT, 'bin/isola-runtime'),
      ['run', '--bundle', bundle, id],
      {
        stdio: 'inherit',
      },
    );
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    for (const s of FORWARDED_SIGNALS) process.on(s, forward);
    const { code, signal } = await new Promise<{
      code: number | null;
      signal: NodeJS.Signals | null;
    }>((r) => child.once('exit', (c, s) => r({ code: c, signal: s })));
    for (const s of FORWARDED_SIGNALS) process.off(s, forward);
    if (signal) return 128 + ((os.constants.signals as Record<string, number>)[signal] ?? 0);
    return code ?? 1;
  } catch (err) {
    return reportError(err, values.json === true);
  } finally {
    if (bundle) rmSync(bundle, { recursive: true, force: true });
  }
}
