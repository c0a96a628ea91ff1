// isola-jail: starts one VMM (QEMU) process confined, in the manner of Firecracker's jailer.
//
//   isola-jail [options] -- /usr/bin/qemu-system-x86_64 ARGS...
//
// As root, in this order:
//   1. ask for SIGKILL when the parent (isola) dies (--pdeathsig);
//   2. join the sandbox's cgroups (--cgroup-procs FILE, repeatable), so everything after is
//      confined and accounted;
//   3. with --ns, unshare new PID, IPC and UTS namespaces (and a mount namespace with --root),
//      and with --netns a new network namespace, or join the one at --netns-path (a container's
//      network namespace made by its engine); without them it only supervises (non-root);
//   4. fork: the child is PID 1 of the new PID namespace and becomes the VMM; this process stays
//      its parent, prints "ISOLA_QEMU_PID <pid>" on stderr, forwards TERM/INT/HUP as SIGKILL,
//      reaps it and exits with its status (128+signal when killed);
//   5. child: build a minimal root on a tmpfs mounted at --root DIR, holding only the paths
//      named with --ro, --rw and --dev (bound at their own absolute paths, so the VMM's
//      arguments stay valid); read-only binds are nosuid,nodev,noexec except the VMM binary's
//      own folders given with --ro-exec;
//   6. with --tap NAME, create that tap device in the new network namespace and hand it to the
//      VMM as fd 3; only now does the parent report the pid (the host then configures the
//      namespace from outside, /proc/<pid>/ns/net, while the VMM starts);
//      with --memfd-from PATH, open that (a sealed memfd, /proc/<holder>/fd/<n>) as fd 4 and
//      mount a /proc of the jail's own processes, so the VMM finds it as /proc/self/fd/4;
//   7. pivot_root into the new root and detach the old one; the root is remounted read-only;
//   8. drop to --uid/--gid (no supplementary groups except --group), set no_new_privs, so the
//      VMM holds no capability and can gain none; install a seccomp filter that refuses system
//      calls a VMM never needs (ptrace, BPF, io_uring, namespaces, mounts, ...); exec it.
// Nothing is mounted outside the new mount namespace, so nothing is left when the VMM dies.
// Exit codes of the jail itself: 97 cgroup join failed, 99 set-up failed (stderr says).

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ITEMS 64

enum bind_kind { BIND_RO, BIND_RO_EXEC, BIND_RW, BIND_DEV };

struct bind {
  const char *path;
  enum bind_kind kind;
};

static struct bind binds[MAX_ITEMS];
static int nbinds;
static const char *cgroup_procs[MAX_ITEMS];
static int ncgroups;
static gid_t extra_groups[8];
static int ngroups;
static pid_t child_pid = -1;

static void die(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("isola-jail: ", stderr);
  vfprintf(stderr, fmt, ap);
  if (errno) fprintf(stderr, ": %s", strerror(errno));
  fputc('\n', stderr);
  va_end(ap);
  _exit(code);
}

static long number(const char *s, const char *what) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || !end || *end || v < 0) {
    errno = 0;
    die(99, "bad %s '%s'", what, s);
  }
  return v;
}

static void add_bind(const char *p, enum bind_kind kind) {
  if (nbinds >= MAX_ITEMS) {
    errno = 0;
    die(99, "too many binds");
  }
  if (p[0] != '/') {
    errno = 0;
    die(99, "bind path must be absolute: %s", p);
  }
  binds[nbinds].path = p;
  binds[nbinds].kind = kind;
  nbinds++;
}

// mkdir -p of `dir` (absolute), mode 0755.
static void mkdirs(const char *dir) {
  char buf[4096];
  if (strlen(dir) >= sizeof buf) {
    errno = ENAMETOOLONG;
    die(99, "path too long");
  }
  strcpy(buf, dir);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0755) && errno != EEXIST) die(99, "mkdir %s", buf);
    *p = '/';
  }
  if (mkdir(buf, 0755) && errno != EEXIST) die(99, "mkdir %s", buf);
  errno = 0;
}

