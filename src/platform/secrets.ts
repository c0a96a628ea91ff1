// Secrets at rest: AES-256-GCM under a master key that lives outside the database
// (DATA_DIR/master.key, mode 0600, made on first start, or ISOLA_MASTER_KEY as 64 hex digits).
// The database holds only ciphertext; a stolen database without the key reveals nothing.
// Each value is bound to its function and name (additional data), so ciphertexts cannot be
// swapped between functions.

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { IsolaError } from '../errors.js';

const IV_BYTES = 12;
const TAG_BYTES = 16;

export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  static load(dataDir: string, env: NodeJS.ProcessEnv = process.env): SecretBox {
    const fromEnv = env.ISOLA_MASTER_KEY;
    if (fromEnv) {
      if (!/^[0-9a-f]{64}$/i.test(fromEnv)) {
        throw new IsolaError('E_INVALID_ARGUMENT', 'ISOLA_MASTER_KEY must be 64 hex digits');
      }
      return new SecretBox(Buffer.from(fromEnv, 'hex'));
    }
    const file = path.join(dataDir, 'master.key');
    if (!existsSync(file)) {
      writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
    }
    const hex = readFileSync(file, 'utf8').trim();
    if (!/^[0-9a-f]{64}$/i.test(hex)) {
      throw new IsolaError('E_INVALID_ARGUMENT', `${file} does not hold a 256-bit hex key`);
    }
    return new SecretBox(Buffer.from(hex, 'hex'));
  }

  static fromKey(key: Buffer): SecretBox {
    return new SecretBox(key);
  }

  seal(plain: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const c = createCipheriv('aes-256-gcm', this.key, iv);
    c.setAAD(Buffer.from(context));
    const data = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
    return Buffer.concat([iv, c.getAuthTag(), data]).toString('base64');
  }

  open(sealed: string, context: string): string {
    const buf = Buffer.from(sealed, 'base64');
    try {
      // A truncated value would otherwise pass a short IV or tag, and GCM accepts tags of as
      // little as 4 bytes: insist on the full 16.
      if (buf.length < IV_BYTES + TAG_BYTES) throw new Error('sealed value is too short');
      const d = createDecipheriv('aes-256-gcm', this.key, buf.subarray(0, IV_BYTES), {
        authTagLength: TAG_BYTES,
      });
      d.setAAD(Buffer.from(context));
      d.setAuthTag(buf.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      return Buffer.concat([d.update(buf.subarray(IV_BYTES + TAG_BYTES)), d.final()]).toString(
        'utf8',
      );
    } catch {
      throw new IsolaError(
        'E_INTERNAL',
        'a secret does not decrypt with this master key (was master.key replaced?)',
      );
    }
  }
}

/** Replace every secret value found in a text (logs, error messages) with a marker. */
export function redact(text: string, values: readonly string[]): string {
  let out = text;
  for (const v of values) {
    // Very short values would redact ordinary words; they are refused at creation instead.
    if (v.length >= 4 && out.includes(v)) out = out.split(v).join('[REDACTED]');
  }
  return out;
}
