/* SPDX-License-Identifier: MIT */
/* Helpers shared by the imgtool commands: see cmdline.h. */
#include "tools/cmdline.h"

#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Errors from the host system whose reason the user must see even when a
 * driver's message does not name it (a full disk, a read-only mount...);
 * format errors (EINVAL, EIO on bad data) are described by the message. */
static bool cmdline_is_system_error(int err)
{
	switch (-err) {
	case ENOSPC:
	case EDQUOT:
	case EROFS:
	case EACCES:
	case EPERM:
	case ENOMEM:
	case EBUSY:
	case ENOENT:
	case EFBIG:
	case EMFILE:
		return true;
	default:
		return false;
	}
}

void cmdline_report_error_note(const char *msg, int err, const char *note)
{
	const char *reason = err < 0 ? strerror(-err) : "failed";
	const char *sep = note ? "; " : "";

	if (!note)
		note = "";
	if (!msg || !*msg)
		tool_error("%s%s%s", reason, sep, note);
	else if (cmdline_is_system_error(err) && !strstr(msg, reason))
		tool_error("%s: %s%s%s", msg, reason, sep, note);
	else
		tool_error("%s%s%s", msg, sep, note);
}

void cmdline_report_error(const char *msg, int err)
{
	cmdline_report_error_note(msg, err, NULL);
}

void cmdline_pipeline_report(void *ctx, int err, const char *msg)
{
	(void)ctx;
	cmdline_report_error(msg, err);
}

void cmdline_img_error(struct img *img, int err)
{
	const char *msg = img ? img_errmsg(img) : NULL;
	char buf[IMG_ERRMSG_MAX + 16];

	if (msg && *msg) {
		cmdline_report_error(msg, err);
	} else if (img) {
		snprintf(buf, sizeof(buf), "%s", img_filename(img));
		cmdline_report_error(buf, err);
	} else {
		cmdline_report_error(NULL, err);
	}
}

int cmdline_bad_option(const char *cmd, char **argv)
{
	const char *arg = optind > 0 ? argv[optind - 1] : "?";

	if (optopt && arg[0] == '-' && arg[1] != '-')
		return tool_usage_error(
			cmd, "invalid option -%c or its argument is missing",
			optopt);
	return tool_usage_error(
		cmd, "invalid option '%s' or its argument is missing", arg);
}

char *cmdline_path_relative_to(const char *base, const char *name)
{
	char *copy, *dir, *out = NULL;

	if (name[0] == '/')
		return strdup(name);
	copy = strdup(base);
	if (!copy)
		return NULL;
	dir = dirname(copy);
	if (strcmp(dir, ".") == 0) {
		out = strdup(name);
	} else if (asprintf(&out, "%s/%s", dir, name) < 0) {
		out = NULL;
	}
	free(copy);
	return out;
}

double cmdline_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void cmdline_progress_start(struct cmdline_progress *p, bool wanted,
			    uint64_t total)
{
	p->enabled = wanted && isatty(STDERR_FILENO);
	p->total = total;
	p->start = cmdline_now();
	p->last = 0;
	if (p->enabled)
		cmdline_progress_update(p, 0);
}

void cmdline_progress_update(struct cmdline_progress *p, uint64_t done)
{
	double now, elapsed, rate, percent;
	char done_text[32], rate_text[32], eta[32];

	if (!p->enabled)
		return;
	now = cmdline_now();
	if (done < p->total && now - p->last < 0.1)
		return;
	p->last = now;
	elapsed = now - p->start;
	rate = elapsed > 0 ? (double)done / elapsed : 0;
	percent = p->total ? 100.0 * (double)done / (double)p->total : 100.0;
	img_format_size(done, done_text, sizeof(done_text));
	img_format_size((uint64_t)rate, rate_text, sizeof(rate_text));
	if (rate > 0 && done < p->total) {
		unsigned secs = (unsigned)((double)(p->total - done) / rate);

		snprintf(eta, sizeof(eta), "ETA %u:%02u:%02u", secs / 3600,
			 secs / 60 % 60, secs % 60);
	} else {
		snprintf(eta, sizeof(eta), "%.1f s", elapsed);
	}
	{
		enum { BAR = 24 };
		char bar[BAR + 1];
		int full = (int)(percent * BAR / 100.0);

		for (int i = 0; i < BAR; i++)
			bar[i] = i < full ? '#' : '.';
		bar[BAR] = '\0';
		fprintf(stderr, "\r[%s] %5.1f%%  %s  %s/s  %s\033[K", bar,
			percent, done_text, rate_text, eta);
	}
	fflush(stderr);
}

void cmdline_progress_end(struct cmdline_progress *p, bool ok)
{
	if (!p->enabled)
		return;
	if (ok)
		cmdline_progress_update(p, p->total);
	fputc('\n', stderr);
}
