#!/bin/bash
# Start virtlogd and the monolithic libvirtd (Debian 12's libvirt 9.0 packages no
# virtqemud) without systemd, then wait until qemu:///system answers. Idempotent:
# a daemon whose pid file names a live process is left alone, unless it started
# before its rbd storage driver was installed (then it is restarted once). Stop with
# .ci/libvirtd-stop.sh.
set -euo pipefail

# /dev/kvm is root-only on these machines. libvirt probes QEMU with KVM, finds that
# its qemu user cannot use it, and then re-probes capabilities on every call (a
# define took 44 s). Give it to the kvm group, as udev would.
if [ -e /dev/kvm ]; then
    chgrp kvm /dev/kvm
    chmod 0660 /dev/kvm
fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# The first start after install probes QEMU's capabilities (8-12 s); later ones
# answer in about 0.1 s.
wait_answer() {
    for _ in $(seq 600); do
        if virsh -c qemu:///system version >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "libvirtd-start: qemu:///system did not answer within 60 s; see /var/log/libvirt/libvirtd.log" >&2
    exit 1
}

running /run/virtlogd.pid || /usr/sbin/virtlogd -d
running /run/libvirtd.pid || /usr/sbin/libvirtd -d
wait_answer

# libvirtd loads its storage backends once, at start: a daemon that was running when
# libvirt-daemon-driver-storage-rbd got installed does not know rbd pools (the
# storage tests need them). Restart such a daemon; its guests keep running.
rbd_backend=$(echo /usr/lib/*/libvirt/storage-backend/libvirt_storage_backend_rbd.so)
caps=$(virsh -c qemu:///system pool-capabilities)
if [ -e "$rbd_backend" ] && [[ $caps != *"type='rbd' supported='yes'"* ]]; then
    echo "libvirtd-start: libvirtd predates its rbd storage driver; restarting it" >&2
    bash "$(dirname "$0")/libvirtd-stop.sh"
    /usr/sbin/virtlogd -d
    /usr/sbin/libvirtd -d
    wait_answer
fi
