/* SPDX-License-Identifier: MIT */
/* Helpers shared by the imgtool commands. */
#include "tools/common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void tool_error(const char *fmt, ...)
{
	va_list ap;

	fputs("imgtool: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int tool_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("imgtool: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (try 'imgtool %s%s--help')\n", cmd ? cmd : "",
		cmd ? " " : "");
	return TOOL_EXIT_USAGE;
}

bool tool_is_help(const char *arg)
{
	return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

int tool_parse_size(const char *text, uint64_t *out)
{
	int r = img_parse_size(text, out);

	if (r == -ERANGE)
		tool_error("size '%s' is too large", text);
	else if (r < 0)
		tool_error(
			"invalid size '%s' (a number of bytes, optionally with a K, M, G, T, P or E suffix, or s for 512-byte sectors)",
			text);
	return r;
}

const char *tool_human_size(uint64_t bytes, char *buf, size_t len)
{
	return img_format_size(bytes, buf, len);
}

int tool_append_option(char **opts, const char *more)
{
	char *joined;

	if (!*opts) {
		joined = strdup(more);
	} else if (asprintf(&joined, "%s,%s", *opts, more) < 0) {
		joined = NULL;
	}
	if (!joined) {
		tool_error("out of memory");
		return -ENOMEM;
	}
	free(*opts);
	*opts = joined;
	return 0;
}

bool tool_options_ask_help(const char *opts)
{
	return opts && (strcmp(opts, "help") == 0 || strcmp(opts, "?") == 0);
}

void tool_print_create_options(FILE *out, const char *format)
{
	const char *const *own = img_format_create_options(format);

	fprintf(out, "Supported options for %s:\n", format);
	fprintf(out,
		"  size=SIZE            virtual disk size\n  subformat=NAME       the format's variant\n  cluster_size=SIZE    block/grain size (also block_size=, grain_size=)\n  preallocation=MODE   off or full\n  backing_file=FILE    parent image\n  backing_fmt=FMT      parent's format\n");
	for (; own && *own; own++)
		fprintf(out, "  %s=...\n", *own);
}

int tool_open_opts(struct img **out, const char *path,
		   const struct img_open_options *opts)
{
	char err[IMG_ERRMSG_MAX];
	int r = img_open(out, path, opts, err, sizeof(err));

	if (r < 0)
		tool_error("%s", err);
	return r;
}

int tool_open(struct img **out, const char *path, const char *format,
	      unsigned flags)
{
	struct img_open_options o = { .format = format, .flags = flags };

	return tool_open_opts(out, path, &o);
}

int tool_close(struct img *img)
{
	char name[4096];
	int r;

	if (!img)
		return 0;
	if (snprintf(name, sizeof(name), "%s", img_filename(img)) < 0)
		name[0] = '\0';
	r = img_flush(img);
	if (r < 0)
		tool_error("%s", img_errmsg(img));
	if (img_close(img) < 0 && r == 0) {
		tool_error("%s: flush on close failed", name);
		r = -EIO;
	}
	return r;
}

/* ---- JSON ------------------------------------------------------------------*/

/* Length of the valid UTF-8 sequence at p, or 0 if it is not one. */
static int utf8_sequence_length(const unsigned char *p)
{
	int n;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4;
	else
		return 0;
	for (int i = 1; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	/* overlong or surrogate forms */
	if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0) ||
	    (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
		return 0;
	return n;
}

void json_write_escaped(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		int n = utf8_sequence_length(p);

		if (n > 1) {
			fwrite(p, 1, (size_t)n, out);
			p += n - 1;
			continue;
		}
		if (n == 0) {
			/* File names need not be UTF-8; JSON must be.  A
			 * stray byte is shown as the code point of its
			 * value, so the output stays valid. */
			fprintf(out, "\\u%04x", *p);
			continue;
		}
		switch (*p) {
		case '"':
			fputs("\\\"", out);
			break;
		case '\\':
			fputs("\\\\", out);
			break;
		case '\n':
			fputs("\\n", out);
			break;
		case '\r':
			fputs("\\r", out);
			break;
		case '\t':
			fputs("\\t", out);
			break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				fprintf(out, "\\u%04x", *p);
			else
				fputc(*p, out);
		}
	}
	fputc('"', out);
}

void json_init(struct json_writer *w, FILE *out)
{
	memset(w, 0, sizeof(*w));
	w->out = out;
}

/* Comma, newline and indent before an item, then "key": if any. */
static void json_item(struct json_writer *w, const char *key)
{
	if (w->depth > 0) {
		if (w->has_items[w->depth])
			fputc(',', w->out);
		fputc('\n', w->out);
		for (int i = 0; i < w->depth; i++)
			fputs("    ", w->out);
	}
	if (w->depth < JSON_MAX_DEPTH)
		w->has_items[w->depth] = true;
	if (key) {
		json_write_escaped(w->out, key);
		fputs(": ", w->out);
	}
}

static void json_open(struct json_writer *w, const char *key, char c)
{
	json_item(w, key);
	fputc(c, w->out);
	if (w->depth + 1 < JSON_MAX_DEPTH) {
		w->depth++;
		w->has_items[w->depth] = false;
	}
}

static void json_close(struct json_writer *w, char c)
{
	bool had = w->has_items[w->depth];

	if (w->depth > 0)
		w->depth--;
	if (had) {
		fputc('\n', w->out);
		for (int i = 0; i < w->depth; i++)
			fputs("    ", w->out);
	}
	fputc(c, w->out);
}

void json_object_begin(struct json_writer *w, const char *key)
{
	json_open(w, key, '{');
}

void json_object_end(struct json_writer *w)
{
	json_close(w, '}');
}

void json_array_begin(struct json_writer *w, const char *key)
{
	json_open(w, key, '[');
}

void json_array_end(struct json_writer *w)
{
	json_close(w, ']');
}

void json_string(struct json_writer *w, const char *key, const char *value)
{
	json_item(w, key);
	json_write_escaped(w->out, value);
}

void json_uint(struct json_writer *w, const char *key, uint64_t value)
{
	json_item(w, key);
	fprintf(w->out, "%" PRIu64, value);
}

void json_int(struct json_writer *w, const char *key, int64_t value)
{
	json_item(w, key);
	fprintf(w->out, "%" PRId64, value);
}

void json_bool(struct json_writer *w, const char *key, bool value)
{
	json_item(w, key);
	fputs(value ? "true" : "false", w->out);
}

void json_null(struct json_writer *w, const char *key)
{
	json_item(w, key);
	fputs("null", w->out);
}

void json_finish(struct json_writer *w)
{
	fputc('\n', w->out);
	fflush(w->out);
}

/* ---- progress --------------------------------------------------------------*/

void tool_progress_init(struct tool_progress *p, bool requested, uint64_t total)
{
	p->on = requested && isatty(STDERR_FILENO);
	p->total = total;
	p->last = -1;
	tool_progress_update(p, 0);
}

void tool_progress_update(struct tool_progress *p, uint64_t done)
{
	int now;

	if (!p->on)
		return;
	now = p->total ? (int)((double)done * 10000.0 / (double)p->total)
		       : 10000;
	if (now > 10000)
		now = 10000;
	if (now == p->last)
		return;
	p->last = now;
	fprintf(stderr, "\r    (%d.%02d/100%%)", now / 100, now % 100);
	fflush(stderr);
}

void tool_progress_end(struct tool_progress *p)
{
	if (!p->on)
		return;
	tool_progress_update(p, p->total);
	fputc('\n', stderr);
}

int tool_daemon_start(const char *cmd)
{
	int p[2];
	char status = 1;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		tool_error("%s: pipe: %s", cmd, strerror(errno));
		exit(TOOL_EXIT_FAILURE);
	}
	pid = fork();
	if (pid < 0) {
		tool_error("%s: fork: %s", cmd, strerror(errno));
		exit(TOOL_EXIT_FAILURE);
	}
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &status, 1) != 1)
			status = 1;
		exit(status ? TOOL_EXIT_FAILURE : TOOL_EXIT_OK);
	}
	close(p[0]);
	setsid();
	return p[1];
}

static void daemon_report(int status_fd, char status)
{
	if (write(status_fd, &status, 1) != 1) {
		/* the parent is gone: nobody to tell */
	}
	close(status_fd);
}

void tool_daemon_ready(int status_fd)
{
	int null = open("/dev/null", O_RDWR);

	fflush(stdout);
	fflush(stderr);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (null > 2)
			close(null);
	}
	daemon_report(status_fd, 0);
}

void tool_daemon_failed(int status_fd)
{
	daemon_report(status_fd, 1);
}

int tool_parse_output(const char *cmd, const char *arg, bool *json)
{
	if (strcmp(arg, "json") == 0)
		*json = true;
	else if (strcmp(arg, "human") == 0)
		*json = false;
	else
		return tool_usage_error(cmd, "--output wants human or json");
	return 0;
}
