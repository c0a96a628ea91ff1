// Framing of the host<->guest channel: a byte stream (virtio-serial, vsock or a pipe) carries
// frames of the form
//
//   magic "IS" (2 bytes) | total length u32 BE | header length u32 BE | JSON header | binary body
//
// where total length counts header length field + header + body. The JSON header is a message
// (see messages.ts); the body carries raw bytes (stdio data, file contents) so nothing is
// base64-encoded. The magic lets a reader resynchronise after garbage: the decoder reports a
// protocol error and scans forward for the next magic instead of giving up on the stream.
// Pure code, no I/O: imported by the host and by the guest agent.

export const FRAME_MAGIC = 0x4953; // "IS"
/** Prefix before the payload: magic (2) + total length (4). */
export const FRAME_PREFIX_BYTES = 6;
/**
 * Largest payload (header length field + header + body) accepted. 1 MiB keeps the agent's memory
 * bounded per frame while letting stdio and file chunks travel in few frames; callers split larger
 * data into chunks of FRAME_BODY_CHUNK.
 */
export const MAX_FRAME_BYTES = 1024 * 1024;
/** Largest JSON header: headers are small control messages, never data. */
export const MAX_HEADER_BYTES = 64 * 1024;
/** Size of the data chunks streams are split into, leaving room for the header. */
export const FRAME_BODY_CHUNK = 512 * 1024;

export interface RawFrame {
  header: unknown;
  body: Buffer;
}

export type DecodeEvent =
  | { kind: 'frame'; frame: RawFrame }
  | { kind: 'error'; code: 'E_AGENT_PROTOCOL' | 'E_FRAME_TOO_LARGE'; message: string };

export function encodeFrame(header: unknown, body?: Uint8Array): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const bodyLen = body?.length ?? 0;
  const payload = 4 + json.length + bodyLen;
  if (json.length > MAX_HEADER_BYTES || payload > MAX_FRAME_BYTES) {
    throw new RangeError(`frame of ${payload} bytes exceeds the limit of ${MAX_FRAME_BYTES}`);
  }
  const buf = Buffer.allocUnsafe(FRAME_PREFIX_BYTES + payload);
  buf.writeUInt16BE(FRAME_MAGIC, 0);
  buf.writeUInt32BE(payload, 2);
  buf.writeUInt32BE(json.length, 6);
  json.copy(buf, 10);
  if (body && bodyLen > 0)
    Buffer.from(body.buffer, body.byteOffset, bodyLen).copy(buf, 10 + json.length);
  return buf;
}

/**
 * Incremental decoder: push() bytes as they arrive, get back frames and protocol errors in order.
 * It never throws on input and never buffers more than MAX_FRAME_BYTES + prefix.
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  /** True while skipping garbage; one error is reported per garbage run, not per byte. */
  private resyncing = false;

  push(chunk: Uint8Array): DecodeEvent[] {
    this.buf = this.buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buf, chunk]);
    const out: DecodeEvent[] = [];
    for (;;) {
      if (this.buf.length < 2) break;
      if (this.buf.readUInt16BE(0) !== FRAME_MAGIC) {
        this.skipToMagic(out, 'bad frame magic');
        continue;
      }
      if (this.buf.length < FRAME_PREFIX_BYTES) break;
      const payload = this.buf.readUInt32BE(2);
      if (payload > MAX_FRAME_BYTES) {
        out.push({
          kind: 'error',
          code: 'E_FRAME_TOO_LARGE',
          message: `frame of ${payload} bytes exceeds the limit of ${MAX_FRAME_BYTES}`,
        });
        this.resyncing = true;
        this.buf = this.buf.subarray(2);
        this.skipToMagic(out, '', 0);
        continue;
      }
      if (payload < 4) {
        this.protocolError(
          out,
          `frame payload of ${payload} bytes is shorter than its header length`,
        );
        continue;
      }
      if (this.buf.length < FRAME_PREFIX_BYTES + payload) break;
      const frameBytes = this.buf.subarray(FRAME_PREFIX_BYTES, FRAME_PREFIX_BYTES + payload);
      this.buf = this.buf.subarray(FRAME_PREFIX_BYTES + payload);
      this.resyncing = false;
      const headerLen = frameBytes.readUInt32BE(0);
      if (headerLen > payload - 4 || headerLen > MAX_HEADER_BYTES) {
        out.push({
          kind: 'error',
          code: 'E_AGENT_PROTOCOL',
          message: `bad header length ${headerLen}`,
        });
        continue;
      }
      let header: unknown;
      try {
        header = JSON.parse(frameBytes.subarray(4, 4 + headerLen).toString('utf8'));
      } catch {
        out.push({
          kind: 'error',
          code: 'E_AGENT_PROTOCOL',
          message: 'frame header is not valid JSON',
        });
        continue;
      }
      // Copy the body out so the frame does not pin the (possibly large) receive buffer.
      out.push({
        kind: 'frame',
        frame: { header, body: Buffer.from(frameBytes.subarray(4 + headerLen)) },
      });
    }
    if (this.buf.length === 0) this.buf = Buffer.alloc(0);
    return out;
  }

  /** Bytes currently buffered (for tests and memory bounds). */
  get buffered(): number {
    return this.buf.length;
  }

  private protocolError(out: DecodeEvent[], message: string): void {
    this.buf = this.buf.subarray(2);
    this.skipToMagic(out, message, 0);
  }

  /**
   * Drop bytes up to the next "IS" at or after `from`: 1 when the buffer starts with bytes that
   * are not a magic, 0 when a bad frame's magic was just dropped (the next frame may start right
   * after it: "IS" then "IS..." must not lose the second; the fuzzer found that, src/fuzz/).
   */
  private skipToMagic(out: DecodeEvent[], message: string, from = 1): void {
    if (!this.resyncing && message) {
      out.push({ kind: 'error', code: 'E_AGENT_PROTOCOL', message });
    }
    this.resyncing = true;
    let i = this.buf.indexOf(0x49, from);
    while (i !== -1 && i + 1 < this.buf.length && this.buf[i + 1] !== 0x53) {
      i = this.buf.indexOf(0x49, i + 1);
    }
    if (i === -1) {
      // Keep a trailing "I" in case the magic is split across chunks.
      this.buf =
        this.buf.at(-1) === 0x49 ? this.buf.subarray(this.buf.length - 1) : Buffer.alloc(0);
    } else {
      this.buf = this.buf.subarray(i);
    }
  }
}
