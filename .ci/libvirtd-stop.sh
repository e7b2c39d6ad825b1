#!/bin/bash
# Stop libvirtd and virtlogd by their pid files (idempotent: a missing pid file or a
# dead process is fine). Running guests are left to QEMU; undefine them first if
# they must go.
set -euo pipefail

stop() {
    local pidfile=$1 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "libvirtd-stop: $pidfile ($pid) did not exit within 10 s" >&2
            return 1
        fi
    fi
    rm -f "$pidfile"
}

stop /run/libvirtd.pid
stop /run/virtlogd.pid