static void bind_into(const char *root, const struct bind *b) {
  char target[4096];
  struct stat st;
  if (stat(b->path, &st)) die(99, "stat %s", b->path);
  if (snprintf(target, sizeof target, "%s%s", root, b->path) >= (int)sizeof target) {
    errno = ENAMETOOLONG;
    die(99, "path too long");
  }
  if (S_ISDIR(st.st_mode)) {
    mkdirs(target);
  } else {
    char parent[4096];
    strcpy(parent, target);
    char *slash = strrchr(parent, '/');
    *slash = '\0';
    mkdirs(parent);
    int fd = open(target, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) die(99, "create mount point %s", target);
    close(fd);
  }
  if (mount(b->path, target, NULL, MS_BIND | MS_REC, NULL)) die(99, "bind %s", b->path);
  unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID;
  switch (b->kind) {
    case BIND_RO:
      flags |= MS_RDONLY | MS_NODEV | MS_NOEXEC;
      break;
    case BIND_RO_EXEC:
      flags |= MS_RDONLY | MS_NODEV;
      break;
    case BIND_RW:
      flags |= MS_NODEV | MS_NOEXEC;
      break;
    case BIND_DEV:
      flags |= MS_NOEXEC;
      break;
  }
  if (mount(NULL, target, NULL, flags, NULL)) die(99, "remount %s", b->path);
}

// System calls a VMM never needs and an attacker who took one over would want: other processes'
// memory, kernel attack surface (BPF, io_uring, which bypasses seccomp for the calls it issues,
// userfaultfd, perf, keyrings, module loading), and ways out of the jail (namespaces, mounts).
// They fail with EPERM. QEMU's own filter (-sandbox) covers privilege changes and process
// creation; this one is installed first and stays, whatever QEMU does.
static const int denied_syscalls[] = {
    SYS_ptrace,         SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp,
    SYS_bpf,            SYS_userfaultfd,      SYS_perf_event_open,   SYS_io_uring_setup,
    SYS_io_uring_enter, SYS_io_uring_register, SYS_keyctl,           SYS_add_key,
    SYS_request_key,    SYS_unshare,          SYS_setns,             SYS_mount,
    SYS_umount2,        SYS_pivot_root,       SYS_chroot,            SYS_open_by_handle_at,
    SYS_name_to_handle_at, SYS_init_module,   SYS_finit_module,      SYS_delete_module,
    SYS_kexec_load,     SYS_kexec_file_load,  SYS_reboot,            SYS_swapon,
    SYS_swapoff,        SYS_acct,             SYS_quotactl,          SYS_lookup_dcookie,
    SYS_fsopen,         SYS_fsmount,          SYS_move_mount,        SYS_open_tree,
};

static void install_deny_filter(void) {
  enum { N = sizeof denied_syscalls / sizeof denied_syscalls[0] };
  struct sock_filter f[6 + 2 * N + 1];
  unsigned k = 0;
  // Only x86_64 system calls, and not the x32 ABI (same numbers with bit 30 set).
  f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
  f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
  f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
  f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
  f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1);
  f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA));
  for (unsigned i = 0; i < N; i++) {
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)denied_syscalls[i], 0, 1);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA));
  }
  f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  struct sock_fprog prog = {.len = (unsigned short)k, .filter = f};
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) die(99, "seccomp");
}

static void forward_kill(int sig) {
  (void)sig;
  if (child_pid > 0) kill(child_pid, SIGKILL);
}

static void usage(void) {
  fputs(
      "usage: isola-jail [--pdeathsig] [--cgroup-procs FILE]... [--ns] [--netns | --netns-path P]\n"
      "                  [--root DIR]\n"
      "                  [--ro PATH]... [--ro-exec PATH]... [--rw PATH]... [--dev PATH]...\n"
      "                  [--uid N --gid N [--group N]...] [--tap NAME] [--memfd-from PATH]\n"
      "                  -- VMM ARGS...\n",
      stderr);
  _exit(99);
}

