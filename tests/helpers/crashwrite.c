/* SPDX-License-Identifier: MIT */
/*
 * crashwrite: crash-consistency harness for libimg's dynamic formats.
 *
 *   crashwrite [-n POINTS] [-w WRITES] [-s SEED] [-t THREADS] [-r|-e] [-v]
 *              DIR FORMAT[:SUBFORMAT|:diff|:KEY=VALUE,...]
 *
 * For each kill point, a fresh image is created in DIR and a child process
 * writes a deterministic sequence of random writes (random offsets and
 * lengths, some of them zeros) through libimg, calling img_flush every few
 * writes and recording in shared memory which writes a flush acknowledged.
 * The child dies by SIGKILL just before its Nth host write/sync/truncate/
 * allocate call (through libimg's I/O hook), or, with -r, at a random time.
 * With -e the Nth call fails with EIO instead (fault injection): the write
 * or flush must report a one-line error, and the image must stay as sound
 * as after a crash.
 * The parent then:
 *   - checks the image (img_check): no corruption allowed, leaks allowed;
 *   - repairs leaks (IMG_CHECK_FIX_LEAKS) and checks again: must be clean;
 *   - reads the whole disk: every byte written before the last
 *     acknowledged flush reads back; bytes of later writes read as the
 *     old or the new data, nothing else.
 * With -t, THREADS threads write at once through one handle, each its own
 * sequence into its own 32 KiB stripes of the disk (stripes of different
 * threads share blocks and clusters, so allocation and metadata updates
 * race), each flushing every few of its writes; a write counts as
 * acknowledged once a flush that began after it returned has completed,
 * whichever thread flushed.  (Not with -e: a failed write ends the run.)
 * Prints one line per format and exits non-zero on any failure.
 */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DISK_SIZE (16ull << 20) /* 8 VHD blocks, 16 VDI blocks, 256 grains */
#define MAX_WRITE (192u << 10)
#define FLUSH_EVERY 4
#define PARENT_FILL_WRITES 24
#define MAX_THREADS 8
#define STRIPE (32u << 10)

/* Per writer: its writes whose img_pwrite returned 0, and those covered by
 * a completed flush (the child updates them atomically). */
struct shared_log {
	long writes_returned[MAX_THREADS];
	long writes_flushed[MAX_THREADS];
	long io_calls; /* host I/O calls seen by the hook */
	int finished;
};

struct write_op {
	uint64_t off;
	uint32_t len;
	bool zero;
	uint64_t seed;
};

static struct shared_log *shared;
static long kill_at = -1;
static bool fault_mode;
static uint64_t run_seed = 1;
static int nthreads = 1;

