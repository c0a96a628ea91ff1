#!/bin/busybox sh
# isola initramfs /init: load the virtio modules the Debian cloud kernel builds as modules, mount
# the read-only guest image (/dev/vda) under a tmpfs overlay and switch to it.
# Markers on the console ("ISOLA_...") let the host time the boot phases; keep them one per line.
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
read up _ < /proc/uptime
echo "ISOLA_INIT uptime=$up" > /dev/console

# Modules in dependency order (no modules.dep in the initramfs; the list is built with it).
for m in $(/bin/busybox cat /modules.list); do
  /bin/busybox insmod "/lib/modules/$m.ko" 2>/dev/console || echo "ISOLA_WARN insmod $m failed" > /dev/console
done

probe=0; hostname=isola
for arg in $(/bin/busybox cat /proc/cmdline); do
  case "$arg" in
    isola.probe=1) probe=1 ;;
    isola.hostname=*) hostname="${arg#isola.hostname=}" ;;
  esac
done
if [ "$probe" = 1 ]; then
  # The TSC frequency this kernel calibrated; the host boots later guests with it (vmm/accel.ts).
  mhz=$(/bin/busybox dmesg | /bin/busybox sed -n 's/.*tsc: Detected \([0-9.]*\) MHz.*/\1/p' | /bin/busybox head -n 1)
  echo "ISOLA_PROBE_OK tsc_mhz=$mhz" > /dev/console
  /bin/busybox poweroff -f
fi

/bin/busybox mkdir -p /mnt/lower /mnt/rw /newroot
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do /bin/busybox usleep 10000; i=$((i+1)); done
/bin/busybox mount -t ext4 -o ro,noload /dev/vda /mnt/lower || { echo "ISOLA_FATAL no guest image" > /dev/console; /bin/busybox poweroff -f; }
/bin/busybox mount -t tmpfs -o mode=0755 rw /mnt/rw
/bin/busybox mkdir -p /mnt/rw/upper /mnt/rw/work
/bin/busybox mount -t overlay overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work /newroot \
  || { echo "ISOLA_FATAL overlay mount failed" > /dev/console; /bin/busybox poweroff -f; }
/bin/busybox hostname "$hostname"
/bin/busybox mount --move /dev /newroot/dev
/bin/busybox mount --move /proc /newroot/proc
/bin/busybox mount --move /sys /newroot/sys
exec /bin/busybox switch_root /newroot /opt/isola/init
