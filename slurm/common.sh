# What every Donut Slurm template shares, sourced inside the job after the template has found
# this folder (under sbatch, $0 is Slurm's spooled copy, so the templates find slurm/ through
# the path the job was submitted with, as `scontrol show job` records it, or DONUT_SLURM_DIR).
# Not a script to run. Exit codes: slurm/README.md, "Exit codes".

# donut_setup NAME: site settings, modules, the binary, one BLAS thread per CPU of a rank.
# NAME (e.g. "train") names the stage in the messages. Exits 127 when no donut binary is found.
donut_setup() {
    DONUT_STAGE=$1
    # shellcheck source=site.sh
    source "$DONUT_SLURM_DIR/site.sh"
    if [[ -n $DONUT_MODULES ]]; then module load $DONUT_MODULES; fi
    export OPENBLAS_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
    if [[ -n $DONUT ]]; then
        [[ -f $DONUT && -x $DONUT ]] || donut_exit 127 "no donut binary: DONUT='$DONUT' (environment or slurm/site.sh) is not an executable file"
    elif command -v donut >/dev/null; then
        DONUT=$(command -v donut)
    else
        DONUT=$SLURM_SUBMIT_DIR/.build/release/donut
        [[ -x $DONUT ]] || donut_exit 127 "no donut binary: none on PATH nor at $DONUT (install it: scripts/install, README.md; or set DONUT=/path/to/donut)"
    fi
}

# donut_meaning CODE: what an exit code of donut or a template means (the table of slurm/README.md).
donut_meaning() {
    case $1 in
        0) echo "done (or already done: nothing to do)" ;;
        1) echo "internal error (a bug: please report it with this log)" ;;
        2) echo "bad input or usage, refused before any computation (the message above names the file and field)" ;;
        3) echo "some scans or sweep points failed, the others are done (the status file or the log gives each failure's reason)" ;;
        75) echo "preempted: a checkpoint was written; resubmitting resumes from it" ;;
        127) echo "donut binary not found" ;;
        *) if (( $1 > 128 )); then echo "killed by signal $(( $1 - 128 ))"; else echo "unexpected exit code"; fi ;;
    esac
}

# donut_mpi ARGS…: donut on every rank of the allocation (DONUT_LAUNCH, srun --mpi=pmix by
# default). donut refuses to start when the MPI world size differs from SLURM_NTASKS.
# Sets DONUT_STATUS (never exits: the caller decides, usually with donut_exit).
# SIGTERM to the job script (scancel, a preemption, the time limit) becomes SIGUSR1 to the
# launcher (donut_forward_term), so that train/refine/sweep checkpoint and end with 75.
donut_mpi() {
    DONUT_STATUS=0
    echo "donut-$DONUT_STAGE job ${SLURM_JOB_ID:-}${SLURM_ARRAY_TASK_ID:+ (array $SLURM_ARRAY_JOB_ID, task $SLURM_ARRAY_TASK_ID)}${SLURM_RESTART_COUNT:+, restart $SLURM_RESTART_COUNT} on $(hostname -s): $DONUT_LAUNCH $DONUT $*" >&2
    donut_forward_term $DONUT_LAUNCH "$DONUT" "$@" || DONUT_STATUS=$?
}

# Open MPI 4.1's mpirun, itself given SIGTERM (Slurm ending a job signals every process of
# it, mpirun included), ends the job with exit 1 whatever its ranks return: it sends them
# SIGCONT, SIGTERM odls_base_sigkill_timeout seconds later (default 1) and SIGKILL as long
# again after that. The ranks, signalled by Slurm at once too, thus get 10 s instead of 2 to
# finish their step and write the checkpoint. The price (measured): mpirun itself lingers
# about 8 s after SIGTERM even when its ranks are gone at once — within Slurm's default
# KillWait (30 s). No effect under srun.
export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-5}

