// SPDX-License-Identifier: MIT
/*
 * imgvm boot [OPTIONS]: boot a PC from the command line's options.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vmm/cmd.h"
#include "vmm/pc.h"

/* SIGINT/SIGTERM/SIGHUP stop the guest cleanly, so the disk is flushed.
 * SIGUSR2 takes a --screenshot (SIGUSR1 kicks vCPUs out of KVM_RUN). */
static void *signal_thread(void *opaque)
{
	struct pc *pc = opaque;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR2);
	while (sigwait(&set, &sig) == 0 && sig == SIGUSR2)
		screen_screenshot(&pc->screen, &pc->opt.screen);
	vmm_request_stop(pc->vm, 128 + sig, "terminated by signal %d", sig);
	/* A second signal means: now, without waiting for the guest. */
	while (sigwait(&set, &sig) == 0 && sig == SIGUSR2)
		;
	fprintf(stderr, "imgvm: terminated by signal %d\n", sig);
	_exit(128 + sig);
	return NULL;
}

int imgvm_boot(struct boot_options *opt, int ready_fd)
{
	struct pc pc = PC_INIT;
	const char *limitation = vmm_kvm_limitation();
	pthread_t sig_thread;
	sigset_t set;
	int status;

	pc.opt = *opt;
	if (limitation && !getenv("IMGVM_FORCE_KVM")) {
		fprintf(stderr, "imgvm: %s\n", limitation);
		return EXIT_NO_KVM;
	}
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	if (pc_setup(&pc)) {
		pc_teardown(&pc);
		return EXIT_USAGE;
	}
	pthread_create(&sig_thread, NULL, signal_thread, &pc);
	pthread_detach(sig_thread);
	if (ready_fd >= 0) {
		if (write(ready_fd, "R", 1) != 1) {
			/* the parent that waited is gone: run on anyway */
		}
		close(ready_fd);
	}
	status = pc_run(&pc);
	if (status)
		fprintf(stderr, "imgvm: %s\n",
			pc.vm->stop_reason[0] ? pc.vm->stop_reason
					      : "the guest stopped");
	if (pc_teardown(&pc) && !status)
		status = EXIT_GUEST_ERROR;
	return status;
}

int imgvm_cmd_boot(int argc, char **argv)
{
	struct boot_options opt;
	int ret = boot_options_parse(argc, argv, &opt);

	if (ret == BOOT_OPTIONS_HELP) {
		imgvm_usage(stdout);
		return 0;
	}
	if (ret)
		return EXIT_USAGE;
	return imgvm_boot(&opt, -1);
}
