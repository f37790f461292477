// See CDonutSignals.h. Only async-signal-safe operations in the handler: one store.
#define _GNU_SOURCE
#include "CDonutSignals.h"
#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal = 0;

static void on_stop_signal(int signum) { stop_signal = signum; }

int donut_stop_requested(void) { return stop_signal != 0; }
int donut_stop_signal(void) { return stop_signal; }

static sigset_t stop_set(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    return set;
}

void donut_stop_install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;   // reads and waits resume after the handler: the flag is asked later
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGUSR1, &action, NULL);
    sigset_t set = stop_set();
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

void donut_stop_before_exec(void) {
    sigset_t set = stop_set();
    sigprocmask(SIG_BLOCK, &set, NULL);
    // A process-directed pending signal survives execve (a thread-directed raise() might not).
    if (stop_signal != 0) kill(getpid(), stop_signal);
}

void donut_stop_after_exec(void) {
    sigset_t set = stop_set();
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

// The commands whose SIGTERM/SIGUSR1 is a stop request: train, refine, sweep.
static int is_stoppable(const char *command) {
    return command != NULL && (strcmp(command, "train") == 0 || strcmp(command, "refine") == 0 ||
                               strcmp(command, "sweep") == 0);
}

// Runs before every other initialiser of the process — the shared libraries' constructors
// (Swift runtime, Foundation, Open MPI, HDF5, OpenBLAS's thread start) included — as the
// executable's DT_PREINIT_ARRAY (glibc calls it with argc, argv, envp). In any other program
// that links this file (test runners) argv[1] is no donut command and nothing happens.
static void install_before_main(int argc, char **argv, char **envp) {
    (void)envp;
    if (argc > 1 && is_stoppable(argv[1])) {
        donut_stop_install();
    }
}

__attribute__((section(".preinit_array"), used))
static void (*const donut_preinit_stop_handlers)(int, char **, char **) = install_before_main;
