#!/bin/sh
# isola guest image init (PID 1 after switch_root): mount the small filesystems, start the agent
# and reap orphaned processes until the agent exits, then power off (QEMU exits with the guest).
mount -t tmpfs -o mode=1777 tmp /tmp
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
# Containers get cgroups under /sys/fs/cgroup/isola (created by cinit) with these controllers.
mkdir -p /sys/fs/cgroup/isola
echo "+memory +pids +cpu" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
echo "+memory +pids +cpu" > /sys/fs/cgroup/isola/cgroup.subtree_control 2>/dev/null
ip link set lo up 2>/dev/null
# A NIC when the host gave one (isola.net=ADDRESS/PREFIX,GATEWAY on the kernel command line):
# the virtio-net driver, eth0's address and default route, and the resolvers (isola.dns=A,B).
net=; dns=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    isola.net=*) net="${arg#isola.net=}" ;;
    isola.dns=*) dns="${arg#isola.dns=}" ;;
  esac
done
if [ -n "$net" ]; then
  for m in failover net_failover virtio_net; do
    insmod "/lib/modules/isola/$m.ko" 2>/dev/null
  done
  gw="${net#*,}"
  ip addr add "${net%,*}" dev eth0 && ip link set eth0 up && { [ -z "$gw" ] || ip route add default via "$gw"; } \
    || echo "ISOLA_WARN network set-up failed" > /dev/console
  mkdir -p /etc; : > /etc/resolv.conf
  for d in $(echo "$dns" | tr , ' '); do echo "nameserver $d" >> /etc/resolv.conf; done
fi
read up _ < /proc/uptime
echo "ISOLA_AGENT_START uptime=$up" > /dev/console
/usr/bin/node --max-semi-space-size=1 /opt/isola/agent/src/guest/main.js </dev/null >/dev/console 2>&1 &
# `wait` reaps every child of PID 1, orphans included, until the agent has exited.
wait
echo "ISOLA_AGENT_EXITED" > /dev/console
sync
poweroff -f
