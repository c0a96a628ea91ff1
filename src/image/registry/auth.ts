// Registry authentication, the pure parts: WWW-Authenticate challenges (RFC 7235 with the
// Docker token extensions), and where credentials come from (explicit, or the auth files that
// Docker, Podman and skopeo write).

import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DOCKER_HUB } from '../reference.js';

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

export interface Credentials {
  username: string;
  password: string;
}

/**
 * Parse a WWW-Authenticate value into its challenges, e.g.
 * `Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"`.
 * Scheme names are lowercased; parameter names too. Tolerant of spacing and unknown schemes.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipWs = () => {
    while (i < n && (header[i] === ' ' || header[i] === '\t' || header[i] === ',')) i++;
  };
  const token = () => {
    const m = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/.exec(header.slice(i));
    if (!m) return '';
    i += m[0].length;
    return m[0];
  };
  while (i < n) {
    skipWs();
    const scheme = token();
    if (!scheme) {
      i++;
      continue;
    }
    const ch: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(ch);
    // Parameters: name=value pairs separated by commas, until the next bare token (a scheme).
    for (;;) {
      const save = i;
      skipWs();
      const name = token();
      let j = i;
      while (j < n && header[j] === ' ') j++;
      if (!name || header[j] !== '=') {
        i = save;
        break;
      }
      i = j + 1;
      while (i < n && header[i] === ' ') i++;
      let value = '';
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i];
          i++;
        }
        i++;
      } else {
        const m = /^[^,\s]*/.exec(header.slice(i));
        value = m ? m[0] : '';
        i += value.length;
      }
      ch.params[name.toLowerCase()] = value;
    }
  }
  return out;
}

/** `user:password` as given on the command line. */
export function parseCredentials(s: string): Credentials {
  const c = s.indexOf(':');
  if (c <= 0) throw new Error('credentials must be USER:PASSWORD');
  return { username: s.slice(0, c), password: s.slice(c + 1) };
}

/** Auth files, most specific first: ISOLA_AUTH_FILE, Podman's, then Docker's. */
export function authFiles(env: NodeJS.ProcessEnv = process.env): string[] {
  const files: string[] = [];
  if (env.ISOLA_AUTH_FILE) files.push(env.ISOLA_AUTH_FILE);
  if (env.REGISTRY_AUTH_FILE) files.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) files.push(path.join(env.XDG_RUNTIME_DIR, 'containers/auth.json'));
  files.push(path.join(env.DOCKER_CONFIG ?? path.join(os.homedir(), '.docker'), 'config.json'));
  return files;
}

/** Look up stored credentials for a registry in `{ "auths": { host: { "auth": base64(user:pass) } } }`. */
export function credentialsFromAuthFile(
  registry: string,
  files: string[] = authFiles(),
): Credentials | undefined {
  const keys =
    registry === DOCKER_HUB
      ? ['docker.io', 'https://index.docker.io/v1/', 'index.docker.io', 'registry-1.docker.io']
      : [registry, `https://${registry}`, `http://${registry}`];
  for (const f of files) {
    let doc: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
    try {
      doc = JSON.parse(readFileSync(f, 'utf8'));
    } catch {
      continue;
    }
    for (const k of keys) {
      const e = doc.auths?.[k] ?? doc.auths?.[`${k}/`];
      if (!e) continue;
      if (e.username && e.password) return { username: e.username, password: e.password };
      if (e.auth) {
        try {
          return parseCredentials(Buffer.from(e.auth, 'base64').toString('utf8'));
        } catch {}
      }
    }
  }
  return undefined;
}