static uint64_t rng(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static void op_make(uint64_t seed, long index, struct write_op *op)
{
	uint64_t s = seed * 1000003u + (uint64_t)index * 7919u + 1;
	for (int i = 0; i < 4; i++)
		rng(&s);
	/* Mostly small writes, some spanning several blocks; sector-aligned
	 * and unaligned both. */
	uint32_t len = (uint32_t)(rng(&s) % 3 == 0 ? rng(&s) % MAX_WRITE + 1
						   : rng(&s) % 8192 + 1);
	uint64_t off = rng(&s) % (DISK_SIZE - len);
	if (rng(&s) % 2) {
		off &= ~511ull;
		len = (len + 511) & ~511u;
		if (off + len > DISK_SIZE)
			off = DISK_SIZE - len;
	}
	op->off = off;
	op->len = len;
	op->zero = rng(&s) % 8 == 0;
	op->seed = rng(&s);
}

/* Write index of writer thread: with one writer the sequence above; with
 * several, each its own sequence, moved into its stripes (stripe k of the
 * disk belongs to thread k % nthreads) and cut at the stripe's end. */
static void op_make_for(int thread, long index, struct write_op *op)
{
	uint64_t within, own = DISK_SIZE / STRIPE / (uint64_t)nthreads;

	if (nthreads == 1) {
		op_make(run_seed, index, op);
		return;
	}
	op_make(run_seed + 1000003u * (uint64_t)thread, index, op);
	within = op->off % STRIPE;
	op->off = ((op->off / STRIPE) % own * (uint64_t)nthreads +
		   (uint64_t)thread) *
			  STRIPE +
		  within;
	if (op->len > STRIPE - within)
		op->len = (uint32_t)(STRIPE - within);
}

static void op_fill(const struct write_op *op, uint8_t *buf)
{
	if (op->zero) {
		memset(buf, 0, op->len);
		return;
	}
	uint64_t s = op->seed | 1;
	uint32_t i = 0;
	for (; i + 8 <= op->len; i += 8) {
		uint64_t v = rng(&s);
		memcpy(buf + i, &v, 8);
	}
	for (; i < op->len; i++)
		buf[i] = (uint8_t)rng(&s);
}

static int kill_hook(enum img_io_op op, int fd, uint64_t off, uint64_t len,
		     void *opaque)
{
	(void)op, (void)fd, (void)off, (void)len, (void)opaque;
	long n = __atomic_add_fetch(&shared->io_calls, 1, __ATOMIC_SEQ_CST);
	if (kill_at > 0 && n == kill_at && fault_mode)
		return -EIO;
	if (kill_at > 0 && n >= kill_at && !fault_mode)
		raise(SIGKILL);
	return 0;
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "crashwrite: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

struct target {
	const char *format;
	const char *subformat; /* NULL: default */
	const char *options;   /* "key=value" create options, or NULL */
	bool differencing;
	char path[4096];
	char parent[4096];
};

static const char *ext_of(const char *format)
{
	return strcmp(format, "vhd") == 0 ? "vhd" : format;
}

/* The parent of a differencing target: filled with known data (op seeds
 * offset by a constant), so reads through the child must show it. */
static void model_parent(uint8_t *model, uint8_t *buf)
{
	for (long i = 0; i < PARENT_FILL_WRITES; i++) {
		struct write_op op;
		op_make(run_seed + 777, i, &op);
		op_fill(&op, buf);
		memcpy(model + op.off, buf, op.len);
	}
}

static void create_target(struct target *t, uint8_t *buf)
{
	char err[IMG_ERRMSG_MAX];
	struct img_create_options co = { .format = t->format,
					 .size = DISK_SIZE,
					 .subformat = t->subformat,
					 .options = t->options };
	unlink(t->path);
	if (t->differencing) {
		unlink(t->parent);
		if (img_create(t->parent, &co, err, sizeof(err)) < 0)
			die("%s", err);
		struct img *p;
		struct img_open_options oo = { .format = t->format,
					       .flags = IMG_OPEN_RDWR };
		if (img_open(&p, t->parent, &oo, err, sizeof(err)) < 0)
			die("%s", err);
		for (long i = 0; i < PARENT_FILL_WRITES; i++) {
			struct write_op op;
			op_make(run_seed + 777, i, &op);
			op_fill(&op, buf);
			if (img_pwrite(p, buf, op.len, op.off) < 0)
				die("%s", img_errmsg(p));
		}
		if (img_close(p) < 0)
			die("closing parent failed");
		co.backing_file = strrchr(t->parent, '/') + 1;
		co.backing_format = t->format;
		co.size = 0;
	}
	if (img_create(t->path, &co, err, sizeof(err)) < 0)
		die("%s", err);
}

/* A write or flush failed: expected only in fault mode, where the error
 * must be one clean line and the handle must still close. */
static void child_failed(struct img *img, const char *what)
{
	const char *msg = img_errmsg(img);
	if (!fault_mode || !msg || !*msg || strchr(msg, '\n')) {
		fprintf(stderr, "crashwrite child: %s: %s\n", what,
			msg ? msg : "(no message)");
		_exit(3);
	}
	img_close(img);
	_exit(4);
}

struct writer {
	struct img *img;
	int thread;
	long writes;
};

static void *writer_run(void *opaque)
{
	struct writer *w = opaque;
	uint8_t *buf = malloc(MAX_WRITE + 512);
	long *returned = &shared->writes_returned[w->thread];

	if (!buf)
		_exit(3);
	for (long i = 0; i < w->writes; i++) {
		struct write_op op;
		long seen[MAX_THREADS];

		op_make_for(w->thread, i, &op);
		op_fill(&op, buf);
		int r = op.zero && i % 2
				? img_write_zeroes(w->img, op.off, op.len, 0)
				: img_pwrite(w->img, buf, op.len, op.off);
		if (r < 0)
			child_failed(w->img, "write");
		__atomic_store_n(returned, i + 1, __ATOMIC_SEQ_CST);
		if ((i + 1) % FLUSH_EVERY)
			continue;
		/* what this flush covers: every write returned before it */
		for (int u = 0; u < nthreads; u++)
			seen[u] = __atomic_load_n(&shared->writes_returned[u],
						  __ATOMIC_SEQ_CST);
		if (img_flush(w->img) < 0)
			child_failed(w->img, "flush");
		for (int u = 0; u < nthreads; u++) {
			long *f = &shared->writes_flushed[u];
			long cur = __atomic_load_n(f, __ATOMIC_SEQ_CST);

			while (cur < seen[u] &&
			       !__atomic_compare_exchange_n(
				       f, &cur, seen[u], false,
				       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
				;
		}
	}
	free(buf);
	return NULL;
}

static void child_run(const struct target *t, long writes)
{
	char err[IMG_ERRMSG_MAX];
	struct writer w[MAX_THREADS];
	pthread_t tid[MAX_THREADS];
	struct img *img;
	struct img_open_options oo = { .format = t->format,
				       .flags = IMG_OPEN_RDWR };

	img_set_io_hook(kill_hook, NULL);
	if (img_open(&img, t->path, &oo, err, sizeof(err)) < 0) {
		fprintf(stderr, "crashwrite child: %s\n", err);
		_exit(3);
	}
	for (int u = 0; u < nthreads; u++) {
		w[u] = (struct writer){ .img = img,
					.thread = u,
					.writes = writes };
		if (nthreads == 1)
			writer_run(&w[u]);
		else if (pthread_create(&tid[u], NULL, writer_run, &w[u]))
			_exit(3);
	}
	for (int u = 0; nthreads > 1 && u < nthreads; u++)
		pthread_join(tid[u], NULL);
	if (img_close(img) < 0)
		_exit(fault_mode ? 4 : 3);
	for (int u = 0; u < nthreads; u++)
		shared->writes_flushed[u] = writes;
	shared->finished = 1;
	_exit(0);
}

struct verdict {
	long corruptions, leaks_found, leaks_left, lost, check_failures;
};

/* Verify the disk against the model: for each writer u, bytes of its
 * writes [0, flushed[u]) must be there; bytes of its writes
 * [flushed[u], returned[u]+1) may be old or new.  (Writers' bytes never
 * overlap.) */
static void verify(const struct target *t, const long *flushed,
		   const long *returned, long total, struct verdict *v,
		   uint8_t *model, uint8_t *disk, uint8_t *buf, bool verbose)
{
	char err[IMG_ERRMSG_MAX];
	struct img *img;
	struct img_check_result res;
	struct img_open_options oo = {
		.format = t->format, .flags = IMG_OPEN_RDWR | IMG_OPEN_CHECK
	};

	if (img_open(&img, t->path, &oo, err, sizeof(err)) < 0) {
		if (verbose)
			fprintf(stderr, "  open for check: %s\n", err);
		v->check_failures++;
		return;
	}
	memset(&res, 0, sizeof(res));
	int r = img_check(img, &res, 0);
	if (r < 0 && r != -ENOTSUP) {
		if (verbose)
			fprintf(stderr, "  check: %s\n", img_errmsg(img));
		v->check_failures++;
	}
	if (res.corruptions) {
		v->corruptions++;
		if (verbose)
			for (int i = 0; i < res.nmessages; i++)
				fprintf(stderr, "  check: %s\n",
					res.messages[i]);
	}
	if (res.leaks) {
		v->leaks_found++;
		memset(&res, 0, sizeof(res));
		img_check(img, &res, IMG_CHECK_FIX_LEAKS);
		memset(&res, 0, sizeof(res));
		img_check(img, &res, 0);
		if (res.leaks || res.corruptions)
			v->leaks_left++;
	}
	img_close(img);

	oo.flags = IMG_OPEN_RDONLY;
	if (img_open(&img, t->path, &oo, err, sizeof(err)) < 0) {
		if (verbose)
			fprintf(stderr, "  reopen: %s\n", err);
		v->check_failures++;
		return;
	}
	if (img_pread(img, disk, DISK_SIZE, 0) < 0) {
		if (verbose)
			fprintf(stderr, "  read: %s\n", img_errmsg(img));
		v->check_failures++;
		img_close(img);
		return;
	}
	img_close(img);

	/* model = parent data + acknowledged writes */
	memset(model, 0, DISK_SIZE);
	if (t->differencing)
		model_parent(model, buf);
	for (int u = 0; u < nthreads; u++)
		for (long i = 0; i < flushed[u]; i++) {
			struct write_op op;
			op_make_for(u, i, &op);
			op_fill(&op, buf);
			memcpy(model + op.off, buf, op.len);
		}
	/* Unacknowledged writes that may have landed, in part or whole. */
	struct write_op pend[MAX_THREADS * (FLUSH_EVERY + 2)];
	uint8_t *pbuf[MAX_THREADS * (FLUSH_EVERY + 2)];
	int npend = 0;
	for (int u = 0; u < nthreads; u++) {
		long maybe_end = returned[u] + 1 < total ? returned[u] + 1
							 : total;
		for (long i = flushed[u], n = 0;
		     i < maybe_end && n < FLUSH_EVERY + 2; i++, n++) {
			op_make_for(u, i, &pend[npend]);
			pbuf[npend] = malloc(pend[npend].len);
			if (!pbuf[npend])
				die("out of memory");
			op_fill(&pend[npend], pbuf[npend]);
			npend++;
		}
	}
	uint64_t bad = 0, first_bad = 0;
	for (uint64_t off = 0; off < DISK_SIZE;) {
		/* fast path: compare 64 KiB at once */
		uint64_t n = DISK_SIZE - off < 65536 ? DISK_SIZE - off : 65536;
		if (memcmp(disk + off, model + off, n) == 0) {
			off += n;
			continue;
		}
		for (uint64_t end = off + n; off < end; off++) {
			if (disk[off] == model[off])
				continue;
			bool ok = false;
			for (int k = 0; k < npend && !ok; k++)
				if (off >= pend[k].off &&
				    off < pend[k].off + pend[k].len &&
				    pbuf[k][off - pend[k].off] == disk[off])
					ok = true;
			if (!ok && bad++ == 0)
				first_bad = off;
		}
	}
	for (int k = 0; k < npend; k++)
		free(pbuf[k]);
	if (bad) {
		v->lost++;
		if (verbose)
			fprintf(stderr,
				"  %" PRIu64 " bytes wrong, first at %" PRIu64
				" (writer 0: flushed %ld, returned %ld)\n",
				bad, first_bad, flushed[0], returned[0]);
	}
}

static void usage(void)
{
	fprintf(stderr,
		"usage: crashwrite [-n POINTS] [-w WRITES] [-s SEED] [-t THREADS] [-r|-e] [-v] DIR FORMAT[:SUBFORMAT|:diff]\n");
	exit(2);
}

/* The parent's model and read-back buffers: the children never touch them,
 * so they are not inherited.  Inherited, every fork write-protects their
 * pages and the next point's memset takes a fault per page, which was most
 * of this harness's time. */
static uint8_t *parent_only_alloc(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (madvise(p, len, MADV_DONTFORK) < 0) {
		munmap(p, len);
		return NULL;
	}
	return p;
}

int main(int argc, char **argv)
{
	long points = 50, writes = 64;
	bool random_time = false, verbose = false;
	int c;
	while ((c = getopt(argc, argv, "n:w:s:t:rev")) != -1) {
		switch (c) {
		case 'n':
			points = atol(optarg);
			break;
		case 'w':
			writes = atol(optarg);
			break;
		case 's':
			run_seed = strtoull(optarg, NULL, 0);
			break;
		case 't':
			nthreads = atoi(optarg);
			break;
		case 'r':
			random_time = true;
			break;
		case 'e':
			fault_mode = true;
			break;
		case 'v':
			verbose = true;
			break;
		default:
			usage();
		}
	}
	if (argc - optind != 2 || points <= 0 || writes <= 0 || nthreads < 1 ||
	    nthreads > MAX_THREADS || (nthreads > 1 && fault_mode))
		usage();

	struct target t = { 0 };
	char spec[256];
	snprintf(spec, sizeof(spec), "%s", argv[optind + 1]);
	char *colon = strchr(spec, ':');
	if (colon) {
		*colon = 0;
		if (strcmp(colon + 1, "diff") == 0)
			t.differencing = true;
		else if (strchr(colon + 1, '='))
			t.options = colon + 1; /* vhdx:block_size=1M */
		else
			t.subformat = colon + 1;
	}
	t.format = spec;
	snprintf(t.path, sizeof(t.path), "%s/crash-%s.%s", argv[optind],
		 colon ? colon + 1 : "default", ext_of(t.format));
	snprintf(t.parent, sizeof(t.parent), "%s/crash-parent.%s", argv[optind],
		 ext_of(t.format));

	shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint8_t *model = parent_only_alloc(DISK_SIZE);
	uint8_t *disk = parent_only_alloc(DISK_SIZE);
	uint8_t *buf = malloc(MAX_WRITE + 512);
	if (shared == MAP_FAILED || !model || !disk || !buf)
		die("out of memory");

	/* A dry run counts the host I/O calls of the whole sequence. */
	create_target(&t, buf);
	memset((void *)shared, 0, sizeof(*shared));
	kill_at = -1;
	pid_t pid = fork();
	if (pid == 0)
		child_run(&t, writes);
	int st;
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !shared->finished)
		die("%s: the uninterrupted run failed", argv[optind + 1]);
	long total_calls = shared->io_calls;
	struct verdict v = { 0 };
	long all[MAX_THREADS];
	for (int u = 0; u < MAX_THREADS; u++)
		all[u] = writes;
	verify(&t, all, all, writes, &v, model, disk, buf, true);
	if (v.corruptions || v.lost || v.check_failures || v.leaks_found)
		die("%s: the uninterrupted run does not verify",
		    argv[optind + 1]);

	uint64_t pick = run_seed * 31 + 7;
	for (long p = 0; p < points; p++) {
		create_target(&t, buf);
		memset((void *)shared, 0, sizeof(*shared));
		if (random_time)
			kill_at = -1;
		else /* spread over the whole run, then random ones */
			kill_at =
				p < total_calls
					? 1 + (p * total_calls) / points
					: 1 + (long)(rng(&pick) % total_calls);
		pid = fork();
		if (pid == 0)
			child_run(&t, writes);
		if (random_time) {
			struct timespec ts = { 0,
					       (long)(rng(&pick) % 20000000) };
			nanosleep(&ts, NULL);
			kill(pid, SIGKILL);
		}
		waitpid(pid, &st, 0);
		if (WIFEXITED(st) && WEXITSTATUS(st) != 0 &&
		    !(fault_mode && WEXITSTATUS(st) == 4))
			die("%s: child failed at kill point %ld",
			    argv[optind + 1], kill_at);
		struct verdict before = v;
		verify(&t, shared->writes_flushed, shared->writes_returned,
		       writes, &v, model, disk, buf, verbose);
		if (verbose && memcmp(&before, &v, sizeof(v)) != 0)
			fprintf(stderr, "  ^ at kill point %ld of %ld\n",
				kill_at, total_calls);
	}
	bool ok = !v.corruptions && !v.lost && !v.check_failures &&
		  !v.leaks_left;
	printf("%s %s: %ld kill points (%s, %d writer thread%s, %ld host I/O calls per run): %ld corrupt, %ld lost writes, %ld with leaks (%ld left after repair), %ld check failures\n",
	       ok ? "ok  " : "FAIL", argv[optind + 1], points,
	       random_time  ? "killed at random times"
	       : fault_mode ? "EIO on the Nth host I/O call"
			    : "killed at the Nth host I/O call",
	       nthreads, nthreads == 1 ? "" : "s", total_calls, v.corruptions,
	       v.lost, v.leaks_found, v.leaks_left, v.check_failures);
	unlink(t.path);
	if (t.differencing)
		unlink(t.parent);
	free(buf);
	return ok ? 0 : 1;
}
