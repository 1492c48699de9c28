/* SPDX-License-Identifier: MIT */
/*
 * crashsnap: crash-consistency harness for libimg's snapshot module.
 *
 *   crashsnap [-n POINTS] [-v] DIR FORMAT
 *
 * A child process runs a fixed script on a fresh disk in DIR: snapshot
 * create, writes (each acknowledged by a flush), delete, revert, revert
 * discarding newer snapshots, more creates.  It dies by SIGKILL just
 * before its Nth host call (a write, sync, truncate, or a directory
 * change: link, rename, unlink, mkdir) through libimg's I/O hook; N is
 * spread over every call the whole script makes (all of them when POINTS
 * is at least their number).  The child records in shared memory how
 * many steps completed.  The parent then:
 *   - recovers (img_snapshots_recover, what imgtool check -r runs);
 *   - requires the snapshot list and the disk's contents to be those
 *     before the interrupted step or after it (a write in progress may
 *     have landed in part: each byte old or new), and every listed
 *     snapshot to read what it held when taken;
 *   - checks the disk and every layer (no corruption; leaks repaired);
 *   - takes and deletes one more snapshot (the disk stays usable).
 * Prints one line and exits non-zero on any failure.
 */
#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define DISK_SIZE (2u << 20)
#define MAX_STEPS 16
#define MAX_SNAPS 8

enum step_kind { STEP_WRITE, STEP_CREATE, STEP_REVERT, STEP_DELETE };

struct step {
	enum step_kind kind;
	const char *tag;
	bool discard_newer;
	uint32_t off, len; /* writes */
	uint8_t byte;
};

/* Every operation on a disk with history: snapshots above and below the
 * one changed, reverts forward and back. */
static const struct step script[] = {
	{ STEP_WRITE, NULL, false, 0, 512u << 10, 0x11 },
	{ STEP_CREATE, "s1", false, 0, 0, 0 },
	{ STEP_WRITE, NULL, false, 256u << 10, 512u << 10, 0x22 },
	{ STEP_CREATE, "s2", false, 0, 0, 0 },
	{ STEP_WRITE, NULL, false, 1u << 20, 256u << 10, 0x33 },
	{ STEP_DELETE, "s1", false, 0, 0, 0 },
	{ STEP_REVERT, "s2", false, 0, 0, 0 },
	{ STEP_CREATE, "s3", false, 0, 0, 0 },
	{ STEP_WRITE, NULL, false, 64u << 10, 1u << 20, 0x44 },
	{ STEP_REVERT, "s2", true, 0, 0, 0 },
	{ STEP_DELETE, "s2", false, 0, 0, 0 },
	{ STEP_CREATE, "s4", false, 0, 0, 0 },
	{ STEP_WRITE, NULL, false, 1536u << 10, 512u << 10, 0x55 },
};
#define NSTEPS ((int)(sizeof(script) / sizeof(script[0])))

/* What the disk and its snapshots read after each step. */
struct model_snap {
	const char *tag;
	uint8_t *data;
	int order; /* creation order: newest first in lists */
};
struct model_state {
	uint8_t *disk;
	int nsnaps;
	struct model_snap snaps[MAX_SNAPS];
};

struct shared_log {
	volatile long io_calls;
	volatile int steps_done;
};

static struct shared_log *shared;
static long kill_at = -1;
static bool internal; /* the format keeps snapshots inside the file */
static const char *format;
static char disk[4096];
static struct model_state states[MAX_STEPS + 1];

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "crashsnap: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static int kill_hook(enum img_io_op op, int fd, uint64_t off, uint64_t len,
		     void *opaque)
{
	(void)op, (void)fd, (void)off, (void)len, (void)opaque;
	if (++shared->io_calls >= kill_at && kill_at > 0)
		raise(SIGKILL);
	return 0;
}

static uint8_t *copy_of(const uint8_t *data)
{
	uint8_t *out = malloc(DISK_SIZE);

	if (!out)
		die("out of memory");
	memcpy(out, data, DISK_SIZE);
	return out;
}

static struct model_snap *model_find(struct model_state *m, const char *tag)
{
	for (int i = 0; i < m->nsnaps; i++)
		if (!strcmp(m->snaps[i].tag, tag))
			return &m->snaps[i];
	return NULL;
}

