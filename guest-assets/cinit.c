// cinit: the container init that runs inside an isola micro-VM.
//
//   cinit create PLAN       build the container the way runc's init does and run its process
//   cinit exec PID PLAN     run one more process inside the container whose init is PID
//
// PLAN is the line-based file the host writes (src/oci/plan.ts documents the format).
//
// Both modes fork once. The child becomes the container process (it execs); the parent stays
// behind as a small supervisor that forwards every catchable signal to it and then exits the
// way it did (same exit code, or the same fatal signal), so whoever started cinit can treat
// cinit's pid as the container's. The child gets PR_SET_PDEATHSIG(SIGKILL) so it never outlives
// the supervisor (SIGKILL can't be forwarded). A setup failure prints "cinit: <step>: <reason>"
// and exits 127, which the host reports as a failed start.
//
// Build: gcc -static -Os -Wall -Wextra -Werror -o cinit cinit.c   (no libraries beyond libc)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define COUNT(a) (sizeof(a) / sizeof *(a))

// ---- errors and small file helpers ----

// Prints "cinit: <what>[: <strerror(err)>]" and exits 127: a failed start for the host.
static _Noreturn void fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void fail(int err, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (err)
    fprintf(stderr, "cinit: %s: %s\n", msg, strerror(err));
  else
    fprintf(stderr, "cinit: %s\n", msg);
  exit(127);
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) fail(ENOMEM, "calloc");
  return p;
}

// The whole file as a NUL-terminated string.
static char *read_file(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(errno, "read %s", path);
  size_t cap = 4096, len = 0;
  char *buf = NULL;
  for (;;) {
    if (!buf || len + 1 >= cap) {
      if (buf) cap *= 2;
      if (!(buf = realloc(buf, cap))) fail(ENOMEM, "read %s", path);
    }
    ssize_t n = read(fd, buf + len, cap - len - 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(errno, "read %s", path);
    if (n == 0) break;
    len += (size_t)n;
  }
  close(fd);
  buf[len] = 0;
  if (strlen(buf) != len) fail(0, "%s: NUL byte in file", path);
  return buf;
}

// One write(2), as kernel files (cgroup, /proc/sys) expect. Returns -1 with errno set.
static int write_file(const char *path, const char *s) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t len = strlen(s);
  ssize_t n = write(fd, s, len);
  int err = n < 0 ? errno : (size_t)n != len ? EIO : 0;
  close(fd);
  errno = err;
  return err ? -1 : 0;
}

static int mkdir_p(const char *path) {
  char buf[PATH_MAX];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return errno = ENAMETOOLONG, -1;
  for (char *c = buf + 1;; c++) {
    if (*c && *c != '/') continue;
    char saved = *c;
    *c = 0;
    if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
    if (!saved) return 0;
    *c = saved;
  }
}

// ---- name tables ----

static const char *const cap_names[] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE"};

enum { BOUNDING, EFFECTIVE, PERMITTED, INHERITABLE, AMBIENT, NSETS };
static const char *const capset_names[NSETS] = {"bounding", "effective", "permitted",
                                                "inheritable", "ambient"};