# donut_forward_term LAUNCHER ARGS…: runs LAUNCHER ARGS… (mpirun or srun with donut) and
# returns its exit code. A SIGTERM or SIGUSR1 to this shell meanwhile is passed on as
# SIGUSR1, which mpirun and srun forward to every rank: a training checkpoints and the
# launcher exits 75 (SIGTERM itself would make mpirun exit 1: docs/training.md, "Signals
# under mpirun"). Passed on no sooner than 2 s after the launch (a SIGUSR1 before mpirun or a
# rank has installed its handler ends that process) and again every 10 s until the launcher
# ends (mpirun drops a signal that arrives before it has started the ranks). A SIGTERM sets
# DONUT_TERMINATED=1: Slurm is ending the job (scancel, time limit, preemption), so
# donut_requeue_or_exit does not requeue it. The launcher runs in the background because
# bash runs a trap only once its foreground command has ended.
donut_forward_term() {
    local pid status started next now stopping=0
    DONUT_TERMINATED=0
    started=${EPOCHREALTIME/[.,]/}   # microseconds
    "$@" &
    pid=$!
    trap 'stopping=1; DONUT_TERMINATED=1' TERM
    trap 'stopping=1' USR1
    while :; do
        if (( stopping )); then
            # Polled, so that the script goes on as soon as the launcher has ended.
            next=$(( started + 2000000 ))
            while kill -0 "$pid" 2>/dev/null; do
                now=${EPOCHREALTIME/[.,]/}
                if (( now >= next )); then
                    kill -USR1 "$pid" 2>/dev/null || true
                    next=$(( now + 10000000 ))
                fi
                sleep 0.2
            done
        fi
        status=0
        wait "$pid" || status=$?
        # `wait` returns early (> 128) when a trap ran: the launcher may still be running.
        (( status > 128 )) && kill -0 "$pid" 2>/dev/null || break
    done
    trap - TERM USR1
    return "$status"
}

# donut_exit CODE [REASON]: the last line of the log says how the stage ended and why; exits CODE.
# Inside slurm/pipeline.sh (DONUT_PIPELINE_DIR set) the stage also records CODE there, and a
# failed stage cancels the pipeline's later stages, saying so here and in the pipeline log.
donut_exit() {
    local code=$1 reason=${2:-$(donut_meaning "$1")}
    local line="donut-$DONUT_STAGE job ${SLURM_JOB_ID:-?}: exit $code: $reason"
    if [[ -n ${DONUT_PIPELINE_DIR:-} ]]; then
        echo "$code" > "$DONUT_PIPELINE_DIR/$DONUT_STAGE.exit"
        echo "$(date '+%F %T') $line" >> "$DONUT_PIPELINE_DIR/pipeline.log"
        if (( code != 0 )) && [[ -f $DONUT_PIPELINE_DIR/jobs ]]; then
            local later
            later=$(awk -v me="$DONUT_STAGE" 'found && $1 != "summary" {print $2} $1 == me {found = 1}' "$DONUT_PIPELINE_DIR/jobs" | xargs)
            if [[ -n $later ]]; then
                scancel $later 2>/dev/null || true
                local note="donut-$DONUT_STAGE failed: cancelled the later pipeline stages (jobs $later)"
                echo "$note" >&2
                echo "$(date '+%F %T') $note" >> "$DONUT_PIPELINE_DIR/pipeline.log"
            fi
        fi
    fi
    echo "$line" >&2
    exit "$code"
}

# donut_requeue_or_exit: after a preemptible stage (train, refine, sweep point). Exit 75 (the
# time-limit warning arrived, a checkpoint was written) requeues the job: the next allocation
# resumes from the checkpoint — unless the job script itself got SIGTERM (DONUT_TERMINATED):
# then Slurm is ending the job (a user's scancel must not come back as a requeue), and the
# log says to resubmit. Any other code ends the job with donut_exit.
donut_requeue_or_exit() {
    if (( ${DONUT_TERMINATED:-0} )); then
        if (( DONUT_STATUS == 75 )); then
            donut_exit 75 "preempted: SIGTERM (Slurm is ending the job: scancel, time limit or preemption), checkpoint written; not requeued: submit the same command again to resume"
        fi
        # Open MPI's mpirun exits 1 when it is signalled itself, whatever its ranks did.
        donut_exit "$DONUT_STATUS" "SIGTERM (Slurm is ending the job: scancel, time limit or preemption); $DONUT_LAUNCH exited $DONUT_STATUS (mpirun exits 1 when signalled, whatever the ranks did: docs/training.md, \"Signals under mpirun\"); submitting the same command again resumes the checkpoint if the ranks wrote one"
    fi
    if (( DONUT_STATUS == 75 )); then
        echo "donut-$DONUT_STAGE job $SLURM_JOB_ID: preempted at the time limit, checkpoint written; requeueing (restart $(( ${SLURM_RESTART_COUNT:-0} + 1 )))" >&2
        [[ -z ${DONUT_PIPELINE_DIR:-} ]] || echo "$(date '+%F %T') donut-$DONUT_STAGE job $SLURM_JOB_ID: requeued" >> "$DONUT_PIPELINE_DIR/pipeline.log"
        # Slurm refuses to requeue a job it is already ending (scancel, the time limit
        # reached): the checkpoint is there, a resubmission of the same command resumes.
        scontrol requeue "$SLURM_JOB_ID" ||
            donut_exit 75 "preempted, checkpoint written, but Slurm did not requeue the job (cancelled or at its time limit): submit the same command again to resume"
        exit 0
    fi
    donut_exit "$DONUT_STATUS"
}
