#!/bin/bash
# Stop the Ceph of .ci/ceph-start.sh by its pid files and wait until each daemon is
# gone (idempotent: a missing pid file or a dead process is fine). The data is in RAM
# (memstore) and goes with the OSD; FE_CEPH_DIR stays for its logs.
set -euo pipefail

D=${FE_CEPH_DIR:-/var/tmp/fe-ceph}
# The gateway first (it writes to the OSD), the mon last (the others report to it).
DAEMONS=(client.rgw.a osd.0 mon.a)

gone() {
    # A killed daemon lingers as a zombie until PID 1 reaps it: that counts as gone.
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null || true)
    [ -z "$state" ] || [ "${state:0:1}" = Z ]
}

# One at a time, in order: a gateway or an OSD told to stop while the daemons it
# reports to are already gone can hang on its way out.
for d in "${DAEMONS[@]}"; do
    f=$D/run/$d.pid
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    rm -f "$f"
    # radosgw's graceful stop sometimes waits long for its clients; it keeps no state of
    # its own (all is in RADOS), so it gets less time before SIGKILL.
    case $d in mon.*) program=ceph-mon grace=200 ;; osd.*) program=ceph-osd grace=200 ;; *) program=radosgw grace=50 ;; esac
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$program" ] || continue  # gone, or the pid was reused
    # A daemon stopped with SIGSTOP (a test that froze it) would never see SIGTERM.
    kill -CONT "$pid" 2>/dev/null && kill "$pid" 2>/dev/null || continue
    for _ in $(seq "$grace"); do
        gone "$pid" && break
        sleep 0.1
    done
    if ! gone "$pid"; then
        echo "ceph-stop: $d ($pid) did not exit within $((grace / 10)) s; killing it" >&2
        kill -9 "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            gone "$pid" && break
            sleep 0.1
        done
    fi
done
