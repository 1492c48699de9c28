/* SPDX-License-Identifier: MIT */
/*
 * parallel_io SPEC DIR [THREADS] [OPS]
 *
 * SPEC is FORMAT[:SUBFORMAT|:KEY=VALUE,...][+diff][+compress]: +diff
 * writes into a child of a parent of the same format that holds data,
 * +compress opens with IMG_OPEN_COMPRESS.
 *
 * Many threads on one handle: random writes (aligned and not), reads,
 * flushes, zeroes and discards anywhere on the disk, so that threads
 * write the same blocks and clusters at once (allocating them, setting
 * their bitmaps); only requests that share a 4 KiB unit take turns (a
 * lock per unit, taken in order), so the outcome is known.  The image must
 * then match the model byte for byte, before and after a reopen, and
 * check clean.  The model is left in DIR/model.raw for a comparison with
 * another implementation.  Exit 0 when all holds, 1 with one line on
 * stderr when not.  tests/e2e/parallel.sh runs it on every format; `make
 * check SANITIZE=thread` runs that under ThreadSanitizer (which
 * Criterion's forking runner does not survive, hence a program).
 */
#include "img.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DISK_SIZE (8u << 20)
#define UNIT 4096u /* requests sharing one take turns */
#define NUNITS (DISK_SIZE / UNIT)
#define MAX_THREADS 16
#define MAX_IO (48u << 10)

static unsigned nthreads = 4, nops = 2000;
static uint8_t *model; /* what every byte must read as */
static pthread_mutex_t unit_lock[NUNITS];

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

/* A random range anywhere on the disk; a quarter of them start in the
 * first 256 KiB, where the threads meet most. */
static void pick_range(struct worker *w, bool aligned, uint64_t *off,
		       size_t *len)
{
	uint64_t span = rand_r(&w->seed) % 4 ? DISK_SIZE : 256u << 10;
	uint64_t o = (uint64_t)rand_r(&w->seed) * 7919 % span;
	size_t n = 1 + (size_t)rand_r(&w->seed) % MAX_IO;

	if (aligned) {
		o &= ~(uint64_t)4095;
		n = (n + 4095) & ~(size_t)4095;
	}
	if (n > DISK_SIZE - o)
		n = DISK_SIZE - o;
	*off = o;
	*len = n;
}

static void units_lock(uint64_t off, size_t len)
{
	for (uint64_t u = off / UNIT; u <= (off + len - 1) / UNIT; u++)
		pthread_mutex_lock(&unit_lock[u]);
}

static void units_unlock(uint64_t off, size_t len)
{
	for (uint64_t u = off / UNIT; u <= (off + len - 1) / UNIT; u++)
		pthread_mutex_unlock(&unit_lock[u]);
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
	const char *what;
	uint64_t off;
	size_t len;
	int r;

	if (op >= 85 && op < 92) {
		r = img_flush(w->img);
		return r ? fail_with(w, "flush", 0, 0, r) : true;
	}
	/* writes: one in four unaligned */
	pick_range(w,
		   op < 45   ? op % 4 != 0
		   : op < 85 ? op % 2
			     : true,
		   &off, &len);
	if (op < 45)
		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)rand_r(&w->seed);
	units_lock(off, len);
	if (op < 45) {
		what = "write";
		r = img_pwrite(w->img, buf, len, off);
		if (!r)
			memcpy(model + off, buf, len);
	} else if (op < 85) {
		what = "read";
		r = img_pread(w->img, buf, len, off);
		if (!r && memcmp(buf, model + off, len)) {
			what = "read mismatch";
			r = 0;
			units_unlock(off, len);
			return fail_with(w, what, off, len, r);
		}
	} else if (op < 97 || !w->discard_zeroes) {
		what = "write zeroes";
		r = img_write_zeroes(w->img, off, len,
				     op % 2 ? IMG_ZERO_MAY_UNMAP : 0);
		if (!r)
			memset(model + off, 0, len);
	} else {
		what = "discard";
		r = img_discard(w->img, off, len);
		if (!r)
			memset(model + off, 0, len);
	}
	units_unlock(off, len);
	return r ? fail_with(w, what, off, len, r) : true;
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

