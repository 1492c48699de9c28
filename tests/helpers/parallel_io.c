/* SPDX-License-Identifier: MIT */
/*
 * parallel_io FORMAT[:SUBFORMAT] DIR [THREADS] [OPS]
 *
 * Many threads on one handle: random writes (aligned and not), reads,
 * flushes, zeroes and discards, each thread in its own stripes of the disk
 * so the outcome is known; the image must then match the model byte for
 * byte, before and after a reopen, and check clean.  Exit 0 when it does,
 * 1 with one line on stderr when not.  tests/e2e/core.sh runs it on every
 * format; `make check SANITIZE=thread` runs it under ThreadSanitizer
 * (which Criterion's forking runner does not survive, hence a program).
 */
#include "img.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DISK_SIZE (8u << 20)
#define STRIPE (64u << 10) /* a thread owns every NTHREADS-th stripe */
#define MAX_THREADS 16
#define MAX_IO (48u << 10)

static unsigned nthreads = 4, nops = 2000;
static uint8_t *model; /* what every byte must read as */

static void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
	va_list ap;

	fputs("parallel_io: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

struct worker {
	struct img *img;
	unsigned id;
	unsigned seed;
	bool discard_zeroes; /* discard of this format leaves zeros */
	char failure[256];
};

/* A random range inside one of the worker's own stripes. */
static void pick_range(struct worker *w, bool aligned, uint64_t *off,
		       size_t *len)
{
	unsigned nstripes = DISK_SIZE / STRIPE / nthreads;
	unsigned stripe = (unsigned)rand_r(&w->seed) % nstripes;
	uint64_t base = ((uint64_t)stripe * nthreads + w->id) * STRIPE;
	size_t in = (size_t)rand_r(&w->seed) % STRIPE;
	size_t n = 1 + (size_t)rand_r(&w->seed) % MAX_IO;

	if (aligned) {
		in &= ~(size_t)4095;
		n = (n + 4095) & ~(size_t)4095;
	}
	if (n > STRIPE - in)
		n = STRIPE - in;
	*off = base + in;
	*len = n;
}

static bool fail_with(struct worker *w, const char *what, uint64_t off,
		      size_t len, int r)
{
	snprintf(w->failure, sizeof(w->failure),
		 "thread %u: %s at %llu+%zu: %d %s", w->id, what,
		 (unsigned long long)off, len, r, img_errmsg(w->img));
	return false;
}

static bool worker_step(struct worker *w, uint8_t *buf)
{
	unsigned op = (unsigned)rand_r(&w->seed) % 100;
	uint64_t off;
	size_t len;
	int r;

	if (op < 45) { /* write, one in four unaligned */
		pick_range(w, op % 4 != 0, &off, &len);
		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)rand_r(&w->seed);
		r = img_pwrite(w->img, buf, len, off);
		if (r)
			return fail_with(w, "write", off, len, r);
		memcpy(model + off, buf, len);
	} else if (op < 85) { /* read back what this thread knows */
		pick_range(w, op % 2, &off, &len);
		r = img_pread(w->img, buf, len, off);
		if (r)
			return fail_with(w, "read", off, len, r);
		if (memcmp(buf, model + off, len))
			return fail_with(w, "read mismatch", off, len, 0);
	} else if (op < 92) {
		r = img_flush(w->img);
		if (r)
			return fail_with(w, "flush", 0, 0, r);
	} else if (op < 97 || !w->discard_zeroes) {
		pick_range(w, true, &off, &len);
		r = img_write_zeroes(w->img, off, len,
				     op % 2 ? IMG_ZERO_MAY_UNMAP : 0);
		if (r)
			return fail_with(w, "write zeroes", off, len, r);
		memset(model + off, 0, len);
	} else {
		pick_range(w, true, &off, &len);
		r = img_discard(w->img, off, len);
		if (r)
			return fail_with(w, "discard", off, len, r);
		memset(model + off, 0, len);
	}
	return true;
}

static void *worker_main(void *opaque)
{
	struct worker *w = opaque;
	uint8_t *buf = malloc(MAX_IO);

	if (!buf) {
		snprintf(w->failure, sizeof(w->failure), "out of memory");
		return NULL;
	}
	for (unsigned i = 0; i < nops; i++)
		if (!worker_step(w, buf))
			break;
	free(buf);
	return NULL;
}

static void expect_matches_model(struct img *img, const char *when)
{
	uint8_t *all = malloc(DISK_SIZE);

	if (!all)
		die("out of memory");
	if (img_pread(img, all, DISK_SIZE, 0))
		die("%s: read: %s", when, img_errmsg(img));
	for (size_t i = 0; i < DISK_SIZE; i++)
		if (all[i] != model[i])
			die("%s: byte %zu is %u, the model says %u", when, i,
			    all[i], model[i]);
	free(all);
}

int main(int argc, char **argv)
{
	char format[32], path[4096], err[IMG_ERRMSG_MAX];
	char *subformat;
	struct img_create_options co = { .size = DISK_SIZE };
	struct img_open_options oo = { .flags = IMG_OPEN_RDWR };
	struct worker w[MAX_THREADS];
	pthread_t t[MAX_THREADS];
	struct img_check_result res;
	struct img *img;
	bool discard_zeroes;

	if (argc < 3 || argc > 5) {
		fprintf(stderr, "usage: parallel_io FORMAT[:SUBFORMAT] DIR "
				"[THREADS] [OPS]\n");
		return 2;
	}
	snprintf(format, sizeof(format), "%s", argv[1]);
	subformat = strchr(format, ':');
	if (subformat)
		*subformat++ = '\0';
	if (argc > 3)
		nthreads = (unsigned)atoi(argv[3]);
	if (argc > 4)
		nops = (unsigned)atoi(argv[4]);
	if (nthreads < 1 || nthreads > MAX_THREADS)
		die("1 to %d threads", MAX_THREADS);
	/* raw punches holes: its discarded ranges read as zero; elsewhere
	 * discard only promises "zero or what was there" */
	discard_zeroes = !strcmp(format, "raw");
	model = calloc(1, DISK_SIZE);
	if (!model)
		die("out of memory");
	co.format = format;
	co.subformat = subformat;
	snprintf(path, sizeof(path), "%s/parallel.%s", argv[2], format);
	if (img_create(path, &co, err, sizeof(err)))
		die("create: %s", err);
	if (img_open(&img, path, &oo, err, sizeof(err)))
		die("open: %s", err);
	for (unsigned i = 0; i < nthreads; i++) {
		w[i] = (struct worker){ .img = img,
					.id = i,
					.seed = 0x5eed + i * 7919,
					.discard_zeroes = discard_zeroes };
		if (pthread_create(&t[i], NULL, worker_main, &w[i]))
			die("cannot start a thread");
	}
	for (unsigned i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
	for (unsigned i = 0; i < nthreads; i++)
		if (w[i].failure[0])
			die("%s", w[i].failure);
	expect_matches_model(img, "after the threads");
	if (img_close(img))
		die("close failed");

	oo.flags = IMG_OPEN_RDONLY | IMG_OPEN_CHECK;
	if (img_open(&img, path, &oo, err, sizeof(err)))
		die("reopen: %s", err);
	expect_matches_model(img, "after a reopen");
	memset(&res, 0, sizeof(res));
	if (img_check(img, &res, 0) == 0 && (res.corruptions || res.leaks))
		die("check: %llu corruptions, %llu leaks: %s",
		    (unsigned long long)res.corruptions,
		    (unsigned long long)res.leaks,
		    res.nmessages ? res.messages[0] : "");
	img_close(img);
	free(model);
	return 0;
}