static void model_build(void)
{
	int order = 0;

	states[0].disk = calloc(1, DISK_SIZE);
	if (!states[0].disk)
		die("out of memory");
	for (int i = 0; i < NSTEPS; i++) {
		const struct step *st = &script[i];
		struct model_state *prev = &states[i], *m = &states[i + 1];
		struct model_snap *target;

		*m = *prev;
		m->disk = copy_of(prev->disk);
		switch (st->kind) {
		case STEP_WRITE:
			memset(m->disk + st->off, st->byte, st->len);
			break;
		case STEP_CREATE:
			m->snaps[m->nsnaps++] = (struct model_snap){
				st->tag, copy_of(prev->disk), ++order
			};
			break;
		case STEP_REVERT:
			target = model_find(m, st->tag);
			memcpy(m->disk, target->data, DISK_SIZE);
			/* layers: the newer snapshots go with the revert */
			for (int j = 0; !internal && j < m->nsnaps;)
				if (m->snaps[j].order > target->order)
					m->snaps[j] = m->snaps[--m->nsnaps];
				else
					j++;
			break;
		case STEP_DELETE:
			target = model_find(m, st->tag);
			*target = m->snaps[--m->nsnaps];
			break;
		}
	}
}

static int run_step(const struct step *st)
{
	struct img_open_options oo = { .format = format,
				       .flags = IMG_OPEN_RDWR };
	char err[IMG_ERRMSG_MAX];
	struct img_snapshots *s;
	struct img *img;
	uint8_t *buf;
	int r;

	if (st->kind == STEP_WRITE) {
		buf = malloc(st->len);
		if (!buf)
			return -ENOMEM;
		memset(buf, st->byte, st->len);
		r = img_open(&img, disk, &oo, err, sizeof(err));
		if (r == 0) {
			r = img_pwrite(img, buf, st->len, st->off);
			if (r == 0)
				r = img_flush(img);
			if (img_close(img) < 0 && r == 0)
				r = -EIO;
		}
		free(buf);
		return r;
	}
	r = img_snapshots_open(&s, disk, format, IMG_OPEN_RDWR, err,
			       sizeof(err));
	if (r < 0) {
		fprintf(stderr, "crashsnap child: %s\n", err);
		return r;
	}
	r = st->kind == STEP_CREATE ? img_snapshots_create(s, st->tag)
	    : st->kind == STEP_REVERT
		    ? img_snapshots_revert(
			      s, st->tag,
			      st->discard_newer
				      ? IMG_SNAPSHOT_REVERT_DISCARD_NEWER
				      : 0)
		    : img_snapshots_delete(s, st->tag);
	if (r < 0)
		fprintf(stderr, "crashsnap child: %s\n",
			img_snapshots_errmsg(s));
	if (img_snapshots_close(s) < 0 && r == 0)
		r = -EIO;
	return r;
}

static void child_run(void)
{
	img_set_io_hook(kill_hook, NULL);
	for (int i = 0; i < NSTEPS; i++) {
		if (run_step(&script[i]) < 0)
			_exit(3);
		shared->steps_done = i + 1;
	}
	_exit(0);
}

static void fresh_disk(void)
{
	struct img_create_options co = { .format = format, .size = DISK_SIZE };
	char err[IMG_ERRMSG_MAX], cmd[3 * sizeof(disk) + 64];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s.snapshots' '%s'.*tmp*",
		 disk, disk, disk);
	if (system(cmd) != 0)
		die("cannot clean %s", disk);
	if (img_create(disk, &co, err, sizeof(err)) < 0)
		die("%s", err);
}

/* Check one image (a layer, or the disk): no corruption; leaks are
 * repaired and must then be gone.  Internal snapshots (qcow2) have, as in
 * QEMU, a window where the reference counts and the COPIED flags
 * disagree (a create stopped between raising the counts and writing the
 * snapshot table): corruptions that check -r all repairs are counted in
 * *repaired and allowed there, never for layers. */
static long repaired_points;

