// isola image pull | import | export | ls | inspect | rm | prune | unpack | rootfs
// The image store is --store DIR, else ISOLA_STORE, else ~/.local/share/isola/images.
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { IsolaError } from '../../errors.js';
import { exportImage, importArchive } from '../../image/archive.js';
import { pruneStore, removeImages, resolveImage } from '../../image/images.js';
import { formatPlatform, parsePlatform } from '../../image/manifest.js';
import { type PullEvent, pullImage } from '../../image/pull.js';
import { parseCredentials } from '../../image/registry/auth.js';
import { ensureRootfsImage, loadImage, unpackImage } from '../../image/rootfs.js';
import { type ImageRecord, ImageStore, defaultStoreDir } from '../../image/store/store.js';
import { ms, parseCli, printJson, reportError, usageError } from '../output.js';

export const IMAGE_USAGE = `usage: isola image <command> [--store DIR] [--json]

  pull REF [--platform OS/ARCH[/VARIANT]] [--creds USER:PASS] [--insecure-registry HOST]... [-q]
                       pull from a registry (plain http only for loopback and listed hosts)
  import FILE|DIR [NAME] [--platform P]
                       import a docker-save archive or an OCI image layout (directory or tar)
  export REF -o FILE   write an archive that is both an OCI layout and a docker-save archive
  ls [-q]              list images
  inspect REF          manifest digest, config, layers (REF: name, digest or id prefix)
  rm [-f] REF...       remove names (blobs go at the next prune); -f even if a container uses it
  prune                remove blobs, root filesystems and partial downloads nothing uses
  unpack REF DIR       apply the layers onto DIR
  rootfs REF           build (once) and print the image's shared root filesystem image
`;

