#!/usr/bin/env bash
# A whole analysis in one submission: simulate the library → train DONUT (data-parallel,
# preemptible: it checkpoints and requeues itself) → refine on the manifest's scans and
# re-infer them → summary. Run it on the login node (it is not a job): it submits four jobs
# chained with --dependency=afterok and prints their ids.
#
#   slurm/pipeline.sh [--refine-options "--epochs 5 --augment 0.5"] CONFIG.yaml MANIFEST.yaml DIR [donut train options]
#
#   CONFIG.yaml    instrument config (configs/README.md) → DIR/library.h5
#   MANIFEST.yaml  the scans to refine on and re-infer (configs/reprocess-example.yaml)
#   DIR            everything goes here: library.h5, model.h5, refined.h5, refined_maps/,
#                  the stages' logs (donut-<stage>-<job>.log) and pipeline.log
#   train options  e.g. --scan scan.h5 --mix 0.5 --epochs 20; without --scan the model
#                  trains on the library's frames alone (--mix 1)
#
# Sizes and site settings: slurm/site.sh (DONUT_SIZE_*). A stage that fails cancels the later
# ones and says so in its log and in DIR/pipeline.log; the summary job always runs and writes
# how each stage ended there. `slurm/pipeline.sh report DIR` prints that summary again.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)   # run directly, not by sbatch: $0 is this file

usage() {
    echo "usage: slurm/pipeline.sh [--refine-options \"OPTS\"] CONFIG.yaml MANIFEST.yaml DIR [donut train options]" >&2
    echo "       slurm/pipeline.sh report DIR" >&2
    exit 2
}

# report DIR: how every stage of the pipeline in DIR ended (the summary job runs this).
# Exit 0 when every stage succeeded, else the first failed stage's code (1 when a stage left no code).
report() {
    local dir=$1 stage job code status=0 state
    DONUT_SLURM_DIR=$here
    source "$here/common.sh"
    [[ -f $dir/jobs ]] || { echo "slurm/pipeline.sh: no pipeline in '$dir' (no jobs file)" >&2; exit 2; }
    {
        echo "pipeline summary ($(date '+%F %T')):"
        while read -r stage job; do
            [[ $stage == summary ]] && continue
            if [[ -f $dir/$stage.exit ]]; then
                code=$(<"$dir/$stage.exit")
                echo "  $stage (job $job): exit $code: $(donut_meaning "$code")"
            else
                code=1
                state=$(scontrol show job "$job" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
                if [[ $state == CANCELLED || ! -f $dir/donut-$stage-$job.log ]]; then
                    echo "  $stage (job $job): did not run: cancelled${state:+ (Slurm state $state)} after an earlier stage failed"
                else
                    echo "  $stage (job $job): did not finish${state:+ (Slurm state $state)}: killed by Slurm (time limit, memory, node failure): see $dir/donut-$stage-$job.log"
                fi
            fi
            (( code == 0 || status != 0 )) || status=$code
        done < "$dir/jobs"
        if [[ -f $dir/refined_maps/reprocess-status.json ]]; then
            local st=$dir/refined_maps/reprocess-status.json
            echo "  refined maps: $(grep -o '"state" *: *"done"' "$st" | wc -l) scan(s) done, $(grep -o '"state" *: *"failed"' "$st" | wc -l) failed ($st)"
        fi
        if (( status == 0 )); then echo "pipeline finished: every stage succeeded"
        else echo "pipeline FAILED: exit $status (see the stages above)"; fi
    } | tee -a "$dir/pipeline.log"
    exit "$status"
}

if [[ ${1:-} == report ]]; then
    (( $# == 2 )) || usage
    report "$(cd "$2" && pwd)"
fi

refine_options=()
if [[ ${1:-} == --refine-options ]]; then
    (( $# >= 2 )) || usage
    read -r -a refine_options <<< "$2"; shift 2
fi
(( $# >= 3 )) || usage
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
[[ -f $1 ]] || { echo "slurm/pipeline.sh: no config '$1'" >&2; exit 2; }
[[ -f $2 ]] || { echo "slurm/pipeline.sh: no manifest '$2'" >&2; exit 2; }
config=$(abs "$1") manifest=$(abs "$2")
mkdir -p "$3"
dir=$(cd "$3" && pwd)
shift 3
train_options=("$@")
[[ " ${train_options[*]} " == *" --scan "* ]] || train_options+=(--mix 1)
if [[ -e $dir/jobs ]]; then
    echo "slurm/pipeline.sh: $dir already holds a pipeline ($dir/jobs): use another folder, or remove that file to resubmit into it" >&2
    exit 2
fi

source "$here/site.sh"
# Every stage: its log in DIR, the pipeline folder in its environment (common.sh records the
# exit code there and cancels the later stages on failure).
common=(--parsable --export="ALL,DONUT_PIPELINE_DIR=$dir" --kill-on-invalid-dep=yes)
submit() {   # submit STAGE SIZES SBATCH-OPTIONS… -- TEMPLATE ARGS… → prints the job id
    local stage=$1 sizes=$2; shift 2
    local id
    id=$(sbatch "${common[@]}" --output="$dir/donut-$stage-%j.log" $sizes "$@")
    echo "${id%%;*}"
}

# The first stage is held until every stage is submitted and listed in DIR/jobs, so even a
# stage failing at once finds the later ones to cancel.
library=$(submit library "$DONUT_SIZE_LIBRARY" --hold "$here/library.sbatch" "$config" "$dir/library.h5")
train=$(submit train "$DONUT_SIZE_TRAIN" --dependency="afterok:$library" \
    "$here/train.sbatch" "$dir/model.h5" --library "$dir/library.h5" "${train_options[@]}")
refine=$(submit refine "$DONUT_SIZE_REFINE" --dependency="afterok:$train" \
    "$here/refine.sbatch" "$dir/model.h5" "$manifest" "$dir/library.h5" "$dir/refined.h5" \
    --out-dir "$dir/refined_maps" "${refine_options[@]}")
summary=$(sbatch --parsable --export=ALL --kill-on-invalid-dep=no --dependency="afterany:$library:$train:$refine" \
    --job-name=donut-summary --ntasks=1 --time=00:05:00 --output="$dir/donut-summary-%j.log" \
    --wrap="bash '$here/pipeline.sh' report '$dir'")
summary=${summary%%;*}
printf 'library %s\ntrain %s\nrefine %s\nsummary %s\n' "$library" "$train" "$refine" "$summary" > "$dir/jobs"
echo "$(date '+%F %T') submitted library $library, train $train, refine $refine, summary $summary" >> "$dir/pipeline.log"
scontrol release "$library"

echo "pipeline in $dir: library $library → train $train → refine $refine → summary $summary"
echo "follow it: squeue -j $library,$train,$refine,$summary; how it ended: $dir/pipeline.log"
