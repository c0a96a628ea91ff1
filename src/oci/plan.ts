// The container plan: everything the in-guest container init (guest-assets/cinit.c) needs to
// create one container process the way runc's init does (namespaces, mounts, pivot_root,
// hostname, cgroup, rlimits, capabilities, no_new_privs, user, cwd, env, args). The host builds
// it from an OCI config.json (config.ts), encodes it with encodePlan and writes it into the
// guest; cinit reads it. Pure data and a pure encoder.
//
// Wire format: UTF-8 text, one directive per line, fields separated by TAB; inside a field the
// characters backslash, TAB and newline are written as \\, \t and \n. Directives (in order of
// appearance where order matters: mounts, masked/readonly paths, env, args):
//   rootfs <dir>                 container root, a directory already present in the guest
//   readonly 1                   remount the root read-only after the mounts
//   hostname <name>
//   ns <mount|uts|ipc|pid|cgroup|net>   namespaces to create (create mode only)
//   mount <source> <dest> <fstype> <options>   options: comma list of mount(8) flags and data
//   masked <path>                maskedPaths (bind /dev/null over files, tmpfs ro over dirs)
//   rdonly <path>                readonlyPaths (bind remount read-only)
//   cgroup <dir>                 cgroup v2 directory to create and join before the fork
//   cglimit <file> <value>       a limit written in that directory (memory.max, pids.max, cpu.max)
//   sysctl <key> <value>
//   rlimit <RLIMIT_NAME> <soft> <hard>     soft/hard: decimal or "unlimited"
//   cap <bounding|effective|permitted|inheritable|ambient> <CAP_A,CAP_B,...>   may be empty
//   nnp 1                        no_new_privs
//   uid <n> / gid <n> / groups <a,b,c>
//   umask <octal>
//   cwd <dir>
//   terminal <rows> <cols>       give the process a pty (its master relayed on cinit's stdio)
//   env <K=V>                    repeated
//   arg <value>                  repeated; argv[0] is resolved with the container's PATH

export type Namespace = 'mount' | 'uts' | 'ipc' | 'pid' | 'cgroup' | 'net';
export type CapSet = 'bounding' | 'effective' | 'permitted' | 'inheritable' | 'ambient';

export interface PlanMount {
  source: string;
  destination: string;
  type: string;
  options: string[];
}

export interface PlanProcess {
  args: string[];
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  additionalGids: number[];
  umask?: number;
  rlimits: Array<{ type: string; soft: number | 'unlimited'; hard: number | 'unlimited' }>;
  /** Absent set: left as inherited (root's full set in the guest). */
  capabilities: Partial<Record<CapSet, string[]>>;
  noNewPrivileges: boolean;
  /** A pty for the process (process.terminal), of this size. */
  terminal?: { rows: number; cols: number };
}

export interface Plan {
  rootfs: string;
  readonlyRoot: boolean;
  hostname?: string;
  namespaces: Namespace[];
  mounts: PlanMount[];
  maskedPaths: string[];
  readonlyPaths: string[];
  cgroup?: { dir: string; limits: Array<[file: string, value: string]> };
  sysctls: Array<[key: string, value: string]>;
  process: PlanProcess;
}
