#!/bin/bash
# Start a one-node Ceph 16 for the storage tests: one mon, one memstore OSD (data in
# RAM, 1 GiB), no mgr (RBD and the S3 gateway do not need one), radosgw on
# 127.0.0.1:7480 with the S3 user TESTKEY/TESTSECRET and the storage classes WARM and
# COLD, and one RBD pool per AZ the tests use (FE_CEPH_POOLS). Auth is none: a lab
# cluster on loopback.
#
# Everything lives in FE_CEPH_DIR (default /var/tmp/fe-ceph): ceph.conf, pid files,
# logs. Idempotent: a cluster whose daemons all run is left alone (pools and user are
# still ensured); a half-dead one is stopped and made anew. Readiness is polled, never
# slept for. Stop with .ci/ceph-stop.sh.
set -euo pipefail

D=${FE_CEPH_DIR:-/var/tmp/fe-ceph}
POOLS=${FE_CEPH_POOLS:-fe-eu-west-0a fe-eu-west-0b fe-eu-west-1a fe-crash}
CONF=$D/ceph.conf
C=(-c "$CONF")
DAEMONS=(mon.a osd.0 client.rgw.a)
t0=$(date +%s%N)

say() { echo "ceph-start: [$(( ($(date +%s%N) - t0) / 1000000 )) ms] $*"; }
fail() { echo "ceph-start: $*" >&2; exit 1; }
# alive DAEMON: its pid file names a live process of its program (not a reused pid).
alive() {
    local pid program
    [ -f "$D/run/$1.pid" ] || return 1
    pid=$(cat "$D/run/$1.pid")
    case $1 in mon.*) program=ceph-mon ;; osd.*) program=ceph-osd ;; *) program=radosgw ;; esac
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$program" ]
}
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.1 s until it succeeds.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$(( $(date +%s) + seconds ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "$what not ready within $seconds s; see $D/log/"
        sleep 0.1
    done
}

osd_up() { ceph "${C[@]}" --connect-timeout 2 osd stat -f json | grep -q '"num_up_osds":1'; }
rgw_answers() { curl -sf -o /dev/null --max-time 2 http://127.0.0.1:7480/; }

create_user() {
    radosgw-admin "${C[@]}" user info --uid=test >/dev/null 2>&1 && return 0
    radosgw-admin "${C[@]}" user create --uid=test --display-name=test \
        --access-key=TESTKEY --secret-key=TESTSECRET >/dev/null
}

running=0
for d in "${DAEMONS[@]}"; do alive "$d" && running=$((running + 1)); done

if [ "$running" -eq "${#DAEMONS[@]}" ]; then
    # A test that froze a daemon (SIGSTOP) and died before resuming it leaves it stopped.
    for d in "${DAEMONS[@]}"; do kill -CONT "$(cat "$D/run/$d.pid")"; done
    say "already running in $D"
else
    if [ "$running" -gt 0 ]; then
        say "only $running of ${#DAEMONS[@]} daemons run; starting anew"
        FE_CEPH_DIR=$D bash "$(dirname "$0")/ceph-stop.sh"
    fi
    for port in 3300 6789 7480; do
        port_taken "$port" && fail "127.0.0.1:$port is taken by another process (another Ceph?); stop it first"
    done
    rm -rf "$D"
    mkdir -p "$D"/{run,log,mon.a,osd.0,rgw.a}
    fsid=$(uuidgen)
    cat >"$CONF" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:3300,v1:127.0.0.1:6789
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
# radosgw defaults to ms_mon_client_mode = secure, which auth none cannot satisfy
# (it loops on "get_initial_auth_request returned -13").
ms mon client mode = crc secure
ms client mode = crc secure
# Daemons' admin sockets default to \$run_dir/\$cluster-\$name.asok, clients' add their
# pid: many CLIs at once must not bind one socket.
run dir = $D/run
pid file = $D/run/\$name.pid
log file = $D/log/\$name.log
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
# Commit osdmaps (pool creation) at once: the cluster is ready in ~1.5 s, not ~13 s.
paxos propose interval = 0.05
paxos min wait = 0.01
[mon.a]
mon data = $D/mon.a
[osd]
osd data = $D/\$name
osd objectstore = memstore
memstore device bytes = 1073741824
osd memory target = 536870912
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:7480
rgw data = $D/rgw.a
rgw thread pool size = 32
CONF
    monmaptool --create --fsid "$fsid" --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' "$D/monmap" >/dev/null
    ceph-mon "${C[@]}" --mkfs -i a --monmap "$D/monmap"
    ceph-mon "${C[@]}" -i a
    wait_for 30 "mon" ceph "${C[@]}" --connect-timeout 2 mon stat
    say "mon up"
    osd_uuid=$(uuidgen)
    osd_id=$(ceph "${C[@]}" osd new "$osd_uuid")
    ceph-osd "${C[@]}" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >"$D/log/osd-mkfs.log" 2>&1 \
        || fail "OSD mkfs failed; see $D/log/osd-mkfs.log"
    ceph-osd "${C[@]}" -i "$osd_id" 2>>"$D/log/osd.start.log"
    wait_for 60 "osd" osd_up
    say "osd up"
    # The first radosgw-admin call that needs the zone creates the default zone and
    # zonegroup; the placement commands below cannot (they fail with ENOENT).
    create_user
    # S3 storage classes WARM and COLD beside STANDARD (in the default placement, on
    # the same data pool: a lab has one kind of disk). radosgw reads them at start.
    for class in WARM COLD; do
        radosgw-admin "${C[@]}" zonegroup placement add --rgw-zonegroup default \
            --placement-id default-placement --storage-class "$class" >/dev/null
        radosgw-admin "${C[@]}" zone placement add --rgw-zone default --placement-id default-placement \
            --storage-class "$class" --data-pool default.rgw.buckets.data >/dev/null
    done
    radosgw "${C[@]}" -n client.rgw.a 2>>"$D/log/rgw.start.log"
fi

# Ensured on every run: the missing pools are made in parallel (each CLI call costs
# ~0.3 s of python start-up), then initialised for RBD.
make_pool() {
    ceph "${C[@]}" --connect-timeout 10 osd pool create "$1" 8 8 >/dev/null 2>&1 || fail "cannot create pool $1"
    timeout 60 rbd "${C[@]}" pool init "$1" || fail "rbd pool init $1 failed"
}
existing=" $(ceph "${C[@]}" --connect-timeout 10 osd pool ls | tr '\n' ' ') "
jobs=()
for pool in $POOLS; do
    [[ $existing == *" $pool "* ]] && continue
    make_pool "$pool" &
    jobs+=($!)
done
for job in "${jobs[@]}"; do
    wait "$job" || fail "a pool could not be made (see above)"
done
say "rbd pools ready: $POOLS"
wait_for 60 "radosgw on 127.0.0.1:7480" rgw_answers
create_user
say "ready: conf $CONF, S3 on http://127.0.0.1:7480 (TESTKEY/TESTSECRET)"
