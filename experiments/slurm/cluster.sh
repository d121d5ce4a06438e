#!/usr/bin/env bash
# Start, stop or inspect a real one-node Slurm cluster on this machine, for tests.
#
#   cluster.sh start  [STATE_DIR]   start munged (if needed), slurmctld and slurmd; wait until a job runs
#   cluster.sh stop   [STATE_DIR]   stop what `start` started; remove the slurm.conf it wrote
#   cluster.sh status [STATE_DIR]   print sinfo and squeue; exit 0 only if the cluster is healthy
#
# STATE_DIR (default /tmp/genas-slurm) holds everything the script writes (Slurm state, slurmd
# spool, logs, pid files, munged's log/pid/seed), except two things Slurm and munge require in
# fixed places: /etc/slurm/slurm.conf (client commands run by other programs read it there,
# with no SLURM_CONF in their environment) and munged's socket directory /run/munge.
#
# The script refuses to overwrite (or remove) a slurm.conf it did not write: the file it
# writes starts with the marker line below. Run as root (no systemd needed); Debian 12's
# slurm-wlm (22.05) and munge packages.
set -euo pipefail

readonly MARKER='# written by genas experiments/slurm/cluster.sh'
readonly CONF=/etc/slurm/slurm.conf
# Beside slurm.conf, where slurmd looks for it: the node's GPUs (see write_conf).
readonly GRES_CONF=/etc/slurm/gres.conf
# Our own client calls use exactly the file we write, whatever the caller's environment says.
export SLURM_CONF=$CONF

die() { echo "cluster.sh: error: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*"; }

usage() {
    echo "usage: $0 {start|stop|status} [STATE_DIR]   (STATE_DIR defaults to /tmp/genas-slurm)" >&2
    exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
readonly CMD=$1
STATE=${2:-/tmp/genas-slurm}
# slurm.conf values cannot hold whitespace, and daemons chdir: insist on a plain absolute path.
[[ $STATE =~ ^[^[:space:]]+$ ]] || die "STATE_DIR must not contain whitespace: '$STATE'"
STATE=$(realpath -m -- "$STATE")
readonly STATE

readonly CTLD_DIR=$STATE/slurmctld          # StateSaveLocation: job/node state survives a restart
readonly SPOOL_DIR=$STATE/slurmd            # SlurmdSpoolDir
readonly LOG_DIR=$STATE/log
readonly RUN_DIR=$STATE/run                 # pid files written by slurmctld and slurmd
readonly MUNGE_DIR=$STATE/munge             # owned by munge: munged's log, pid and seed files
readonly CTLD_PID=$RUN_DIR/slurmctld.pid
readonly SLURMD_PID=$RUN_DIR/slurmd.pid
readonly MUNGED_PID=$MUNGE_DIR/munged.pid   # exists only if this script started munged
readonly CTLD_LOG=$LOG_DIR/slurmctld.log
readonly SLURMD_LOG=$LOG_DIR/slurmd.log
readonly MUNGED_LOG=$MUNGE_DIR/munged.log

NODE=$(hostname -s)
readonly NODE

# ---------------------------------------------------------------------------------------------
# helpers

# True if process $1 exists and has not exited. A daemon that exited stays a zombie until
# init reaps it, which here takes up to ~2 s, and a zombie still has /proc/PID and its comm.
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }                          # fields after "(comm)": state first
    [[ ${stat%% *} != [ZX] ]]
}

# Print the pid recorded in pid file $1 if that process is running and is named $2 (a stale
# pid file whose pid now belongs to another program must never lead us to signal that program).
live_pid() {
    local file=$1 name=$2 pid comm
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] || return 1
    running "$pid" || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name" ]] || return 1
    echo "$pid"
}

# True if $1 does not exist or was written by this script (first line is the marker).
ours_or_absent() {
    [[ ! -e $1 ]] || [[ $(head -n 1 -- "$1") == "$MARKER" ]]
}

# True if the file was written by this script for this STATE_DIR (so `stop` with another
# STATE_DIR never removes the config of a cluster it did not start).
ours_for_this_state() {
    [[ -e $1 ]] && [[ $(head -n 1 -- "$1") == "$MARKER" ]] \
        && grep -qxF "# state dir: $STATE" -- "$1"
}