static const struct {
  const char *name;
  int res;
} rlimits[] = {
    {"RLIMIT_CPU", RLIMIT_CPU},         {"RLIMIT_FSIZE", RLIMIT_FSIZE},
    {"RLIMIT_DATA", RLIMIT_DATA},       {"RLIMIT_STACK", RLIMIT_STACK},
    {"RLIMIT_CORE", RLIMIT_CORE},       {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_NPROC", RLIMIT_NPROC},     {"RLIMIT_NOFILE", RLIMIT_NOFILE},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK}, {"RLIMIT_AS", RLIMIT_AS},
    {"RLIMIT_LOCKS", RLIMIT_LOCKS},     {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE}, {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},   {"RLIMIT_RTTIME", RLIMIT_RTTIME},
};

// Plan names, clone flags and /proc/PID/ns names; also the order `exec` joins them in: the
// mount namespace last, because it changes what /proc and /sys/fs/cgroup resolve to.
static const struct {
  const char *name, *proc;
  int flag;
} namespaces[] = {
    {"ipc", "ipc", CLONE_NEWIPC}, {"uts", "uts", CLONE_NEWUTS},
    {"net", "net", CLONE_NEWNET}, {"cgroup", "cgroup", CLONE_NEWCGROUP},
    {"pid", "pid", CLONE_NEWPID}, {"mount", "mnt", CLONE_NEWNS},
};

// ---- the plan ----

struct line {
  int nf;
  char *f[5]; // f[0] is the directive
};

struct plan {
  struct line *lines; // every directive in file order; repeated ones are applied by walking it
  size_t nlines;
  const char *rootfs, *hostname, *cgroup, *cwd;
  int readonly, nnp, nsflags, has_umask;
  int terminal;                   // a pty for the process (`terminal ROWS COLS`)
  unsigned short rows, cols;
  mode_t umask;
  uid_t uid;
  gid_t gid, *groups;
  size_t ngroups;
  int has_cap[NSETS];
  uint64_t cap[NSETS];
  int has_rlimit[COUNT(rlimits)];
  struct rlimit rlimit[COUNT(rlimits)];
  char **env, **argv; // NULL-terminated
};

static int is(const struct line *l, const char *directive) { return !strcmp(l->f[0], directive); }

// Undoes the field escaping: \\ \t \n.
static void unescape(char *s, size_t ln) {
  char *w = s;
  for (char *r = s; *r; r++) {
    if (*r != '\\') {
      *w++ = *r;
      continue;
    }
    switch (*++r) {
    case '\\': *w++ = '\\'; break;
    case 't': *w++ = '\t'; break;
    case 'n': *w++ = '\n'; break;
    default: fail(0, "plan line %zu: bad escape", ln);
    }
  }
  *w = 0;
}

static unsigned long long number(const char *s, int base, unsigned long long max, size_t ln) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, base);
  // strtoull would also take blanks and a minus sign; the plan never has them.
  if (*s < '0' || *s > '9' || *end || errno || v > max)
    fail(0, "plan line %zu: bad number '%s'", ln, s);
  return v;
}

// Cuts the next item off a comma list (in place); NULL at the end.
static char *next_item(char **list) {
  char *item = *list;
  if (!item || !*item) return NULL;
  char *comma = strchr(item, ',');
  *list = comma ? comma + 1 : NULL;
  if (comma) *comma = 0;
  return item;
}

static uint64_t cap_mask(char *list, size_t ln) {
  uint64_t mask = 0;
  for (char *name; (name = next_item(&list));) {
    size_t i = 0;
    while (i < COUNT(cap_names) && strcmp(cap_names[i], name)) i++;
    if (i == COUNT(cap_names)) fail(0, "plan line %zu: unknown capability '%s'", ln, name);
    mask |= 1ULL << i;
  }
  return mask;
}

static int flag_value(const char *v, size_t ln) {
  if (strcmp(v, "0") && strcmp(v, "1")) fail(0, "plan line %zu: expected 0 or 1", ln);
  return *v == '1';
}

