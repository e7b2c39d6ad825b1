#!/bin/bash
# Start virtlogd and the monolithic libvirtd (Debian 12's libvirt 9.0 packages no
# virtqemud) without systemd, then wait until qemu:///system answers. Idempotent:
# a daemon whose pid file names a live process is left alone. Stop with
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

running /run/virtlogd.pid || /usr/sbin/virtlogd -d
running /run/libvirtd.pid || /usr/sbin/libvirtd -d

# The first start after install probes QEMU's capabilities (8-12 s); later ones
# answer in about 0.1 s.
for _ in $(seq 600); do
    if virsh -c qemu:///system version >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.1
done
echo "libvirtd-start: qemu:///system did not answer within 60 s; see /var/log/libvirt/libvirtd.log" >&2
exit 1