/* A parent of the same format with data in about half of it, in 64 KiB
 * pieces; the model starts as its contents. */
static void make_parent(const char *path, struct img_create_options *co)
{
	struct img_open_options oo = { .flags = IMG_OPEN_RDWR };
	char err[IMG_ERRMSG_MAX];
	unsigned seed = 0xba5e;
	uint8_t *piece = malloc(64u << 10);
	struct img *img;

	if (!piece)
		die("out of memory");
	if (img_create(path, co, err, sizeof(err)))
		die("create the parent: %s", err);
	if (img_open(&img, path, &oo, err, sizeof(err)))
		die("open the parent: %s", err);
	for (uint64_t off = 0; off < DISK_SIZE; off += 64u << 10) {
		if (rand_r(&seed) % 2)
			continue;
		for (size_t i = 0; i < (64u << 10); i++)
			piece[i] = (uint8_t)rand_r(&seed);
		if (img_pwrite(img, piece, 64u << 10, off))
			die("write the parent: %s", img_errmsg(img));
		memcpy(model + off, piece, 64u << 10);
	}
	if (img_close(img))
		die("close the parent failed");
	free(piece);
}

static void model_save(const char *dir)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/model.raw", dir);
	f = fopen(path, "wb");
	if (!f || fwrite(model, 1, DISK_SIZE, f) != DISK_SIZE || fclose(f))
		die("cannot write %s", path);
}

int main(int argc, char **argv)
{
	char format[256], path[4096], parent[4096], err[IMG_ERRMSG_MAX];
	char *subformat, *plus;
	struct img_create_options co = { .size = DISK_SIZE };
	struct img_open_options oo = { .flags = IMG_OPEN_RDWR };
	struct worker w[MAX_THREADS];
	pthread_t t[MAX_THREADS];
	struct img_check_result res;
	struct img *img;
	bool discard_zeroes, diff = false;

	if (argc < 3 || argc > 5) {
		fprintf(stderr, "usage: parallel_io FORMAT[:SUBFORMAT]"
				"[+diff][+compress] DIR [THREADS] [OPS]\n");
		return 2;
	}
	snprintf(format, sizeof(format), "%s", argv[1]);
	while ((plus = strrchr(format, '+'))) {
		*plus++ = '\0';
		if (!strcmp(plus, "diff"))
			diff = true;
		else if (!strcmp(plus, "compress"))
			oo.flags |= IMG_OPEN_COMPRESS;
		else
			die("unknown +%s", plus);
	}
	subformat = strchr(format, ':');
	if (subformat) {
		*subformat++ = '\0';
		if (strchr(subformat, '=')) {
			co.options = subformat;
			subformat = NULL;
		}
	}
	if (argc > 3)
		nthreads = (unsigned)atoi(argv[3]);
	if (argc > 4)
		nops = (unsigned)atoi(argv[4]);
	if (nthreads < 1 || nthreads > MAX_THREADS)
		die("1 to %d threads", MAX_THREADS);
	for (unsigned i = 0; i < NUNITS; i++)
		pthread_mutex_init(&unit_lock[i], NULL);
	/* raw punches holes: its discarded ranges read as zero; elsewhere
	 * discard only promises "zero or what was there" */
	discard_zeroes = !strcmp(format, "raw");
	model = calloc(1, DISK_SIZE);
	if (!model)
		die("out of memory");
	co.format = format;
	co.subformat = subformat;
	snprintf(path, sizeof(path), "%s/parallel.%s", argv[2], format);
	if (diff) {
		snprintf(parent, sizeof(parent), "%s/parent.%s", argv[2],
			 format);
		make_parent(parent, &co);
		co.subformat = NULL;
		co.backing_file = parent;
		co.backing_format = format;
	}
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
	model_save(argv[2]);

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