static void parse_plan(char *text, struct plan *p) {
  static const struct {
    const char *name;
    int nf;
  } known[] = {
      {"rootfs", 2}, {"readonly", 2}, {"hostname", 2}, {"ns", 2},     {"mount", 5},
      {"masked", 2}, {"rdonly", 2},   {"cgroup", 2},   {"cglimit", 3}, {"sysctl", 3},
      {"rlimit", 4}, {"cap", 3},      {"nnp", 2},      {"uid", 2},     {"gid", 2},
      {"groups", 2}, {"umask", 2},    {"cwd", 2},      {"env", 2},     {"arg", 2},
      {"terminal", 3},
  };
  size_t max = 1, nenv = 0, nargv = 0, ln = 0;
  for (const char *c = text; *c; c++) max += *c == '\n';
  memset(p, 0, sizeof *p);
  p->lines = xcalloc(max, sizeof *p->lines);
  p->env = xcalloc(max + 1, sizeof *p->env);
  p->argv = xcalloc(max + 1, sizeof *p->argv);

  // Split on raw newlines and TABs first (escaped ones are two characters), then unescape.
  for (char *s = text, *next; s; s = next) {
    ln++;
    if ((next = strchr(s, '\n'))) *next++ = 0;
    if (!*s) continue;
    struct line l = {0};
    for (char *f = s, *tab; f; f = tab) {
      if (l.nf == (int)COUNT(l.f)) fail(0, "plan line %zu: too many fields", ln);
      if ((tab = strchr(f, '\t'))) *tab++ = 0;
      unescape(f, ln);
      l.f[l.nf++] = f;
    }
    size_t k = 0;
    while (k < COUNT(known) && !is(&l, known[k].name)) k++;
    if (k == COUNT(known)) fail(0, "plan line %zu: unknown directive '%s'", ln, l.f[0]);
    if (l.nf != known[k].nf)
      fail(0, "plan line %zu: '%s' takes %d field(s)", ln, l.f[0], known[k].nf - 1);

    char *v = l.f[1];
    if (is(&l, "rootfs")) p->rootfs = v;
    else if (is(&l, "readonly")) p->readonly = flag_value(v, ln);
    else if (is(&l, "hostname")) p->hostname = v;
    else if (is(&l, "cgroup")) p->cgroup = v;
    else if (is(&l, "nnp")) p->nnp = flag_value(v, ln);
    else if (is(&l, "uid")) p->uid = (uid_t)number(v, 10, UINT32_MAX - 1, ln);
    else if (is(&l, "gid")) p->gid = (gid_t)number(v, 10, UINT32_MAX - 1, ln);
    else if (is(&l, "umask")) p->has_umask = 1, p->umask = (mode_t)number(v, 8, 0777, ln);
    else if (is(&l, "cwd")) p->cwd = v;
    else if (is(&l, "terminal")) {
      p->terminal = 1;
      p->rows = (unsigned short)number(v, 10, 65535, ln);
      p->cols = (unsigned short)number(l.f[2], 10, 65535, ln);
    }
    else if (is(&l, "env")) p->env[nenv++] = v;
    else if (is(&l, "arg")) p->argv[nargv++] = v;
    else if (is(&l, "groups")) {
      size_t n = 1;
      for (const char *c = v; *c; c++) n += *c == ',';
      free(p->groups); // a repeated directive replaces the list
      p->groups = xcalloc(n, sizeof *p->groups), p->ngroups = 0;
      for (char *g; (g = next_item(&v));)
        p->groups[p->ngroups++] = (gid_t)number(g, 10, UINT32_MAX - 1, ln);
    } else if (is(&l, "ns")) {
      size_t i = 0;
      while (i < COUNT(namespaces) && strcmp(namespaces[i].name, v)) i++;
      if (i == COUNT(namespaces)) fail(0, "plan line %zu: unknown namespace '%s'", ln, v);
      p->nsflags |= namespaces[i].flag;
    } else if (is(&l, "rlimit")) {
      size_t i = 0;
      while (i < COUNT(rlimits) && strcmp(rlimits[i].name, v)) i++;
      if (i == COUNT(rlimits)) fail(0, "plan line %zu: unknown rlimit '%s'", ln, v);
      p->has_rlimit[i] = 1;
      for (int j = 0; j < 2; j++) {
        const char *s = l.f[2 + j];
        rlim_t r = strcmp(s, "unlimited") ? number(s, 10, RLIM_INFINITY - 1, ln) : RLIM_INFINITY;
        *(j ? &p->rlimit[i].rlim_max : &p->rlimit[i].rlim_cur) = r;
      }
    } else if (is(&l, "cap")) {
      size_t i = 0;
      while (i < NSETS && strcmp(capset_names[i], v)) i++;
      if (i == NSETS) fail(0, "plan line %zu: unknown capability set '%s'", ln, v);
      p->has_cap[i] = 1;
      p->cap[i] = cap_mask(l.f[2], ln);
    }
    p->lines[p->nlines++] = l;
  }
}

// ---- container setup (create mode, in the child, before the process part) ----

static const struct {
  const char *name;
  unsigned long flag;
  char kind; // '+' sets the flag, '-' clears it, 'p' changes propagation (a separate call)
} mount_flags[] = {
    {"defaults", 0, '+'},
    {"ro", MS_RDONLY, '+'},          {"rw", MS_RDONLY, '-'},
    {"nosuid", MS_NOSUID, '+'},      {"suid", MS_NOSUID, '-'},
    {"nodev", MS_NODEV, '+'},        {"dev", MS_NODEV, '-'},
    {"noexec", MS_NOEXEC, '+'},      {"exec", MS_NOEXEC, '-'},
    {"sync", MS_SYNCHRONOUS, '+'},   {"async", MS_SYNCHRONOUS, '-'},
    {"dirsync", MS_DIRSYNC, '+'},    {"remount", MS_REMOUNT, '+'},
    {"bind", MS_BIND, '+'},          {"rbind", MS_BIND | MS_REC, '+'},
    {"noatime", MS_NOATIME, '+'},    {"atime", MS_NOATIME, '-'},
    {"nodiratime", MS_NODIRATIME, '+'}, {"diratime", MS_NODIRATIME, '-'},
    {"relatime", MS_RELATIME, '+'},  {"norelatime", MS_RELATIME, '-'},
    {"strictatime", MS_STRICTATIME, '+'}, {"nostrictatime", MS_STRICTATIME, '-'},
    {"private", MS_PRIVATE, 'p'},    {"rprivate", MS_PRIVATE | MS_REC, 'p'},
    {"slave", MS_SLAVE, 'p'},        {"rslave", MS_SLAVE | MS_REC, 'p'},
    {"shared", MS_SHARED, 'p'},      {"rshared", MS_SHARED | MS_REC, 'p'},
    {"unbindable", MS_UNBINDABLE, 'p'}, {"runbindable", MS_UNBINDABLE | MS_REC, 'p'},
};

