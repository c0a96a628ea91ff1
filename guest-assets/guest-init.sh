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
read up _ < /proc/uptime
echo "ISOLA_AGENT_START uptime=$up" > /dev/console
/usr/bin/node --max-semi-space-size=1 /opt/isola/agent/src/guest/main.js </dev/null >/dev/console 2>&1 &
# `wait` reaps every child of PID 1, orphans included, until the agent has exited.
wait
echo "ISOLA_AGENT_EXITED" > /dev/console
sync
poweroff -f