static bool check_clean(const char *path, char *why, size_t whylen)
{
	struct img_open_options oo = { .flags = IMG_OPEN_RDWR | IMG_OPEN_CHECK |
						IMG_OPEN_NO_BACKING };
	struct img_check_result res = { 0 };
	char err[IMG_ERRMSG_MAX];
	struct img *img;
	int r;

	if (img_open(&img, path, &oo, err, sizeof(err)) < 0) {
		snprintf(why, whylen, "open for check: %s", err);
		return false;
	}
	r = img_check(img, &res, 0);
	if ((r < 0 && r != -ENOTSUP) || (res.corruptions && !internal)) {
		const char *msg = res.nmessages ? res.messages[0]
						: img_errmsg(img);

		/* the first corruption, not a leak reported before it */
		for (int i = 0; i < res.nmessages; i++)
			if (!strncmp(res.messages[i], "ERROR", 5)) {
				msg = res.messages[i];
				break;
			}
		snprintf(why, whylen, "check %s: %llu corruptions: %s", path,
			 (unsigned long long)res.corruptions, msg);
		img_close(img);
		return false;
	}
	if (res.corruptions)
		repaired_points++;
	if (res.leaks || res.corruptions) {
		memset(&res, 0, sizeof(res));
		img_check(img, &res,
			  IMG_CHECK_FIX_LEAKS |
				  (internal ? IMG_CHECK_FIX_ERRORS : 0));
		memset(&res, 0, sizeof(res));
		img_check(img, &res, 0);
		if (res.leaks || res.corruptions) {
			snprintf(why, whylen, "%s: %s left after repair", path,
				 res.nmessages ? res.messages[0] : "errors");
			img_close(img);
			return false;
		}
	}
	if (img_close(img) < 0) {
		snprintf(why, whylen, "%s: flush after repair failed", path);
		return false;
	}
	return true;
}

static bool read_all(struct img *img, uint8_t *out, char *why, size_t whylen)
{
	if (img_size(img) != DISK_SIZE) {
		snprintf(why, whylen, "%s: size %llu", img_filename(img),
			 (unsigned long long)img_size(img));
		return false;
	}
	if (img_pread(img, out, DISK_SIZE, 0) < 0) {
		snprintf(why, whylen, "read: %s", img_errmsg(img));
		return false;
	}
	return true;
}

/* The disk's contents and snapshots match state k (a write step in
 * progress after it: each byte of state k or k+1). */
static bool matches(int k, const uint8_t *data,
		    const struct img_snapshot_entry *list, int n, char *why,
		    size_t whylen)
{
	const struct model_state *m = &states[k];
	const struct model_state *next = k < NSTEPS ? &states[k + 1] : m;
	bool mixed = k < NSTEPS && script[k].kind == STEP_WRITE;

	if (n != m->nsnaps) {
		snprintf(why, whylen, "state %d: %d snapshots, not %d", k, n,
			 m->nsnaps);
		return false;
	}
	for (int i = 0; i < n; i++)
		if (!model_find((struct model_state *)m, list[i].name)) {
			snprintf(why, whylen, "state %d: no snapshot %s", k,
				 list[i].name);
			return false;
		}
	for (size_t i = 0; i < DISK_SIZE; i++)
		if (data[i] != m->disk[i] &&
		    !(mixed && data[i] == next->disk[i])) {
			snprintf(why, whylen,
				 "state %d: byte %zu reads %#x, not %#x", k, i,
				 data[i], m->disk[i]);
			return false;
		}
	return true;
}