static int has_dotdot(const char *path) {
  for (const char *c = path; (c = strstr(c, "..")); c += 2)
    if ((c == path || c[-1] == '/') && (c[2] == 0 || c[2] == '/')) return 1;
  return 0;
}

// The flags a bind remount must repeat so it does not clear them (read-only is what changes).
static unsigned long kept_flags(const char *path) {
  static const struct {
    unsigned long st, ms;
  } map[] = {{ST_NOSUID, MS_NOSUID},     {ST_NODEV, MS_NODEV},         {ST_NOEXEC, MS_NOEXEC},
             {ST_NOATIME, MS_NOATIME}, {ST_NODIRATIME, MS_NODIRATIME}, {ST_RELATIME, MS_RELATIME}};
  struct statvfs s;
  unsigned long flags = 0;
  if (statvfs(path, &s) == 0)
    for (size_t i = 0; i < COUNT(map); i++)
      if (s.f_flag & map[i].st) flags |= map[i].ms;
  return flags;
}

static int remount_ro(const char *path) {
  return mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | kept_flags(path), NULL);
}

// One `mount` directive; the destination is taken inside the new root (not yet pivoted).
static void do_mount(const char *root, const struct line *l) {
  const char *src = l->f[1], *dst = l->f[2], *type = l->f[3];
  char target[PATH_MAX], *opts = l->f[4], *data = xcalloc(strlen(opts) + 1, 1);
  unsigned long flags = 0, prop = 0;
  if (has_dotdot(dst)) fail(0, "mount %s: '..' in destination", dst);
  if (snprintf(target, sizeof target, "%s/%s", root, dst) >= (int)sizeof target)
    fail(ENAMETOOLONG, "mount %s", dst);

  // Split mount(8) words into flags and the data string the filesystem gets.
  for (char *o; (o = next_item(&opts));) {
    size_t i = 0;
    while (i < COUNT(mount_flags) && strcmp(mount_flags[i].name, o)) i++;
    if (i == COUNT(mount_flags)) {
      if (*data) strcat(data, ",");
      strcat(data, o);
    } else if (mount_flags[i].kind == '+') flags |= mount_flags[i].flag;
    else if (mount_flags[i].kind == '-') flags &= ~mount_flags[i].flag;
    else prop |= mount_flags[i].flag;
  }
  if (!strcmp(type, "bind")) flags |= MS_BIND; // OCI's type "bind" may come without the word

  // Mount point: bind mounts of anything but a directory (a file, /dev/null) need a file.
  struct stat st;
  int file = (flags & MS_BIND) && stat(src, &st) == 0 && !S_ISDIR(st.st_mode);
  if (lstat(target, &st) < 0) {
    char *slash = strrchr(target, '/');
    *slash = 0;
    int r = mkdir_p(target);
    *slash = '/';
    if (r < 0 || (file ? mknod(target, S_IFREG | 0644, 0) : mkdir(target, 0755)) < 0)
      fail(errno, "mount %s: create mount point", dst);
  }

  if (flags & MS_BIND) {
    if (mount(src, target, NULL, flags & (MS_BIND | MS_REC), NULL) < 0)
      fail(errno, "mount %s", dst);
    // A bind mount ignores ro/nosuid/...; a bind remount applies them to the new mount only.
    if (flags & ~(MS_BIND | MS_REC | MS_REMOUNT) &&
        mount(NULL, target, NULL, (flags & ~MS_REC) | MS_BIND | MS_REMOUNT, NULL) < 0)
      fail(errno, "mount %s: remount", dst);
  } else if (mount(src, target, type, flags, *data ? data : NULL) < 0) {
    fail(errno, "mount %s", dst);
  }
  if (prop && mount(NULL, target, NULL, prop, NULL) < 0) fail(errno, "mount %s: propagation", dst);
  free(data);
}

