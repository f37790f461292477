# Site settings for every Donut Slurm template: the ONE file to edit for your cluster.
#
# Read twice: by the templates inside each job (binary, modules, launcher) and, for the
# submission options, by your shell before `sbatch` (`source slurm/site.sh`, or put that line in
# ~/.bashrc) and by slurm/pipeline.sh. sbatch reads SBATCH_PARTITION / SBATCH_ACCOUNT from the
# environment; options on the sbatch command line override the templates' #SBATCH lines.

# Partition and account (empty: the cluster's defaults).
export SBATCH_PARTITION=${SBATCH_PARTITION:-}
export SBATCH_ACCOUNT=${SBATCH_ACCOUNT:-}
[[ -n $SBATCH_PARTITION ]] || unset SBATCH_PARTITION
[[ -n $SBATCH_ACCOUNT ]] || unset SBATCH_ACCOUNT

# Environment modules loaded in every job before donut starts (empty: none), e.g.
# DONUT_MODULES="openmpi/4.1 hdf5/1.10-openmpi openblas".
DONUT_MODULES=${DONUT_MODULES:-}

# The donut binary. Empty: `donut` on PATH (README, "Install"), else
# $SLURM_SUBMIT_DIR/.build/release/donut. The environment variable DONUT overrides it.
DONUT=${DONUT:-}

# How a job starts its MPI ranks. Debian/Ubuntu Open MPI needs PMIx under srun; if your
# srun has no `--mpi=pmix` (`srun --mpi=list`), use DONUT_LAUNCH="mpirun".
DONUT_LAUNCH=${DONUT_LAUNCH:-"srun --mpi=pmix"}

# Sizes of slurm/pipeline.sh's stages, one line each (sbatch options; they override the
# templates' #SBATCH lines). For a single template: `sbatch --ntasks=16 --time=8:00:00 slurm/train.sbatch …`.
DONUT_SIZE_LIBRARY=${DONUT_SIZE_LIBRARY:-"--ntasks=8 --time=00:15:00"}
DONUT_SIZE_TRAIN=${DONUT_SIZE_TRAIN:-"--ntasks=8 --time=04:00:00"}
DONUT_SIZE_REFINE=${DONUT_SIZE_REFINE:-"--ntasks=8 --time=04:00:00"}
