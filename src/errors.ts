// The one error type of isola and the registry of its stable codes.
// Every failure that crosses a module boundary is an IsolaError; unknown throws are normalised
// with `toIsolaError` at the edges (CLI, HTTP). The mapping to CLI exit codes (and later HTTP
// status) lives here and only here. docs/errors.md lists the same codes; a test keeps them in step.

export const ERROR_CODES = {
  E_INVALID_SPEC: { exit: 2, http: 400, doc: 'A sandbox spec or config failed validation.' },
  E_INVALID_ARGUMENT: {
    exit: 2,
    http: 400,
    doc: 'A command-line argument or API input is invalid.',
  },
  E_ASSETS_MISSING: {
    exit: 3,
    http: 500,
    doc: 'Guest assets (kernel, initramfs, guest image) are not built or a file is missing.',
  },
  E_ASSETS_BUILD: { exit: 3, http: 500, doc: 'Building the guest assets failed.' },
  E_QEMU_NOT_FOUND: { exit: 3, http: 500, doc: 'The QEMU binary is not installed.' },
  E_QEMU_SPAWN: { exit: 4, http: 500, doc: 'The QEMU process could not be started.' },
  E_QEMU_EXITED: { exit: 4, http: 500, doc: 'The QEMU process exited unexpectedly.' },
  E_QMP: { exit: 4, http: 500, doc: 'A QMP command failed or the QMP channel broke.' },
  E_SANDBOX_BOOT_TIMEOUT: {
    exit: 4,
    http: 504,
    doc: 'The guest did not reach the agent in time, after all watchdog retries.',
  },
  E_SANDBOX_INVALID_STATE: {
    exit: 4,
    http: 409,
    doc: 'The operation is not legal in the sandbox lifecycle state.',
  },
  E_SANDBOX_NOT_FOUND: { exit: 4, http: 404, doc: 'No sandbox with that id.' },
  E_SNAPSHOT: {
    exit: 4,
    http: 500,
    doc: 'Taking a snapshot failed, or a snapshot folder is missing or damaged.',
  },
  E_SNAPSHOT_STALE: {
    exit: 4,
    http: 409,
    doc: 'The snapshot was made from other guest assets, agent, QEMU or accelerator; it is never restored.',
  },
  E_RESTORE: {
    exit: 4,
    http: 500,
    doc: 'Restoring a sandbox from a snapshot failed (the VMM did not load the state or the guest did not answer).',
  },
  E_CGROUP: { exit: 4, http: 500, doc: 'Creating or configuring the sandbox cgroup failed.' },
  E_NETWORK: {
    exit: 4,
    http: 500,
    doc: "Setting up a sandbox's network (namespace, uplink, tap device, egress rules) failed.",
  },
  E_JAIL: {
    exit: 4,
    http: 500,
    doc: 'The VMM could not be confined (jail helper missing, namespaces or privilege drop failed).',
  },
  E_AGENT_DISCONNECTED: {
    exit: 4,
    http: 502,
    doc: 'The guest agent channel closed while a request was pending.',
  },
  E_AGENT_TIMEOUT: { exit: 4, http: 504, doc: 'The guest agent did not answer in time.' },
  E_AGENT_PROTOCOL: {
    exit: 4,
    http: 502,
    doc: 'A frame violated the host/guest protocol (bad magic, size, JSON or shape).',
  },
  E_AGENT_VERSION: {
    exit: 4,
    http: 502,
    doc: 'The guest agent speaks a protocol version the host does not.',
  },
  E_FRAME_TOO_LARGE: { exit: 4, http: 413, doc: 'A protocol frame exceeds the maximum size.' },
  E_UNKNOWN_OP: { exit: 4, http: 400, doc: 'The agent does not know the requested operation.' },
  E_EXEC_FAILED: {
    exit: 126,
    http: 400,
    doc: 'The process could not be started in the guest (no such file, permission).',
  },
  E_EXEC_NOT_FOUND: { exit: 4, http: 404, doc: 'No process with that exec id in the guest.' },
  E_GUEST_CONNECT: {
    exit: 4,
    http: 502,
    doc: 'A connection to a port inside the guest failed (nothing listening there, or it closed).',
  },
  E_GUEST_IO: { exit: 4, http: 500, doc: 'A file operation inside the guest failed.' },
  E_ACCEL_PROBE: { exit: 4, http: 500, doc: 'The accelerator probe could not run.' },
  E_OCI_INVALID_CONFIG: {
    exit: 2,
    http: 400,
    doc: 'An OCI bundle config.json (or exec process.json) is invalid, or names a missing rootfs.',
  },
  E_OCI_UNSUPPORTED: {
    exit: 2,
    http: 400,
    doc: 'The OCI config asks for something isola-runtime does not support (see docs/spec-conformance.md).',
  },
  E_OCI_EXISTS: { exit: 1, http: 409, doc: 'A container with that id already exists.' },
  E_OCI_NOT_FOUND: { exit: 1, http: 404, doc: 'No container with that id.' },
  E_OCI_STATE: {
    exit: 1,
    http: 409,
    doc: 'The operation is illegal in the container state (OCI lifecycle).',
  },
  E_OCI_HOOK: { exit: 1, http: 500, doc: 'A hook from config.json failed or timed out.' },
  E_IMAGE_REFERENCE: {
    exit: 2,
    http: 400,
    doc: 'An image reference does not parse (name[:tag][@digest], lowercase repository, valid digest).',
  },
  E_IMAGE_NOT_FOUND: {
    exit: 5,
    http: 404,
    doc: 'No such image in the store, or the registry has no such repository, tag or digest.',
  },
  E_IMAGE_DIGEST_MISMATCH: {
    exit: 5,
    http: 502,
    doc: 'A blob or manifest does not match its digest (or declared size); nothing was stored.',
  },
  E_IMAGE_MEDIA_TYPE: {
    exit: 5,
    http: 415,
    doc: 'A manifest, config or layer has a media type isola does not know.',
  },
  E_IMAGE_PLATFORM: {
    exit: 5,
    http: 404,
    doc: 'The image index has no manifest for the requested platform.',
  },
  E_IMAGE_MANIFEST: {
    exit: 5,
    http: 502,
    doc: 'A manifest, index or image config is malformed.',
  },
  E_IMAGE_UNSAFE_LAYER: {
    exit: 5,
    http: 422,
    doc: 'A layer entry would write outside the root (.., absolute path, escaping link); nothing was written outside.',
  },
  E_IMAGE_BAD_LAYER: {
    exit: 5,
    http: 422,
    doc: 'A layer is not a valid (compressed) tar archive.',
  },
  E_IMAGE_ARCHIVE: {
    exit: 5,
    http: 400,
    doc: 'An import archive is neither a docker-save archive nor an OCI image layout, or is damaged.',
  },
  E_IMAGE_IN_USE: { exit: 5, http: 409, doc: 'The image is in use and cannot be removed.' },
  E_REGISTRY_AUTH: {
    exit: 6,
    http: 401,
    doc: 'The registry refused the credentials (or anonymous access) for this repository.',
  },
  E_REGISTRY_UNAVAILABLE: {
    exit: 6,
    http: 502,
    doc: 'The registry could not be reached or kept failing (5xx, broken connections) after retries.',
  },
  E_REGISTRY_PROTOCOL: {
    exit: 6,
    http: 502,
    doc: 'The registry answered something the distribution API does not allow.',
  },
  E_REGISTRY_INSECURE: {
    exit: 6,
    http: 400,
    doc: 'Plain http to a registry that is neither on loopback nor in the insecure list.',
  },
  E_STORE_NO_SPACE: {
    exit: 7,
    http: 507,
    doc: 'The image store ran out of disk space; partial data was removed and the store is consistent.',
  },
  E_STORE_IO: { exit: 7, http: 500, doc: 'Reading or writing the image store failed.' },
  E_UNAUTHORIZED: {
    exit: 8,
    http: 401,
    doc: 'No API key, an unknown key or a revoked key (Authorization: Bearer KEY).',
  },
  E_FORBIDDEN: {
    exit: 8,
    http: 403,
    doc: 'The key may not do this (a tenant key on an admin route).',
  },
  E_NOT_FOUND: {
    exit: 8,
    http: 404,
    doc: 'No such tenant, key, function, version or alias (or it belongs to another tenant).',
  },
  E_CONFLICT: { exit: 8, http: 409, doc: 'A resource with that name already exists.' },
  E_PAYLOAD_TOO_LARGE: {
    exit: 8,
    http: 413,
    doc: 'The request body is over the limit (6 MiB for invocations, more for bundle uploads).',
  },
  E_THROTTLED: {
    exit: 8,
    http: 429,
    doc: 'A concurrency, instance or memory limit is reached; retry after the Retry-After seconds.',
  },
  E_RATE_LIMITED: {
    exit: 8,
    http: 429,
    doc: 'The API key is over its request rate, or its address over its rate of failed authentications; retry after the Retry-After seconds.',
  },
  E_URI_TOO_LONG: {
    exit: 8,
    http: 414,
    doc: 'The request URL (path and query) is over the limit (8 KiB).',
  },
  E_HEADERS_TOO_LARGE: {
    exit: 8,
    http: 431,
    doc: 'The request line and headers together are over the limit (64 KiB).',
  },
  E_JSON_TOO_DEEP: {
    exit: 8,
    http: 400,
    doc: 'A JSON body nests arrays and objects deeper than the limit (64 levels).',
  },
  E_BAD_BUNDLE: {
    exit: 8,
    http: 400,
    doc: 'A function bundle is not a directory, zip or tar with package.json and its handler file.',
  },
  E_FUNCTION_RUNTIME: { exit: 8, http: 400, doc: 'Unknown function runtime.' },
  E_SERVER_UNREACHABLE: {
    exit: 8,
    http: 502,
    doc: 'The CLI could not reach the isola server (ISOLA_URL or --url).',
  },
  E_SHUTTING_DOWN: {
    exit: 8,
    http: 503,
    doc: 'The server is shutting down and takes no new invocations.',
  },
  E_DB: { exit: 8, http: 500, doc: 'The control plane database failed (SQLite or PostgreSQL).' },
  E_FUNCTION_ERROR: {
    exit: 9,
    http: 500,
    doc: 'The handler threw or rejected; the error carries its type, message and stack.',
  },
  E_FUNCTION_INIT: {
    exit: 9,
    http: 502,
    doc: 'The function could not be loaded (module error, no handler export, server on :8080 not up).',
  },
  E_FUNCTION_TIMEOUT: {
    exit: 9,
    http: 504,
    doc: 'The invocation ran past the function timeout; its instance was replaced.',
  },
  E_FUNCTION_OOM: {
    exit: 9,
    http: 502,
    doc: 'The function ran out of memory; its instance was replaced.',
  },
  E_FUNCTION_CRASHED: {
    exit: 9,
    http: 502,
    doc: 'The function process exited (process.exit, a fatal signal) during the invocation; its instance was replaced.',
  },
  E_FUNCTION_UNAVAILABLE: {
    exit: 9,
    http: 503,
    doc: 'No instance could be started for the function (sandbox boot failed).',
  },
  E_INTERNAL: { exit: 70, http: 500, doc: 'An unexpected internal error (a bug).' },
} as const satisfies Record<string, { exit: number; http: number; doc: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class IsolaError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'IsolaError';
    this.code = code;
    this.details = opts.details;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exit;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === 'string' && Object.hasOwn(ERROR_CODES, s);
}

/** Normalise anything thrown into an IsolaError (unknown throws become E_INTERNAL). */
export function toIsolaError(err: unknown): IsolaError {
  if (err instanceof IsolaError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new IsolaError('E_INTERNAL', message, { cause: err });
}
