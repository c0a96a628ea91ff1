#!/usr/bin/env python3
# Host side of terminal mode (process.terminal with --console-socket): a pty whose master goes
# to the caller's console socket (SCM_RIGHTS, as runc does), and whose slave, in raw mode, this
# process relays to its stdin/stdout: stdin carries the container's output from the monitor,
# stdout carries the caller's keystrokes back. The guest has its own pty (cinit), which does the
# terminal processing; this one only passes bytes. Python because Node.js can neither open a pty
# nor pass a file descriptor over a unix socket.
import os
import select
import socket
import sys
import tty


def main() -> int:
    master, slave = os.openpty()
    tty.setraw(slave)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sys.argv[1])
    socket.send_fds(sock, [os.ttyname(slave).encode()], [master])
    sock.close()
    os.close(master)
    sys.stderr.write("READY\n")
    sys.stderr.flush()
    while True:
        readable, _, _ = select.select([0, slave], [], [])
        if 0 in readable:
            data = os.read(0, 65536)
            if not data:
                return 0  # the container's output ended
            os.write(slave, data)
        if slave in readable:
            try:
                data = os.read(slave, 65536)
            except OSError:
                return 0  # the caller closed the master
            if not data:
                return 0
            os.write(1, data)


if __name__ == "__main__":
    sys.exit(main())