static void setup_container(const struct plan *p) {
  char root[PATH_MAX];
  if (!realpath(p->rootfs, root)) fail(errno, "rootfs %s", p->rootfs);
  // Nothing below may propagate back into the guest's own mount table.
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail(errno, "make mounts private");
  // pivot_root needs the new root to be a mount point.
  if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) < 0) fail(errno, "bind rootfs %s", root);
  for (size_t i = 0; i < p->nlines; i++)
    if (is(&p->lines[i], "mount")) do_mount(root, &p->lines[i]);

  if (p->hostname && sethostname(p->hostname, strlen(p->hostname)) < 0) fail(errno, "hostname");
  // /proc/sys resolves to the namespaces of the writer, so the guest's /proc is fine here.
  for (size_t i = 0; i < p->nlines; i++) {
    const struct line *l = &p->lines[i];
    char path[PATH_MAX];
    if (!is(l, "sysctl")) continue;
    if (strchr(l->f[1], '/') || snprintf(path, sizeof path, "/proc/sys/%s", l->f[1]) >= PATH_MAX)
      fail(0, "sysctl %s: bad key", l->f[1]);
    for (char *c = path + strlen("/proc/sys/"); *c; c++)
      if (*c == '.') *c = '/';
    if (write_file(path, l->f[2]) < 0) fail(errno, "sysctl %s", l->f[1]);
  }

  // Swap roots without a put_old directory (runc's trick): pivot_root(".", ".") stacks the old
  // root on top of the new one, and detaching "." then drops it.
  if (chdir(root) < 0) fail(errno, "chdir %s", root);
  if (syscall(SYS_pivot_root, ".", ".") < 0) fail(errno, "pivot_root");
  if (umount2(".", MNT_DETACH) < 0) fail(errno, "detach old root");
  if (chdir("/") < 0) fail(errno, "chdir /");

  for (size_t i = 0; i < p->nlines; i++) {
    const struct line *l = &p->lines[i];
    const char *path = l->f[1];
    struct stat st;
    if (is(l, "masked")) {
      if (stat(path, &st) < 0) {
        if (errno == ENOENT) continue;
        fail(errno, "masked %s", path);
      }
      if ((S_ISDIR(st.st_mode) ? mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL)
                               : mount("/dev/null", path, NULL, MS_BIND, NULL)) < 0)
        fail(errno, "masked %s", path);
    } else if (is(l, "rdonly")) {
      if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0) {
        if (errno == ENOENT) continue;
        fail(errno, "rdonly %s", path);
      }
      if (remount_ro(path) < 0) fail(errno, "rdonly %s", path);
    }
  }
  if (p->readonly && remount_ro("/") < 0) fail(errno, "readonly root");
}

// ---- the process part (both modes, in the child) ----

static void set_caps(const struct plan *p) {
  struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  if (syscall(SYS_capget, &head, d) < 0) fail(errno, "capget");
  // Sets the plan leaves out stay as they are now.
  for (int s = EFFECTIVE; s <= INHERITABLE; s++) {
    if (!p->has_cap[s]) continue;
    for (int i = 0; i < 2; i++) {
      uint32_t v = (uint32_t)(p->cap[s] >> (32 * i));
      *(s == EFFECTIVE ? &d[i].effective : s == PERMITTED ? &d[i].permitted : &d[i].inheritable) =
          v;
    }
  }
  if (syscall(SYS_capset, &head, d) < 0) fail(errno, "capset");
}

static _Noreturn void exec_process(const struct plan *p) {
  const char *arg0 = p->argv[0], *path = DEFAULT_PATH;
  int err = ENOENT, denied = 0;
  for (char **e = p->env; *e; e++)
    if (!strncmp(*e, "PATH=", 5)) {
      path = *e + 5;
      break;
    }
  if (strchr(arg0, '/')) {
    execve(arg0, p->argv, p->env);
    err = errno;
  } else {
    // execvpe's search, but in the container's PATH rather than cinit's.
    for (const char *dir = path;; dir++) {
      const char *end = strchrnul(dir, ':');
      char file[PATH_MAX];
      int len = (int)(end - dir);
      if (snprintf(file, sizeof file, "%.*s%s%s", len, dir, len ? "/" : "", arg0) < PATH_MAX) {
        execve(file, p->argv, p->env);
        if (errno == EACCES) denied = 1;
        else if (errno != ENOENT && errno != ENOTDIR) {
          err = errno;
          break;
        }
      }
      if (!*(dir = end)) break;
    }
    if (denied && err == ENOENT) err = EACCES;
  }
  fprintf(stderr, "cinit: exec %s: %s\n", arg0, strerror(err));
  exit(err == ENOENT ? 127 : 126);
}

