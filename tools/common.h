/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the imgtool commands: error and usage messages, sizes,
 * -o option lists, opening images, a small JSON writer and a progress bar.
 */
#ifndef IMGTOOL_COMMON_H
#define IMGTOOL_COMMON_H

#include "libimg/img.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum tool_exit {
	TOOL_EXIT_OK = 0,
	TOOL_EXIT_FAILURE = 1,
	TOOL_EXIT_USAGE = 2,
};

/* "imgtool: <message>" on stderr, one line. */
void tool_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "imgtool: <message> (try 'imgtool CMD --help')", one line on stderr;
 * returns TOOL_EXIT_USAGE. */
int tool_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Is this argument "--help" or "-h"? (for commands parsing by hand) */
bool tool_is_help(const char *arg);

/* img_parse_size with a message: returns 0, or -EINVAL/-ERANGE after
 * printing "imgtool: invalid size '12Q' (...)". */
int tool_parse_size(const char *text, uint64_t *out);
/* "1 GiB" (static per-call buffer given by the caller). */
const char *tool_human_size(uint64_t bytes, char *buf, size_t len);

/* Append "more" to a comma-separated -o option list (several -o flags
 * accumulate as with qemu-img).  Returns 0 or -ENOMEM (message printed). */
int tool_append_option(char **opts, const char *more);
/* "-o help" or "-o ?": the user asks for the list of options. */
bool tool_options_ask_help(const char *opts);
/* Print the options a format accepts for create (generic + its own). */
void tool_print_create_options(FILE *out, const char *format);

/* Open an image and print the library's message on failure.  flags are
 * enum img_open_flags (add IMG_OPEN_NO_LOCK for -U/--force-share).
 * format may be NULL (probe). */
int tool_open(struct img **out, const char *path, const char *format,
	      unsigned flags);
/* The same with full options (backing override, search dirs). */
int tool_open_opts(struct img **out, const char *path,
		   const struct img_open_options *opts);
/* Close and report a failing final flush; returns 0 or the error. */
int tool_close(struct img *img);

/* --output=human|json: sets *json; a usage error (returned) otherwise. */
int tool_parse_output(const char *cmd, const char *arg, bool *json);

/* Background start for serve/mount --daemon: fork; the parent waits for one
 * status byte from the child and exits with it (0 ready, otherwise 1).
 * Returns the status pipe's write end in the child, which then reports
 * with tool_daemon_ready (stdio to /dev/null, parent exits 0) or
 * tool_daemon_failed (parent exits 1). */
int tool_daemon_start(const char *cmd);
void tool_daemon_ready(int status_fd);
void tool_daemon_failed(int status_fd);

/* ---- JSON ------------------------------------------------------------------
 * A streaming writer with qemu-img's layout (4-space indent).  key is NULL
 * for array elements and the top-level value. */
#define JSON_MAX_DEPTH 32
struct json_writer {
	FILE *out;
	int depth;
	bool has_items[JSON_MAX_DEPTH];
};

void json_init(struct json_writer *w, FILE *out);
void json_object_begin(struct json_writer *w, const char *key);
void json_object_end(struct json_writer *w);
void json_array_begin(struct json_writer *w, const char *key);
void json_array_end(struct json_writer *w);
void json_string(struct json_writer *w, const char *key, const char *value);
void json_uint(struct json_writer *w, const char *key, uint64_t value);
void json_int(struct json_writer *w, const char *key, int64_t value);
void json_bool(struct json_writer *w, const char *key, bool value);
void json_null(struct json_writer *w, const char *key);
/* Ends the document with a newline. */
void json_finish(struct json_writer *w);
/* Write s as a quoted, escaped JSON string. */
void json_write_escaped(FILE *out, const char *s);

/* ---- progress --------------------------------------------------------------
 * "(42.00/100%)" redrawn in place on stderr, only when enabled and stderr is
 * a terminal. */
struct tool_progress {
	bool on;
	uint64_t total;
	int last; /* hundredths of a percent last drawn */
};

void tool_progress_init(struct tool_progress *p, bool requested,
			uint64_t total);
void tool_progress_update(struct tool_progress *p, uint64_t done);
void tool_progress_end(struct tool_progress *p);

#endif