munge_answers() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

# Compact node state as sinfo prints it (%t: idle, mix, alloc, comp, down*, drain, idle*...).
node_state() {
    sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n 1
}

# Healthy: both daemons alive, slurmctld answering, and the node usable and responding
# (a trailing '*' means slurmctld has not heard from slurmd).
healthy() {
    live_pid "$CTLD_PID" slurmctld >/dev/null || return 1
    live_pid "$SLURMD_PID" slurmd >/dev/null || return 1
    scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
    case $(node_state) in
        idle | mix | alloc | comp) return 0 ;;
        *) return 1 ;;
    esac
}

print_logs() {
    local f
    for f in "$CTLD_LOG" "$LOG_DIR/slurmctld.out" "$SLURMD_LOG" "$LOG_DIR/slurmd.out" "$MUNGED_LOG"; do
        [[ -s $f ]] || continue
        echo "----- tail of $f -----" >&2
        tail -n 25 -- "$f" >&2
    done
}

fail_start() {
    echo "cluster.sh: error: $*" >&2
    print_logs
    exit 1
}

# Stop the daemons named by "PIDFILE:NAME" arguments together: SIGTERM each one that is really
# running under that name, wait up to 15 s for each (slurmctld saves its state first), then
# SIGKILL a straggler.
stop_daemons() {
    local spec file name pid i
    local -a pids=() names=()
    for spec in "$@"; do
        file=${spec%:*} name=${spec##*:}
        if pid=$(live_pid "$file" "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid") names+=("$name")
        fi
        rm -f -- "$file"
    done
    for ((i = 0; i < ${#pids[@]}; i++)); do
        pid=${pids[i]} name=${names[i]}
        local waited=0
        while running "$pid" && ((waited < 150)); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if running "$pid"; then
            say "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            while running "$pid"; do sleep 0.1; done
        fi
        say "stopped $name (pid $pid)"
    done
}

# ---------------------------------------------------------------------------------------------
# start

start_munge() {
    if munge_answers; then
        return 0                               # someone's munged already works: use it, never stop it
    fi
    # munged refuses to start unless its directories are owned by munge and not group/world
    # writable; /run/munge is where every client looks for the socket.
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 "$MUNGE_DIR"
    if [[ ! -e /etc/munge/munge.key ]]; then
        install -d -o munge -g munge -m 0700 /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
        say "created /etc/munge/munge.key"
    fi
    # --force: munge is not answering, so a socket left in /run/munge is stale.
    runuser -u munge -- /usr/sbin/munged --force \
        --log-file="$MUNGED_LOG" --pid-file="$MUNGED_PID" --seed-file="$MUNGE_DIR/munged.seed" \
        || fail_start "munged did not start"
    local i
    for ((i = 0; i < 50; i++)); do
        munge_answers && return 0
        sleep 0.1
    done
    fail_start "munged started but 'munge -n | unmunge' still fails"
}

write_conf() {
    local node_line
    # slurmd -C prints this machine's real layout; its second line (UpTime=...) is not config.
    node_line=$(slurmd -C | head -n 1)
    [[ $node_line == NodeName=* ]] || die "unexpected 'slurmd -C' output: $node_line"
    # GENAS_SLURM_CPUS=N declares N CPUs instead of the real count, so more single-threaded
    # tasks run side by side than there are cores (a test's tasks mostly wait on the
    # scheduler). The board/socket/core layout goes, as it would contradict N, and
    # SlurmdParameters=config_overrides lets slurmd accept the declared count.
    local overrides=""
    if [[ -n ${GENAS_SLURM_CPUS:-} ]]; then
        [[ $GENAS_SLURM_CPUS =~ ^[1-9][0-9]{0,3}$ ]] || die "GENAS_SLURM_CPUS must be a number from 1 to 9999"
        local name memory
        name=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$node_line")
        memory=$(grep -oE 'RealMemory=[0-9]+' <<<"$node_line" || true)
        node_line="NodeName=$name CPUs=$GENAS_SLURM_CPUS $memory"
        overrides="SlurmdParameters=config_overrides"
    fi
    mkdir -p "$(dirname "$CONF")"
    # GENAS_SLURM_GPUS=N (default 2) declares N GPUs, a GRES of type gpu backed by character
    # devices made under STATE_DIR/gpu (each a copy of /dev/null's numbers: no GPU is there),
    # so Slurm schedules them, counts them and sets CUDA_VISIBLE_DEVICES in each task's
    # environment as on a GPU node, which is what genas's tests of --gres need. 0 declares
    # none.
    local gpus=${GENAS_SLURM_GPUS:-2} gres_line="" node_gres=""
    [[ $gpus =~ ^[0-9]{1,2}$ ]] || die "GENAS_SLURM_GPUS must be a number from 0 to 99"
    if ((gpus > 0)); then
        mkdir -p "$STATE/gpu"
        local i
        for ((i = 0; i < gpus; i++)); do
            [[ -c $STATE/gpu/nvidia$i ]] || { rm -f -- "$STATE/gpu/nvidia$i"; mknod "$STATE/gpu/nvidia$i" c 1 3; }
        done
        gres_line="GresTypes=gpu"
        node_gres="Gres=gpu:$gpus"
        ours_or_absent "$GRES_CONF" || die "$GRES_CONF exists and was not written by this script; move it away first"
        {
            echo "$MARKER"
            echo "# state dir: $STATE"
            echo "AutoDetect=off"
            echo "Name=gpu File=$STATE/gpu/nvidia[0-$((gpus - 1))]"
        } >"$GRES_CONF.tmp.$$"
        chmod 0644 "$GRES_CONF.tmp.$$"
        mv -f -- "$GRES_CONF.tmp.$$" "$GRES_CONF"
    elif ours_or_absent "$GRES_CONF"; then
        rm -f -- "$GRES_CONF"
    fi
    # Written beside the target and renamed, so a client never reads half a file.
    cat >"$CONF.tmp.$$" <<EOF
$MARKER
# state dir: $STATE
# A one-node test cluster; stop it with: cluster.sh stop $STATE
ClusterName=genas
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Slurm 22.05 calls CryptoType 'CredType' (cred_munge.so); cred/munge is its default anyway.
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
# No cgroups (no systemd here, and none are needed for tests): plain /proc process tracking.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# One CPU per task, so a 2-CPU machine runs two tasks at once; memory is not a resource.
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Do not hold batch submissions back for batching (default 3 s). A job still waits up to ~1 s
# for slurmctld's once-a-second background loop to schedule it.
SchedulerParameters=batch_sched_delay=0
# No slurmdbd: finished jobs stay visible to 'scontrol show job' for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
# A node that went DOWN (slurmd stopped, restarted) comes back as soon as slurmd registers.
ReturnToService=2
# No mail program on this machine; job mail is never wanted in tests.
MailProg=/bin/true
StateSaveLocation=$CTLD_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info
$overrides
$gres_line
$node_line $node_gres State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 0644 "$CONF.tmp.$$"
    mv -f -- "$CONF.tmp.$$" "$CONF"
}

# Wait until slurmctld answers and the node is usable, then run a real job step: a node
# restored from saved state can read "idle" before slurmd has registered, so only a job that
# actually ran proves the cluster works.
wait_ready() {
    local deadline=$((SECONDS + 30)) state=""
    while ((SECONDS < deadline)); do
        if ! live_pid "$CTLD_PID" slurmctld >/dev/null && [[ -e $CTLD_PID ]]; then
            fail_start "slurmctld exited during start"
        fi
        state=$(node_state)
        if healthy; then
            break
        fi
        sleep 0.2
    done
    healthy || fail_start "cluster not healthy after 30 s (node $NODE state: '${state:-unknown}')"
    local out
    # --chdir: the caller's working directory may not exist any more (a removed temp dir).
    if ! out=$(timeout 30 srun -N1 -n1 --job-name=genas-smoke --chdir="$STATE" true 2>&1); then
        echo "$out" >&2
        fail_start "smoke test 'srun -N1 -n1 true' failed"
    fi
}

# Any slurmctld/slurmd on this machine that is not ours (another STATE_DIR, a hand-started
# one, the distribution's service) would fight ours for the ports and the config file.
refuse_foreign_daemons() {
    local name pid ours
    for name in slurmctld slurmd; do
        ours=$(live_pid "$RUN_DIR/$name.pid" "$name" || true)
        for pid in $(pgrep -x "$name" || true); do
            [[ $pid == "$ours" ]] && continue
            running "$pid" || continue         # a zombie, e.g. ours from a stop just now
            die "a $name not started by this script with STATE_DIR $STATE is running (pid $pid); stop it first"
        done
    done
}

cmd_start() {
    local t0 ctld slurmd ms
    t0=$(date +%s%N)
    [[ $EUID -eq 0 ]] || die "must run as root (SlurmUser=root, and it writes $CONF)"
    ours_or_absent "$CONF" || die "$CONF exists and was not written by this script; refusing to overwrite it"

    ctld=$(live_pid "$CTLD_PID" slurmctld || true)
    slurmd=$(live_pid "$SLURMD_PID" slurmd || true)
    if [[ -n $ctld && -n $slurmd ]] && ours_for_this_state "$CONF"; then
        # Already up (idempotent start): give a just-started cluster a moment to settle.
        local i
        for ((i = 0; i < 50; i++)); do
            if healthy; then
                say "already running and healthy (state dir $STATE; slurmctld pid $ctld, slurmd pid $slurmd)"
                return 0
            fi
            sleep 0.2
        done
        fail_start "already running (slurmctld pid $ctld, slurmd pid $slurmd) but not healthy; try: $0 stop $STATE"
    fi
    if [[ -n $ctld || -n $slurmd ]]; then
        # Half a cluster (one daemon died, or the config was removed): start over cleanly.
        say "found a partly running cluster in $STATE; stopping it first"
        stop_daemons "$SLURMD_PID:slurmd" "$CTLD_PID:slurmctld"
    fi
    refuse_foreign_daemons

    install -d -m 0755 "$STATE" "$LOG_DIR" "$RUN_DIR" "$SPOOL_DIR"
    install -d -m 0700 "$CTLD_DIR"
    start_munge
    write_conf

    # Both daemonize after reading the config; their pid files land in $RUN_DIR. Their own
    # logs go to $LOG_DIR/*.log; whatever they print before that goes to *.out.
    slurmctld -f "$CONF" </dev/null >"$LOG_DIR/slurmctld.out" 2>&1 \
        || fail_start "slurmctld failed to start"
    slurmd -f "$CONF" </dev/null >"$LOG_DIR/slurmd.out" 2>&1 \
        || fail_start "slurmd failed to start"
    wait_ready

    ms=$((($(date +%s%N) - t0) / 1000000))
    say "started in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s: cluster genas, node $NODE ($(sinfo -h -N -n "$NODE" -o '%c') CPUs), partition debug, state dir $STATE"
}

# ---------------------------------------------------------------------------------------------
# stop

cmd_stop() {
    local any=0 name
    for name in slurmd slurmctld; do
        live_pid "$RUN_DIR/$name.pid" "$name" >/dev/null && any=1
    done
    live_pid "$MUNGED_PID" munged >/dev/null && any=1
    if ((any == 0)); then
        say "not running (state dir $STATE)"
    fi
    # Both Slurm daemons at once; munged last, once nothing needs credentials any more. Only a
    # munged this script started has a pid file under STATE_DIR.
    stop_daemons "$SLURMD_PID:slurmd" "$CTLD_PID:slurmctld"
    stop_daemons "$MUNGED_PID:munged"
    if ours_for_this_state "$CONF"; then
        rm -f -- "$CONF"
        say "removed $CONF"
    fi
    if ours_for_this_state "$GRES_CONF"; then
        rm -f -- "$GRES_CONF"
    fi
    return 0
}

# ---------------------------------------------------------------------------------------------
# status

cmd_status() {
    if ! live_pid "$CTLD_PID" slurmctld >/dev/null; then
        say "not running (no slurmctld for state dir $STATE)"
        return 1
    fi
    sinfo || true
    squeue || true
    if healthy; then
        say "healthy"
        return 0
    fi
    say "NOT healthy (node $NODE state: '$(node_state)'; slurmd pid: $(live_pid "$SLURMD_PID" slurmd || echo none))"
    return 1
}

case $CMD in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage ;;
esac