// Terminal mode, in the child once it sees the container's /dev: a pty from the container's own
// devpts (so ttyname works inside), the master handed to the supervisor over `sock`, the slave
// made the controlling terminal and the process's stdio, like runc's console set-up.
static void setup_tty(const struct plan *p, int sock) {
  int m = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0) m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0) fail(errno, "open ptmx");
  int unlock = 0, n = 0;
  if (ioctl(m, TIOCSPTLCK, &unlock) < 0 || ioctl(m, TIOCGPTN, &n) < 0) fail(errno, "pty");
  struct winsize ws = {.ws_row = p->rows, .ws_col = p->cols};
  ioctl(m, TIOCSWINSZ, &ws);
  char cmsgbuf[CMSG_SPACE(sizeof(int))] = {0};
  char byte = 't';
  struct iovec iov = {&byte, 1};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cmsgbuf, .msg_controllen = sizeof cmsgbuf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET, c->cmsg_type = SCM_RIGHTS, c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &m, sizeof m);
  if (sendmsg(sock, &msg, 0) < 0) fail(errno, "send pty");
  close(m);
  close(sock);
  char path[64];
  snprintf(path, sizeof path, "/dev/pts/%d", n);
  if (setsid() < 0) fail(errno, "setsid");
  int slave = open(path, O_RDWR);
  if (slave < 0) fail(errno, "open %s", path);
  if (ioctl(slave, TIOCSCTTY, 0) < 0) fail(errno, "controlling terminal");
  for (int fd = 0; fd < 3; fd++)
    if (dup2(slave, fd) < 0) fail(errno, "dup2 pty");
  if (slave > 2) close(slave);
}

// Supervisor side of setup_tty: the master, or -1 when the child died first.
static int receive_tty(int sock) {
  char cmsgbuf[CMSG_SPACE(sizeof(int))] = {0};
  char byte;
  struct iovec iov = {&byte, 1};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cmsgbuf, .msg_controllen = sizeof cmsgbuf};
  if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) <= 0) return -1;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (!c || c->cmsg_type != SCM_RIGHTS) return -1;
  int m;
  memcpy(&m, CMSG_DATA(c), sizeof m);
  return m;
}

