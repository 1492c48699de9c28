/* SPDX-License-Identifier: MIT */
/*
 * Helpers of the tools area beyond tools/common.h: library errors of a
 * handle, paths relative to an image, and a progress line with throughput
 * and ETA.
 */
#ifndef TOOLS_CMDLINE_H
#define TOOLS_CMDLINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tools/common.h"

struct img;

/* img_errmsg(img) or strerror(-err) when the handle has none; the
 * system's reason ("No space left on device") is appended when the
 * message does not say it already.  One line. */
void cmdline_img_error(struct img *img, int err);
/* The same for a message recorded earlier (pipeline_fail). */
void cmdline_report_error(const char *msg, int err);
/* The same line with "; NOTE" after it (NULL: none). */
void cmdline_report_error_note(const char *msg, int err, const char *note);
/* A pipeline_ops.report that prints with cmdline_report_error. */
void cmdline_pipeline_report(void *ctx, int err, const char *msg);

/* getopt_long returned '?': one usage line naming the bad option and exit
 * code 2.  Commands set opterr = 0 so getopt itself prints nothing. */
int cmdline_bad_option(const char *cmd, char **argv);

/* Join "a/b" + name: when name is relative, relative to dirname(base). */
char *cmdline_path_relative_to(const char *base, const char *name);

/* A progress line on stderr, only when stderr is a terminal. */
struct cmdline_progress {
	bool enabled;
	uint64_t total;
	double start;
	double last;
};
void cmdline_progress_start(struct cmdline_progress *p, bool wanted,
			    uint64_t total);
void cmdline_progress_update(struct cmdline_progress *p, uint64_t done);
void cmdline_progress_end(struct cmdline_progress *p, bool ok);

/* Monotonic seconds. */
double cmdline_now(void);

#endif