static bool verify(int done, char *why, size_t whylen)
{
	struct img_open_options oo = { .format = format,
				       .flags = IMG_OPEN_RDONLY };
	struct img_snapshot_entry *list = NULL;
	char err[IMG_ERRMSG_MAX], why_before[512] = "";
	struct img_snapshots *s = NULL;
	uint8_t *data = malloc(DISK_SIZE), *snap = malloc(DISK_SIZE);
	struct img *img;
	bool ok = false;
	int n = 0;

	if (!data || !snap)
		die("out of memory");
	if (img_snapshots_recover(disk, format, err, sizeof(err)) < 0) {
		snprintf(why, whylen, "recover: %s", err);
		goto out;
	}
	if (!check_clean(disk, why, whylen))
		goto out;
	if (img_snapshots_open(&s, disk, format, IMG_OPEN_RDONLY, err,
			       sizeof(err)) < 0) {
		snprintf(why, whylen, "open after recovery: %s", err);
		goto out;
	}
	if (img_snapshots_list(s, &list, &n) < 0) {
		snprintf(why, whylen, "list: %s", img_snapshots_errmsg(s));
		goto out;
	}
	if (img_open(&img, disk, &oo, err, sizeof(err)) < 0) {
		snprintf(why, whylen, "open: %s", err);
		goto out;
	}
	ok = read_all(img, data, why, whylen);
	img_close(img);
	if (!ok)
		goto out;
	/* before the step in progress, or after it */
	ok = matches(done, data, list, n, why_before, sizeof(why_before));
	if (!ok && done < NSTEPS && script[done].kind != STEP_WRITE)
		ok = matches(done + 1, data, list, n, why, whylen);
	else if (!ok)
		snprintf(why, whylen, "%s", why_before);
	if (!ok) {
		size_t l = strlen(why);

		snprintf(why + l, whylen - l, " (before: %s)", why_before);
		goto out;
	}
	for (int i = 0; i < n && ok; i++) {
		const struct model_snap *ms =
			model_find(&states[done], list[i].name);

		if (!ms)
			ms = model_find(&states[done + 1], list[i].name);
		if (img_snapshots_open_image(s, list[i].name, &img) < 0) {
			snprintf(why, whylen, "snapshot %s: %s", list[i].name,
				 img_snapshots_errmsg(s));
			ok = false;
			break;
		}
		ok = read_all(img, snap, why, whylen);
		img_close(img);
		if (ok && memcmp(snap, ms->data, DISK_SIZE)) {
			snprintf(why, whylen, "snapshot %s reads otherwise",
				 list[i].name);
			ok = false;
		}
		if (ok && list[i].path)
			ok = check_clean(list[i].path, why, whylen);
	}
	img_snapshots_close(s);
	s = NULL;
	/* still usable: one more snapshot taken and deleted */
	if (ok) {
		int r = img_snapshots_open(&s, disk, format, IMG_OPEN_RDWR, err,
					   sizeof(err));

		if (r == 0)
			r = img_snapshots_create(s, "after");
		if (r == 0)
			r = img_snapshots_delete(s, "after");
		if (r < 0) {
			snprintf(why, whylen, "snapshot after recovery: %s",
				 s ? img_snapshots_errmsg(s) : err);
			ok = false;
		}
	}
out:
	if (s)
		img_snapshots_close(s);
	free(list);
	free(data);
	free(snap);
	return ok;
}

/* Run the script once, killed at point (or not at all: -1); returns the
 * steps it completed. */
static int run_child(long point)
{
	pid_t pid;
	int status;

	shared->io_calls = 0;
	shared->steps_done = 0;
	kill_at = point;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0)
		child_run();
	if (waitpid(pid, &status, 0) < 0)
		die("waitpid: %s", strerror(errno));
	if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
		die("the script failed (exit %d) at step %d",
		    WEXITSTATUS(status), shared->steps_done + 1);
	return shared->steps_done;
}

int main(int argc, char **argv)
{
	long points = 50, total, failures = 0, tried = 0;
	bool verbose = false;
	int opt;

	while ((opt = getopt(argc, argv, "n:v")) != -1) {
		if (opt == 'n')
			points = strtol(optarg, NULL, 10);
		else if (opt == 'v')
			verbose = true;
		else
			die("usage: crashsnap [-n POINTS] [-v] DIR FORMAT");
	}
	if (argc - optind != 2 || points < 1)
		die("usage: crashsnap [-n POINTS] [-v] DIR FORMAT");
	format = argv[optind + 1];
	snprintf(disk, sizeof(disk), "%s/disk.%s", argv[optind], format);
	internal = !strcmp(format, "qcow2");
	shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	model_build();

	/* a run without a crash: every step, and the number of calls */
	fresh_disk();
	if (run_child(-1) != NSTEPS)
		die("the script did not complete");
	total = shared->io_calls;
	{
		char why[1024];

		if (!verify(NSTEPS, why, sizeof(why)))
			die("%s: without a crash: %s", format, why);
	}
	if (points > total)
		points = total;
	for (long i = 0; i < points; i++) {
		long point = 1 + i * total / points;
		char why[1024];
		int done;

		fresh_disk();
		done = run_child(point);
		tried++;
		if (!verify(done, why, sizeof(why))) {
			failures++;
			fprintf(stderr,
				"  %s: killed at call %ld/%ld (step %d): %s\n",
				format, point, total, done + 1, why);
		} else if (verbose) {
			fprintf(stderr,
				"  %s: killed at call %ld (step %d): ok\n",
				format, point, done + 1);
		}
	}
	printf("crashsnap %s: %ld kill points over %ld host calls and %d steps, %ld inconsistent",
	       format, tried, total, NSTEPS, failures);
	if (repaired_points)
		printf(" (%ld needed check -r all: reference counts and COPIED flags)",
		       repaired_points);
	printf("\n");
	return failures ? 1 : 0;
}