// runc's order: bounding set while CAP_SETPCAP is still effective, KEEPCAPS across the uid
// change, then the capability sets, then ambient (which needs permitted and inheritable).
static _Noreturn void start_process(const struct plan *p, int parent_alive) {
  int caps = 0;
  for (int s = 0; s < NSETS; s++) caps |= p->has_cap[s];
  for (size_t i = 0; i < COUNT(rlimits); i++)
    if (p->has_rlimit[i] && setrlimit(rlimits[i].res, &p->rlimit[i]) < 0)
      fail(errno, "rlimit %s", rlimits[i].name);
  if (p->has_umask) umask(p->umask);

  if (p->has_cap[BOUNDING])
    for (int c = 0; c < 64; c++) {
      if (p->cap[BOUNDING] >> c & 1) continue;
      if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) {
        if (errno == EINVAL) break; // past the kernel's last capability
        fail(errno, "drop bounding capability %d", c);
      }
    }
  if (caps && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) fail(errno, "keepcaps");
  if (setgroups(p->ngroups, p->groups) < 0) fail(errno, "setgroups");
  if (setgid(p->gid) < 0) fail(errno, "setgid %u", (unsigned)p->gid);
  if (setuid(p->uid) < 0) fail(errno, "setuid %u", (unsigned)p->uid);
  if (caps && prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) fail(errno, "keepcaps");
  if (p->has_cap[EFFECTIVE] || p->has_cap[PERMITTED] || p->has_cap[INHERITABLE]) set_caps(p);
  if (p->has_cap[AMBIENT]) {
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) fail(errno, "ambient");
    for (size_t c = 0; c < COUNT(cap_names); c++)
      if (p->cap[AMBIENT] >> c & 1 && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
        fail(errno, "ambient %s", cap_names[c]);
  }
  if (p->nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail(errno, "no_new_privs");
  if (p->cwd && chdir(p->cwd) < 0) fail(errno, "cwd %s", p->cwd);

  // Never outlive the supervisor. Set last: credential changes clear the death signal. If the
  // supervisor already died, its end of the pipe is closed and poll sees the hangup.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) fail(errno, "pdeathsig");
  struct pollfd pfd = {parent_alive, POLLIN, 0};
  if (poll(&pfd, 1, 0) > 0) exit(127);
  // Only stdio goes to the container process.
  if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
    for (int fd = 3; fd < 1024; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  exec_process(p);
}

// ---- create and exec mode preparation (before the fork) ----

static void create_cgroup(const struct plan *p) {
  char path[PATH_MAX], pid[32];
  if (mkdir_p(p->cgroup) < 0) fail(errno, "cgroup %s", p->cgroup);
  for (size_t i = 0; i < p->nlines; i++) {
    const struct line *l = &p->lines[i];
    if (!is(l, "cglimit")) continue;
    if (strchr(l->f[1], '/') ||
        snprintf(path, sizeof path, "%s/%s", p->cgroup, l->f[1]) >= (int)sizeof path)
      fail(0, "cgroup limit %s: bad file name", l->f[1]);
    if (write_file(path, l->f[2]) < 0) fail(errno, "cgroup limit %s=%s", l->f[1], l->f[2]);
  }
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  snprintf(path, sizeof path, "%s/cgroup.procs", p->cgroup);
  if (write_file(path, pid) < 0) fail(errno, "join cgroup %s", p->cgroup);
}

static void join_container(pid_t target) {
  char path[PATH_MAX], pid[32];
  // The target's cgroup v2 path ("0::/path"), joined only where the unified hierarchy is
  // mounted at /sys/fs/cgroup (always in the guest; not on hybrid hosts).
  struct statfs fs;
  if (statfs("/sys/fs/cgroup", &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC) {
    snprintf(path, sizeof path, "/proc/%d/cgroup", (int)target);
    char *text = read_file(path), *line = strstr(text, "0::");
    if (line && (line == text || line[-1] == '\n')) {
      line[strcspn(line, "\n")] = 0;
      snprintf(pid, sizeof pid, "%d", (int)getpid());
      if (snprintf(path, sizeof path, "/sys/fs/cgroup%s/cgroup.procs", line + 3) >= PATH_MAX ||
          write_file(path, pid) < 0)
        fail(errno, "join cgroup %s", line + 3);
    }
    free(text);
  }

  // Open them all first: once in the container's mount namespace, /proc is the container's.
  int fds[COUNT(namespaces)];
  for (size_t i = 0; i < COUNT(namespaces); i++) {
    struct stat theirs, ours;
    snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)target, namespaces[i].proc);
    if ((fds[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fds[i], &theirs) < 0)
      fail(errno, "open %s", path);
    snprintf(path, sizeof path, "/proc/self/ns/%s", namespaces[i].proc);
    if (stat(path, &ours) == 0 && ours.st_ino == theirs.st_ino && ours.st_dev == theirs.st_dev) {
      close(fds[i]); // already there (joining our own mount namespace would reset root and cwd)
      fds[i] = -1;
    }
  }
  for (size_t i = 0; i < COUNT(namespaces); i++) {
    if (fds[i] < 0) continue;
    if (setns(fds[i], namespaces[i].flag) < 0) fail(errno, "setns %s", namespaces[i].name);
    close(fds[i]);
  }
}

// ---- the supervisor (the parent, both modes) ----

// Forwards signals until the child is gone; returns its wait status. All signals are blocked,
// so sigwaitinfo sees each one, SIGCHLD included, and no handler or global state is needed.
static int supervise(pid_t child, const sigset_t *all) {
  for (;;) {
    int status, sig = sigwaitinfo(all, NULL);
    if (sig < 0) continue; // EINTR
    if (sig != SIGCHLD) {
      kill(child, sig);
      continue;
    }
    if (waitpid(child, &status, WNOHANG) == child) return status; // else just stopped
  }
}

// Terminal mode: the same as supervise, and meanwhile copies our stdin to the pty master and the
// master's output to our stdout (the host relays both). Signals arrive on a signalfd so one
// poll loop serves all three.
static int supervise_tty(pid_t child, const sigset_t *all, int master) {
  int sfd = signalfd(-1, all, SFD_CLOEXEC);
  if (sfd < 0) fail(errno, "signalfd");
  int in_open = 1, status = 0, exited = 0;
  char buf[16384];
  for (;;) {
    struct pollfd fds[3] = {{sfd, POLLIN, 0}, {master, POLLIN, 0}, {in_open ? 0 : -1, POLLIN, 0}};
    if (poll(fds, 3, exited ? 100 : -1) < 0 && errno != EINTR) fail(errno, "poll");
    if (fds[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(sfd, &si, sizeof si) == sizeof si) {
        if ((int)si.ssi_signo != SIGCHLD) kill(child, (int)si.ssi_signo);
        else if (!exited && waitpid(child, &status, WNOHANG) == child) exited = 1;
      }
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(master, buf, sizeof buf);
      if (n > 0) {
        for (ssize_t off = 0; off < n;) {
          ssize_t w = write(1, buf + off, (size_t)(n - off));
          if (w <= 0) break;
          off += w;
        }
      } else if (exited) return status; // the slave side is closed and drained
    } else if (exited && !(fds[1].revents & POLLIN)) {
      return status;
    }
    if (in_open && fds[2].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(0, buf, sizeof buf);
      if (n <= 0) in_open = 0;
      else
        for (ssize_t off = 0; off < n;) {
          ssize_t w = write(master, buf + off, (size_t)(n - off));
          if (w <= 0) break;
          off += w;
        }
    }
  }
}

// Exits the way the child did, so our own parent sees the same exit code or signal.
static _Noreturn void exit_like(int status) {
  if (WIFEXITED(status)) exit(WEXITSTATUS(status));
  int sig = WTERMSIG(status);
  struct rlimit nocore = {0, 0};
  setrlimit(RLIMIT_CORE, &nocore); // the child already dumped core if it was going to
  signal(sig, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
  raise(sig);
  exit(128 + sig); // a signal whose default action does not kill
}

int main(int argc, char **argv) {
  int exec_mode = argc == 4 && !strcmp(argv[1], "exec");
  if (!exec_mode && !(argc == 3 && !strcmp(argv[1], "create")))
    fail(0, "usage: cinit create PLANFILE | cinit exec PID PLANFILE");

  // Block everything from the start (the supervisor waits for signals with sigwaitinfo; the
  // child unblocks right before exec) and start from default dispositions: an inherited
  // SIG_IGN would otherwise reach the container process, and an ignored SIGCHLD would make
  // the child unwaitable.
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, NULL);
  struct sigaction dfl = {.sa_handler = SIG_DFL};
  for (int sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);

  struct plan p;
  parse_plan(read_file(argv[exec_mode ? 3 : 2]), &p);
  if (!p.argv[0]) fail(0, "plan: no arg");

  if (exec_mode) {
    char *end;
    long target = strtol(argv[2], &end, 10);
    if (*argv[2] < '1' || *argv[2] > '9' || *end || target > INT_MAX)
      fail(0, "exec: bad pid '%s'", argv[2]);
    join_container((pid_t)target);
  } else {
    if (!p.rootfs) fail(0, "plan: no rootfs");
    // pivot_root and the mounts would otherwise change the guest's own root.
    if (!(p.nsflags & CLONE_NEWNS)) fail(0, "plan: a rootfs needs 'ns mount'");
    if (p.hostname && !(p.nsflags & CLONE_NEWUTS)) fail(0, "plan: hostname needs 'ns uts'");
    // Join the cgroup before unsharing, so a cgroup namespace is rooted at it.
    if (p.cgroup) create_cgroup(&p);
    if (unshare(p.nsflags) < 0) fail(errno, "unshare");
  }

  // The child watches this pipe to learn whether we died before its PDEATHSIG was in place.
  int alive[2], tty[2] = {-1, -1};
  if (pipe2(alive, O_CLOEXEC) < 0) fail(errno, "pipe");
  if (p.terminal && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, tty) < 0) fail(errno, "socketpair");
  pid_t child = fork();
  if (child < 0) fail(errno, "fork");
  if (child == 0) {
    close(alive[1]);
    if (!exec_mode) setup_container(&p);
    if (p.terminal) {
      close(tty[0]);
      setup_tty(&p, tty[1]);
    }
    start_process(&p, alive[0]);
  }
  close(alive[0]);
  if (p.terminal) {
    close(tty[1]);
    int master = receive_tty(tty[0]);
    close(tty[0]);
    if (master >= 0) exit_like(supervise_tty(child, &all, master));
  }
  exit_like(supervise(child, &all));
}
