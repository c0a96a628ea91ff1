// isola-runtime features: what this runtime supports, in the runtime-spec features format.
import { OCI_VERSION_SUPPORTED } from '../config.js';

export async function features(): Promise<number> {
  const doc = {
    ociVersionMin: '1.0.0',
    ociVersionMax: OCI_VERSION_SUPPORTED,
    hooks: [
      'prestart',
      'createRuntime',
      'createContainer',
      'startContainer',
      'poststart',
      'poststop',
    ],
    mountOptions: [
      'ro',
      'rw',
      'bind',
      'rbind',
      'nosuid',
      'nodev',
      'noexec',
      'relatime',
      'private',
      'rprivate',
    ],
    linux: {
      namespaces: ['pid', 'mount', 'ipc', 'uts', 'cgroup', 'network'],
      capabilities: ['CAP_CHOWN', 'CAP_KILL', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_ADMIN', '...'],
      cgroup: { v1: false, v2: true, systemd: false },
      seccomp: { enabled: false },
      apparmor: { enabled: false },
      selinux: { enabled: false },
    },
    annotations: { 'io.isola.runtime.isolation': 'microvm (own kernel per container)' },
  };
  process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
  return 0;
}
