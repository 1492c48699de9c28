/* SPDX-License-Identifier: MIT */
/*
 * imgvm's subcommands, one file each (vmm/cmd_NAME.c); main.c dispatches.
 * Each takes its argv with argv[0] = the subcommand's name and returns the
 * process's exit status.
 */
#ifndef IMGVM_CMD_H
#define IMGVM_CMD_H

#include <stdbool.h>
#include <stdio.h>

#include "vmm/options.h"

/* Exit statuses (also in imgvm(1)) */
#define EXIT_USAGE 1
#define EXIT_GUEST_ERROR 2
#define EXIT_NO_KVM 3

/* The whole --help text. */
void imgvm_usage(FILE *out);

int imgvm_cmd_boot(int argc, char **argv);
int imgvm_cmd_create(int argc, char **argv);
int imgvm_cmd_list(int argc, char **argv);
int imgvm_cmd_show(int argc, char **argv);
int imgvm_cmd_modify(int argc, char **argv);
int imgvm_cmd_delete(int argc, char **argv);
int imgvm_cmd_start(int argc, char **argv);
int imgvm_cmd_snapshot(int argc, char **argv);
int imgvm_cmd_export(int argc, char **argv);
int imgvm_cmd_import(int argc, char **argv);
/* status, eject, insert, powerbutton, reset, pause, resume, stop,
 * screenshot, sendkeys: one request on the VM's control socket */
int imgvm_cmd_control(int argc, char **argv);

/* Boots the machine opt describes until the guest powers off; the exit
 * status.  For boot and start.  ready_fd >= 0: one byte is written to it
 * (and it is closed) once the machine is set up and about to run. */
int imgvm_boot(struct boot_options *opt, int ready_fd);

/* imgtool (next to this imgvm, else in PATH): its path, and a run of it
 * with args (args[0] = "imgtool"); quiet: its stdout to /dev/null.  Its
 * exit status, -1 when it could not run. */
void imgtool_path(char *out, size_t len);
int imgtool_run(const char *const args[], bool quiet);

#endif