int main(int argc, char **argv) {
  int pdeathsig = 0, ns = 0, netns = 0;
  const char *tap = NULL;
  const char *netns_path = NULL;
  const char *memfd_from = NULL;
  int tap_fd = -1, mem_fd = -1;
  long uid = -1, gid = -1;
  const char *root = NULL;
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--")) {
      i++;
      break;
    }
    if (!strcmp(a, "--pdeathsig")) pdeathsig = 1;
    else if (!strcmp(a, "--ns")) ns = 1;
    else if (!strcmp(a, "--netns")) netns = 1;
    else if (i + 1 >= argc) usage();
    else if (!strcmp(a, "--cgroup-procs")) {
      if (ncgroups >= MAX_ITEMS) usage();
      cgroup_procs[ncgroups++] = argv[++i];
    } else if (!strcmp(a, "--root")) root = argv[++i];
    else if (!strcmp(a, "--tap")) tap = argv[++i];
    else if (!strcmp(a, "--netns-path")) netns_path = argv[++i];
    else if (!strcmp(a, "--memfd-from")) memfd_from = argv[++i];
    else if (!strcmp(a, "--ro")) add_bind(argv[++i], BIND_RO);
    else if (!strcmp(a, "--ro-exec")) add_bind(argv[++i], BIND_RO_EXEC);
    else if (!strcmp(a, "--rw")) add_bind(argv[++i], BIND_RW);
    else if (!strcmp(a, "--dev")) add_bind(argv[++i], BIND_DEV);
    else if (!strcmp(a, "--uid")) uid = number(argv[++i], "uid");
    else if (!strcmp(a, "--gid")) gid = number(argv[++i], "gid");
    else if (!strcmp(a, "--group")) {
      if (ngroups >= 8) usage();
      extra_groups[ngroups++] = (gid_t)number(argv[++i], "group");
    } else usage();
  }
  if (i >= argc) usage();
  char **vmm = &argv[i];
  if ((uid < 0) != (gid < 0) || uid == 0 || gid == 0) {
    errno = 0;
    die(99, "--uid and --gid go together and must not be 0");
  }

  pid_t parent = getppid();
  if (pdeathsig) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL)) die(99, "prctl");
    if (getppid() != parent) _exit(99);  // the parent died before prctl
  }
  signal(SIGPIPE, SIG_IGN);

  char pid_text[32];
  snprintf(pid_text, sizeof pid_text, "%d\n", getpid());
  for (int c = 0; c < ncgroups; c++) {
    int fd = open(cgroup_procs[c], O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, pid_text, strlen(pid_text)) < 0) die(97, "join %s", cgroup_procs[c]);
    close(fd);
  }

  int jailed = root != NULL;
  if (jailed && !ns) {
    errno = 0;
    die(99, "--root needs --ns");
  }
  if (netns_path) {
    // An existing network namespace (a container's, made by its engine's CNI): join it.
    if (netns) {
      errno = 0;
      die(99, "--netns and --netns-path exclude each other");
    }
    int nfd = open(netns_path, O_RDONLY | O_CLOEXEC);
    if (nfd < 0 || setns(nfd, CLONE_NEWNET)) die(99, "join the network namespace %s", netns_path);
    close(nfd);
  }
  int flags = (ns ? CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS : 0) |
              (jailed ? CLONE_NEWNS : 0) | (netns ? CLONE_NEWNET : 0);
  if (flags && unshare(flags)) die(99, "unshare");

  // Blocked until the forwarding handlers are set, so a TERM in between is not lost.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGHUP);
  sigprocmask(SIG_BLOCK, &block, &old);

  int ready[2];
  if (pipe2(ready, O_CLOEXEC)) die(99, "pipe");
  child_pid = fork();
  if (child_pid < 0) die(99, "fork");
  if (child_pid == 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL)) die(99, "prctl");
    if (ns && sethostname("isola-vmm", 9)) die(99, "sethostname");
    if (jailed) {
      if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) die(99, "make / private");
      if (mount("isola-jail", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m"))
        die(99, "tmpfs on %s", root);
      for (int b = 0; b < nbinds; b++) bind_into(root, &binds[b]);
      // Debian's merged /usr: the usual top-level links, for the dynamic loader's paths.
      const char *links[][2] = {
          {"usr/bin", "bin"}, {"usr/sbin", "sbin"}, {"usr/lib", "lib"}, {"usr/lib64", "lib64"}};
      for (unsigned l = 0; l < sizeof links / sizeof links[0]; l++) {
        char target[4096], src[4096];
        snprintf(src, sizeof src, "/%s", links[l][0]);
        snprintf(target, sizeof target, "%s/%s", root, links[l][1]);
        struct stat st;
        if (lstat(target, &st) == 0) continue;
        if (symlink(links[l][0], target)) die(99, "symlink %s", target);
      }
    }
    if (tap) {
      // The tap device created here, in the new network namespace, as root: the VMM gets the
      // open descriptor as fd 3 and needs no /dev/net/tun and no privilege. The host configures
      // the namespace (addresses, rules, forwarding last) while the VMM starts.
      int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
      if (fd < 0) die(99, "open /dev/net/tun");
      struct ifreq ifr;
      memset(&ifr, 0, sizeof ifr);
      ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
      if (strlen(tap) >= IFNAMSIZ) {
        errno = ENAMETOOLONG;
        die(99, "tap name");
      }
      strcpy(ifr.ifr_name, tap);
      if (ioctl(fd, TUNSETIFF, &ifr)) die(99, "create tap %s", tap);
      tap_fd = fcntl(fd, F_DUPFD_CLOEXEC, 10);  // out of the way of fds 3 and 4
      if (tap_fd < 0) die(99, "tap descriptor");
      close(fd);
    }
    if (memfd_from) {
      // The snapshot memory, sealed (isola-memfd): the VMM reopens it as /proc/self/fd/4.
      int fd = open(memfd_from, O_RDWR | O_CLOEXEC);
      if (fd < 0) die(99, "open %s", memfd_from);
      mem_fd = fcntl(fd, F_DUPFD_CLOEXEC, 10);
      if (mem_fd < 0) die(99, "memory descriptor");
      close(fd);
      if (jailed) {
        // A /proc showing only the jail's own processes, for /proc/self/fd.
        char target[4096];
        snprintf(target, sizeof target, "%s/proc", root);
        mkdirs(target);
        if (mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "subset=pid"))
          die(99, "mount proc");
      }
    }
    // The parent reports the pid once the namespace is ready for the host (the tap exists).
    close(ready[0]);
    if (write(ready[1], "r", 1) != 1) die(99, "report ready");
    close(ready[1]);
    // Kept across the exec: the tap as fd 3, the snapshot memory as fd 4.
    if (tap_fd >= 0) {
      if (dup2(tap_fd, 3) != 3) die(99, "dup2 tap");
      close(tap_fd);
    }
    if (mem_fd >= 0) {
      if (dup2(mem_fd, 4) != 4) die(99, "dup2 memory");
      close(mem_fd);
    }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (jailed) {
      if (chdir(root)) die(99, "chdir %s", root);
      if (syscall(SYS_pivot_root, ".", ".")) die(99, "pivot_root");
      if (umount2(".", MNT_DETACH)) die(99, "detach the old root");
      if (chdir("/")) die(99, "chdir /");
      if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL))
        die(99, "remount / read-only");
    }
    if (devnull >= 0) {
      dup2(devnull, STDIN_FILENO);
      close(devnull);
    } else {
      close(STDIN_FILENO);
    }
    if (uid > 0) {
      if (setgroups((size_t)ngroups, extra_groups)) die(99, "setgroups");
      if (setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid)) die(99, "setresgid");
      if (setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid)) die(99, "setresuid");
      if (setuid(0) == 0) {
        errno = 0;
        die(99, "privileges were not dropped");
      }
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) die(99, "no_new_privs");
    if (jailed) install_deny_filter();
    // Again: a change of credentials clears the parent-death signal. (getppid() says 0 in a new
    // PID namespace, so a jail that died in the microseconds since cannot be seen here; the
    // reaper covers that window.)
    if (prctl(PR_SET_PDEATHSIG, SIGKILL)) die(99, "prctl");
    execv(vmm[0], vmm);
    die(99, "exec %s", vmm[0]);
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = forward_kill;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigprocmask(SIG_SETMASK, &old, NULL);
  close(ready[1]);
  char byte;
  ssize_t got;
  do got = read(ready[0], &byte, 1);  // one byte: the child's set-up is done
  while (got < 0 && errno == EINTR);
  close(ready[0]);
  // End of file instead: the set-up failed and the child is gone (it said why on stderr); no
  // pid is reported, and the jail exits with the child's status.
  if (got == 1) {
    fprintf(stderr, "ISOLA_QEMU_PID %d\n", child_pid);
    fflush(stderr);
  }

  int status = 0;
  for (;;) {
    pid_t r = waitpid(child_pid, &status, 0);
    if (r == child_pid) break;
    if (r < 0 && errno != EINTR) die(99, "waitpid");
  }
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}