const COMMON = {
  store: { type: 'string' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

function openStore(dir: string | undefined): ImageStore {
  return ImageStore.open(dir ? path.resolve(dir) : defaultStoreDir());
}

export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = -1;
  do {
    v /= 1000;
    i++;
  } while (v >= 1000 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

const short = (d: string) => d.replace(/^sha256:/, '').slice(0, 12);

/** Progress on stderr: one redrawn line on a terminal, a line per finished blob otherwise. */
function progressRenderer(quiet: boolean): { onEvent: (e: PullEvent) => void; done: () => void } {
  if (quiet) return { onEvent: () => undefined, done: () => undefined };
  const tty = process.stderr.isTTY === true;
  const sizes = new Map<string, number>();
  const got = new Map<string, number>();
  const finished = new Set<string>();
  const t0 = performance.now();
  let last = 0;
  const draw = (force = false) => {
    const now = performance.now();
    if (!tty || (!force && now - last < 100)) return;
    last = now;
    const total = [...sizes.values()].reduce((a, b) => a + b, 0);
    const have = [...sizes.keys()].reduce(
      (a, d) => a + Math.min(got.get(d) ?? 0, sizes.get(d) ?? 0),
      0,
    );
    const width = 30;
    const fill = total ? Math.round((have / total) * width) : 0;
    const rate = have / Math.max(0.001, (now - t0) / 1000);
    process.stderr.write(
      `\r\x1b[K[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${finished.size}/${sizes.size} blobs  ${humanBytes(have)}/${humanBytes(total)}  ${humanBytes(rate)}/s`,
    );
  };
  return {
    onEvent: (e) => {
      switch (e.type) {
        case 'resolved':
          process.stderr.write(`${e.reference}: ${e.digest}\n`);
          break;
        case 'platform':
          process.stderr.write(`platform ${e.platform}: ${e.digest}\n`);
          break;
        case 'blobs':
          for (const b of e.blobs) {
            sizes.set(b.digest, b.size);
            if (b.present) {
              got.set(b.digest, b.size);
              finished.add(b.digest);
            }
          }
          draw(true);
          break;
        case 'progress':
          got.set(e.digest, e.bytes);
          draw();
          break;
        case 'blob-done':
          if (!finished.has(e.digest)) {
            finished.add(e.digest);
            got.set(e.digest, sizes.get(e.digest) ?? 0);
            if (!tty)
              process.stderr.write(
                `${short(e.digest)}: done (${humanBytes(sizes.get(e.digest) ?? 0)})\n`,
              );
          }
          draw(true);
          break;
        case 'waiting':
          break;
      }
    },
    done: () => {
      if (tty) process.stderr.write('\n');
    },
  };
}

function imageSummary(rec: ImageRecord) {
  return {
    name: rec.name,
    id: rec.configDigest,
    digest: rec.digest,
    manifestDigest: rec.manifestDigest,
    indexDigest: rec.indexDigest,
    platform: rec.platform,
    size: rec.size,
    created: rec.created,
    source: rec.source,
    addedAt: rec.addedAt,
  };
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('   '))
    .join('\n');
}

export async function image(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const json = rest.includes('--json');
  try {
    switch (sub) {
      case 'pull':
        return await pull(rest);
      case 'import':
        return await importCmd(rest);
      case 'export':
        return await exportCmd(rest);
      case 'ls':
      case 'list':
        return ls(rest);
      case 'inspect':
        return inspect(rest);
      case 'rm':
      case 'remove':
        return rm(rest);
      case 'prune':
        return prune(rest);
      case 'unpack':
        return await unpack(rest);
      case 'rootfs':
        return await rootfs(rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(IMAGE_USAGE);
        return sub ? 0 : 2;
      default:
        throw usageError(`unknown image command "${sub}"\n\n${IMAGE_USAGE}`);
    }
  } catch (err) {
    return reportError(err, json);
  }
}

async function pull(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: {
      ...COMMON,
      platform: { type: 'string' },
      creds: { type: 'string' },
      'insecure-registry': { type: 'string', multiple: true },
      quiet: { type: 'boolean', short: 'q', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw usageError('usage: isola image pull REF');
  const store = openStore(values.store);
  const progress = progressRenderer(values.quiet || values.json);
  const t0 = performance.now();
  let creds: ReturnType<typeof parseCredentials> | undefined;
  if (values.creds !== undefined) {
    try {
      creds = parseCredentials(values.creds);
    } catch (err) {
      throw usageError(`--creds: ${(err as Error).message}`);
    }
  }
  const insecure = [
    ...(values['insecure-registry'] ?? []),
    ...(process.env.ISOLA_INSECURE_REGISTRIES ?? '').split(',').filter(Boolean),
  ];
  try {
    const rec = await pullImage(store, positionals[0] as string, {
      platform: values.platform ? parsePlatform(values.platform) : undefined,
      credentials: creds,
      insecure,
      onEvent: progress.onEvent,
    });
    progress.done();
    if (values.json) printJson({ ...imageSummary(rec), ms: Math.round(performance.now() - t0) });
    else if (values.quiet) process.stdout.write(`${rec.digest}\n`);
    else
      process.stdout.write(
        `pulled ${rec.name} (${rec.platform}, ${humanBytes(rec.size)}) in ${ms(performance.now() - t0)}\ndigest: ${rec.digest}\n`,
      );
    return 0;
  } catch (err) {
    progress.done();
    throw err;
  } finally {
    store.close();
  }
}

async function importCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: { ...COMMON, platform: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length < 1 || positionals.length > 2)
    throw usageError('usage: isola image import FILE|DIR [NAME]');
  const store = openStore(values.store);
  try {
    const recs = await importArchive(store, positionals[0] as string, {
      name: positionals[1],
      platform: values.platform ? parsePlatform(values.platform) : undefined,
    });
    if (values.json) printJson(recs.map(imageSummary));
    else
      for (const r of recs)
        process.stdout.write(`imported ${r.name} (${r.platform}) ${r.digest}\n`);
    return 0;
  } finally {
    store.close();
  }
}

async function exportCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: { ...COMMON, output: { type: 'string', short: 'o' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1 || !values.output)
    throw usageError('usage: isola image export REF -o FILE');
  const store = openStore(values.store);
  try {
    const rec = resolveImage(store, positionals[0] as string);
    const r = await exportImage(store, rec, path.resolve(values.output));
    if (values.json)
      printJson({ name: rec.name, file: path.resolve(values.output), bytes: r.bytes });
    else process.stdout.write(`wrote ${rec.name} to ${values.output} (${humanBytes(r.bytes)})\n`);
    return 0;
  } finally {
    store.close();
  }
}

function ls(argv: string[]): number {
  const { values } = parseCli({
    args: argv,
    options: { ...COMMON, quiet: { type: 'boolean', short: 'q', default: false } },
    strict: true,
  });
  const store = openStore(values.store);
  try {
    const recs = store.listImages();
    if (values.json) printJson(recs.map(imageSummary));
    else if (values.quiet) for (const r of recs) process.stdout.write(`${r.name}\n`);
    else {
      const rows = [['NAME', 'IMAGE ID', 'DIGEST', 'PLATFORM', 'SIZE', 'CREATED']];
      for (const r of recs)
        rows.push([
          r.name,
          short(r.configDigest),
          short(r.digest),
          r.platform,
          humanBytes(r.size),
          r.created?.slice(0, 19) ?? '-',
        ]);
      process.stdout.write(`${table(rows)}\n`);
    }
    return 0;
  } finally {
    store.close();
  }
}

function inspect(argv: string[]): number {
  const { values, positionals } = parseCli({
    args: argv,
    options: COMMON,
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw usageError('usage: isola image inspect REF');
  const store = openStore(values.store);
  try {
    const rec = resolveImage(store, positionals[0] as string);
    const { manifest, config } = loadImage(store, rec);
    const rootfsImage = store.rootfsPath(rec.manifestDigest);
    const out = {
      ...imageSummary(rec),
      mediaType: manifest.mediaType ?? null,
      layers: manifest.layers.map((l, i) => ({
        digest: l.digest,
        diffId: config.rootfs.diff_ids[i],
        size: l.size,
        mediaType: l.mediaType,
      })),
      config: {
        entrypoint: config.config?.Entrypoint ?? null,
        cmd: config.config?.Cmd ?? null,
        env: config.config?.Env ?? [],
        workingDir: config.config?.WorkingDir || null,
        user: config.config?.User || null,
        labels: config.config?.Labels ?? {},
        exposedPorts: Object.keys(config.config?.ExposedPorts ?? {}),
      },
      rootfsImage: existsSync(rootfsImage) ? rootfsImage : null,
    };
    if (values.json) printJson(out);
    else {
      const lines = [
        `name:        ${out.name}`,
        `digest:      ${out.digest}`,
        `manifest:    ${out.manifestDigest}`,
        `id (config): ${out.id}`,
        `platform:    ${out.platform}`,
        `size:        ${humanBytes(out.size)} in ${out.layers.length} layer(s)`,
        `created:     ${out.created ?? '-'}`,
        `entrypoint:  ${JSON.stringify(out.config.entrypoint)}`,
        `cmd:         ${JSON.stringify(out.config.cmd)}`,
        `workdir:     ${out.config.workingDir ?? '-'}`,
        `user:        ${out.config.user ?? '-'}`,
        `env:         ${out.config.env.join(' ') || '-'}`,
        'layers:',
        ...out.layers.map((l) => `  ${l.digest}  ${humanBytes(l.size)}  ${l.mediaType}`),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    }
    return 0;
  } finally {
    store.close();
  }
}

function rm(argv: string[]): number {
  const { values, positionals } = parseCli({
    args: argv,
    options: { ...COMMON, force: { type: 'boolean', short: 'f', default: false } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length === 0) throw usageError('usage: isola image rm REF...');
  const store = openStore(values.store);
  try {
    const removed = removeImages(store, positionals, values.force);
    if (values.json) printJson(removed.map((r) => ({ name: r.name, digest: r.digest })));
    else for (const r of removed) process.stdout.write(`removed ${r.name}\n`);
    return 0;
  } finally {
    store.close();
  }
}

function prune(argv: string[]): number {
  const { values } = parseCli({ args: argv, options: COMMON, strict: true });
  const store = openStore(values.store);
  try {
    const r = pruneStore(store);
    if (values.json) printJson(r);
    else
      process.stdout.write(
        `removed ${r.blobs} blob(s), ${r.rootfs} root filesystem(s), ${r.partials} partial download(s); freed ${humanBytes(r.bytes)}\n`,
      );
    return 0;
  } finally {
    store.close();
  }
}

async function unpack(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: COMMON,
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 2) throw usageError('usage: isola image unpack REF DIR');
  const store = openStore(values.store);
  try {
    const rec = resolveImage(store, positionals[0] as string);
    const dir = path.resolve(positionals[1] as string);
    mkdirSync(dir, { recursive: true });
    if (readdirSync(dir).length > 0)
      throw new IsolaError('E_INVALID_ARGUMENT', `${dir} is not empty`);
    const t0 = performance.now();
    const stats = await unpackImage(store, rec, dir);
    const total = stats.reduce(
      (a, s) => ({
        entries: a.entries + s.entries,
        bytes: a.bytes + s.bytes,
        skippedDevices: a.skippedDevices + s.skippedDevices,
      }),
      { entries: 0, bytes: 0, skippedDevices: 0 },
    );
    if (values.json)
      printJson({
        name: rec.name,
        dir,
        layers: stats,
        ...total,
        ms: Math.round(performance.now() - t0),
      });
    else
      process.stdout.write(
        `unpacked ${rec.name} into ${dir}: ${total.entries} entries, ${humanBytes(total.bytes)} in ${ms(performance.now() - t0)}\n`,
      );
    return 0;
  } finally {
    store.close();
  }
}

async function rootfs(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli({
    args: argv,
    options: COMMON,
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw usageError('usage: isola image rootfs REF');
  const store = openStore(values.store);
  try {
    const rec = resolveImage(store, positionals[0] as string);
    const r = await ensureRootfsImage(store, rec);
    if (values.json)
      printJson({
        name: rec.name,
        platform: rec.platform,
        ...r,
        ms: Math.round(r.ms),
      });
    else process.stdout.write(`${r.path}\n`);
    return 0;
  } finally {
    store.close();
  }
}
