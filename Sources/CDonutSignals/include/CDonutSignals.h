#ifndef CDONUTSIGNALS_H
#define CDONUTSIGNALS_H

/// The stop request of `donut train`, `refine` and `sweep` (Swift: `StopSignal`): SIGTERM
/// or SIGUSR1 (Slurm's warning before a time limit, a preemption, `kill`) sets a flag that
/// the pipelines ask at every phase before the first step and at every step, instead of
/// ending the process. The handlers are installed before any other code of the process runs
/// (`.preinit_array` of the executable, when its first argument is one of those commands),
/// so a signal during dynamic loading of the shared libraries' initialisers, argument
/// parsing, MPI_Init or reading the inputs is kept, not fatal (docs/robustness.md, "Signals").

/// 1 once SIGTERM or SIGUSR1 arrived (since the process started or the last clear), else 0.
int donut_stop_requested(void);

/// The signal that set the flag (SIGTERM or SIGUSR1), 0 if none arrived.
int donut_stop_signal(void);

/// Installs the flag-setting handlers for SIGTERM and SIGUSR1 (idempotent; keeps the flag)
/// and unblocks both signals in the calling thread (a launcher may have started us with
/// them blocked: a child inherits the mask).
void donut_stop_install(void);

/// Before `execv` of this same program (the OpenBLAS core-type re-exec): blocks SIGTERM and
/// SIGUSR1, and re-raises a stop request already received as a pending SIGTERM. The mask
/// and pending signals survive exec, and the new image's early handler receives it when it
/// unblocks them: a signal is not lost across the re-exec, nor fatal during it.
void donut_stop_before_exec(void);

/// After an `execv` that failed (or was not needed): unblocks SIGTERM and SIGUSR1 again;
/// a pending one reaches the handler.
void donut_stop_after_exec(void);

#endif
