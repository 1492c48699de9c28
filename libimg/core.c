/* SPDX-License-Identifier: MIT */
/*
 * The libimg core: handles, probing, opening backing chains, the data path
 * (range checks, sub-sector read-modify-write, locking), block status
 * through the chain, create and info.
 */
#include "driver.h"
#include "internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTOR IMG_SECTOR_SIZE
#define MAX_CHAIN_DEPTH 64
#define MAX_BACKING_CANDIDATES 16

struct backing_candidate {
	char *path; /* as recorded (relative to the image's directory) */
	char *format;
};

struct img {
	const struct img_driver *drv;
	void *state;
	char *path;
	char *dir;
	unsigned flags;
	uint64_t size;
	bool shared_reads; /* driver has IMG_DRV_CONCURRENT_READS */
	bool byte_aligned; /* driver has IMG_DRV_BYTE_ALIGNED */
	bool parallel_rw;  /* IMG_DRV_PARALLEL_RW or img_set_parallel_rw */
	struct img *backing;
	char *backing_full; /* where the parent was (or would be) opened */
	pthread_rwlock_t lock;

	int ncandidates;
	struct backing_candidate candidates[MAX_BACKING_CANDIDATES];
	char *identity_format;

	uint32_t cluster_size;
	bool cluster_size_known;

	pthread_mutex_t err_lock;
	unsigned err_seq; /* bumped by every message, see io_failed() */
	char errmsg[IMG_ERRMSG_MAX];
};

/* Ancestors of the layer being opened, for loop detection. */
struct chain_ctx {
	int depth;
	dev_t dev[MAX_CHAIN_DEPTH + 1];
	ino_t ino[MAX_CHAIN_DEPTH + 1];
	const char *const *search_dirs;
};

/* ---- errors --------------------------------------------------------------*/

/* Threads share handles (the NBD server, the VMM's queues): each thread
 * keeps the message of its own last failure, and img_errmsg hands out
 * that, or a copy of the handle's latest, never the handle's buffer that
 * another thread may be rewriting. */
static __thread struct {
	const struct img *img;
	char msg[IMG_ERRMSG_MAX];
} thread_error;

static void set_errmsg_raw(struct img *img, const char *msg)
{
	pthread_mutex_lock(&img->err_lock);
	snprintf(img->errmsg, sizeof(img->errmsg), "%s", msg);
	__atomic_add_fetch(&img->err_seq, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&img->err_lock);
	thread_error.img = img;
	snprintf(thread_error.msg, sizeof(thread_error.msg), "%s", msg);
}

int img_error(struct img *img, int err, const char *fmt, ...)
{
	char msg[IMG_ERRMSG_MAX];
	char full[IMG_ERRMSG_MAX];
	size_t plen;
	va_list ap;

	if (!img)
		return err;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* Messages that already name the file are kept as they are. */
	plen = strlen(img->path);
	if (strncmp(msg, img->path, plen) == 0 && msg[plen] == ':')
		set_errmsg_raw(img, msg);
	else {
		/* Long messages are cut: the point is one readable line. */
		if (snprintf(full, sizeof(full), "%s: %s", img->path, msg) < 0)
			full[0] = '\0';
		set_errmsg_raw(img, full);
	}
	return err;
}

const char *img_errmsg(const struct img *img)
{
	static __thread char copy[IMG_ERRMSG_MAX];
	struct img *locked = (struct img *)img;

	if (!img)
		return "no image";
	if (thread_error.img == img)
		return thread_error.msg;
	pthread_mutex_lock(&locked->err_lock);
	snprintf(copy, sizeof(copy), "%s", img->errmsg);
	pthread_mutex_unlock(&locked->err_lock);
	return copy;
}

/* A driver failed without leaving a message: say what failed, with the
 * host-level detail when file.c recorded one. */
static int io_failed(struct img *img, unsigned seq, int r, const char *what,
		     uint64_t off, uint64_t len)
{
	const char *detail;

	if (__atomic_load_n(&img->err_seq, __ATOMIC_RELAXED) != seq)
		return r;
	detail = img_file_last_error();
	if (detail[0])
		return img_error(img, r, "%s", detail);
	return img_error(img, r,
			 "%s of %" PRIu64 " bytes at offset %" PRIu64
			 " failed: %s",
			 what, len, off, strerror(-r));
}

static unsigned op_begin(struct img *img)
{
	img_file_clear_last_error();
	return __atomic_load_n(&img->err_seq, __ATOMIC_RELAXED);
}

/* ---- accessors drivers use -----------------------------------------------*/

void *img_state(struct img *img)
{
	return img->state;
}

unsigned img_open_flags(const struct img *img)
{
	return img->flags;
}

void img_set_size(struct img *img, uint64_t size)
{
	img->size = size;
}

void img_set_parallel_rw(struct img *img, bool on)
{
	img->parallel_rw = on;
}

uint64_t img_size(const struct img *img)
{
	return img->size;
}

const char *img_filename(const struct img *img)
{
	return img->path;
}

const char *img_dirname(const struct img *img)
{
	return img->dir;
}

const char *img_format(const struct img *img)
{
	return img->drv->name;
}

struct img *img_backing(const struct img *img)
{
	return img->backing;
}

bool img_is_writable(const struct img *img)
{
	return img->flags & IMG_OPEN_RDWR;
}

int img_add_backing_candidate(struct img *img, const char *path,
			      const char *format)
{
	struct backing_candidate *c;

	if (!path || !*path)
		return 0;
	if (img->ncandidates >= MAX_BACKING_CANDIDATES)
		return 0; /* the first ones are the preferred ones */
	c = &img->candidates[img->ncandidates];
	c->path = strdup(path);
	c->format = format ? strdup(format) : NULL;
	if (!c->path || (format && !c->format)) {
		free(c->path);
		free(c->format);
		return img_error(img, -ENOMEM, "out of memory");
	}
	img->ncandidates++;
	return 0;
}

void img_set_backing_by_identity(struct img *img, const char *format)
{
	free(img->identity_format);
	img->identity_format = strdup(format ? format : img->drv->name);
}

void img_test_force_sector_io(struct img *img)
{
	img->byte_aligned = false;
}

/* ---- handle life ---------------------------------------------------------*/

static char *path_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');

	/* A name on another backend has no directory: names recorded in it
	 * are taken as they are (full backend names, or local paths). */
	if (!img_name_is_local(path))
		return strdup(".");

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/* A path recorded in an image, relative to the image's directory. */
static char *path_resolve(const char *dir, const char *path)
{
	char *out;

	if (path[0] == '/' || strcmp(dir, ".") == 0 || !img_name_is_local(path))
		return strdup(path);
	if (asprintf(&out, "%s/%s", dir, path) < 0)
		return NULL;
	return out;
}

static struct img *img_alloc(const char *path, unsigned flags)
{
	struct img *img = calloc(1, sizeof(*img));
	pthread_rwlockattr_t attr;

	if (!img)
		return NULL;
	img->path = strdup(path);
	img->dir = path_dirname(path);
	if (!img->path || !img->dir) {
		free(img->path);
		free(img->dir);
		free(img);
		return NULL;
	}
	img->flags = flags;
	pthread_rwlockattr_init(&attr);
	/* Writers must not starve behind a stream of readers. */
	pthread_rwlockattr_setkind_np(
		&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&img->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	pthread_mutex_init(&img->err_lock, NULL);
	return img;
}

static void img_free(struct img *img)
{
	if (thread_error.img == img)
		thread_error.img = NULL;
	for (int i = 0; i < img->ncandidates; i++) {
		free(img->candidates[i].path);
		free(img->candidates[i].format);
	}
	free(img->identity_format);
	free(img->backing_full);
	free(img->state);
	free(img->path);
	free(img->dir);
	pthread_rwlock_destroy(&img->lock);
	pthread_mutex_destroy(&img->err_lock);
	free(img);
}

static void lock_shared(struct img *img)
{
	if (img->shared_reads)
		pthread_rwlock_rdlock(&img->lock);
	else
		pthread_rwlock_wrlock(&img->lock);
}

static void lock_exclusive(struct img *img)
{
	pthread_rwlock_wrlock(&img->lock);
}

/* Writes and flushes: shared where the driver takes them in parallel
 * (see Locking in driver.h), except a read-modify-write of edges. */
static void lock_for_write(struct img *img, bool aligned)
{
	if (img->parallel_rw && img->shared_reads && aligned)
		pthread_rwlock_rdlock(&img->lock);
	else
		pthread_rwlock_wrlock(&img->lock);
}

static void unlock(struct img *img)
{
	pthread_rwlock_unlock(&img->lock);
}

/* ---- probing -------------------------------------------------------------*/

static int probe_file(const char *path, const struct img_driver **out,
		      char *errbuf, size_t errlen)
{
	uint8_t head[4096];
	struct img_file f;
	const struct img_driver *best = NULL;
	uint64_t size = 0;
	size_t head_len;
	char msg[IMG_ERRMSG_MAX];
	int best_score = 0, r;

	/* Any backend: the content decides, wherever it lives. */
	r = img_file_open_name(&f, path, false, IMG_OPEN_NO_LOCK, msg,
			       sizeof(msg));
	if (r < 0)
		return img_error_buf(errbuf, errlen, r, "%s: %s", path, msg);
	r = img_file_size(&f, &size);
	if (r < 0)
		goto fail;
	head_len = size < sizeof(head) ? (size_t)size : sizeof(head);
	r = img_file_pread_zero_eof(&f, head, head_len, 0);
	if (r < 0)
		goto fail;
	for (int i = 0; i <= IMG_NDRIVERS; i++) {
		const struct img_driver *drv = img_driver_at(i);
		int score;

		if (!drv || !drv->probe)
			continue;
		score = drv->probe(head, head_len, size, &f);
		if (score > best_score) {
			best_score = score;
			best = drv;
		}
	}
	img_file_close(&f);
	if (!best)
		best = img_driver_find("raw");
	if (!best)
		return img_error_buf(errbuf, errlen, -ENOTSUP,
				     "%s: unknown image format", path);
	*out = best;
	return 0;
fail:
	img_file_close(&f);
	return img_error_buf(errbuf, errlen, r, "%s", img_file_last_error());
}

int img_probe(const char *path, char *fmt, size_t fmtlen, char *errbuf,
	      size_t errlen)
{
	const struct img_driver *drv;
	int r = probe_file(path, &drv, errbuf, errlen);

	if (r < 0)
		return r;
	snprintf(fmt, fmtlen, "%s", drv->name);
	return 0;
}

static int unknown_format(char *errbuf, size_t errlen, const char *path,
			  const char *format)
{
	char known[128] = "";
	const char *const *names = img_formats();

	for (int i = 0; names[i]; i++) {
		size_t n = strlen(known);

		snprintf(known + n, sizeof(known) - n, "%s%s", i ? ", " : "",
			 names[i]);
	}
	if (path)
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "%s: unknown format '%s' (known: %s)",
				     path, format, known);
	return img_error_buf(errbuf, errlen, -EINVAL,
			     "unknown format '%s' (known: %s)", format, known);
}

/* ---- opening -------------------------------------------------------------*/

static int open_one(struct img **out, const char *path, const char *format,
		    unsigned flags, struct chain_ctx *ctx, struct stat *st,
		    char *errbuf, size_t errlen);
static int open_chain(struct img *img, const struct stat *st,
		      const char *backing_path, const char *backing_format,
		      struct chain_ctx *ctx);

/* A name on another backend (nbd://, rbd:, http://) has no inode: its
 * identity for loop detection is a hash of the name. */
static void remote_identity(const char *name, struct stat *st)
{
	uint64_t h = 1469598103934665603ull;

	memset(st, 0, sizeof(*st));
	for (const char *p = name; *p; p++)
		h = (h ^ (uint8_t)*p) * 1099511628211ull;
	st->st_dev = (dev_t)-1;
	st->st_ino = (ino_t)h;
	st->st_mode = S_IFREG;
}

static int img_backing_stat(const char *path, struct stat *st)
{
	if (!img_name_is_local(path)) {
		remote_identity(path, st);
		return 0;
	}
	return stat(path, st) == 0 ? 0 : -errno;
}

/* Does this parent belong to img?  0 yes, -ESTALE no (message on img). */
static int backing_check(struct img *img, struct img *parent)
{
	if (!img->drv->backing_matches)
		return 0;
	return img->drv->backing_matches(img, parent);
}

static bool is_ancestor(const struct chain_ctx *ctx, const struct stat *st)
{
	for (int i = 0; i < ctx->depth; i++)
		if (ctx->dev[i] == st->st_dev && ctx->ino[i] == st->st_ino)
			return true;
	return false;
}

/* Scan one directory for a file of the wanted format that the child
 * accepts as its parent (formats that record only a UUID). */
static int scan_dir_for_parent(struct img *img, const char *dir,
			       unsigned pflags, struct chain_ctx *ctx,
			       char **found)
{
	char ebuf[IMG_ERRMSG_MAX];
	struct dirent *de;
	DIR *d = opendir(dir);
	int r = -ENOENT;

	if (!d)
		return -ENOENT;
	while (r == -ENOENT && (de = readdir(d))) {
		const struct img_driver *drv;
		struct img *cand;
		struct stat st;
		char *full;

		if (de->d_name[0] == '.')
			continue;
		full = path_resolve(dir, de->d_name);
		if (!full) {
			r = -ENOMEM;
			break;
		}
		if (stat(full, &st) < 0 || !S_ISREG(st.st_mode) ||
		    is_ancestor(ctx, &st) ||
		    probe_file(full, &drv, ebuf, sizeof(ebuf)) < 0 ||
		    strcmp(drv->name, img->identity_format) != 0 ||
		    open_one(&cand, full, drv->name, pflags, ctx, &st, ebuf,
			     sizeof(ebuf)) < 0) {
			free(full);
			continue;
		}
		if (backing_check(img, cand) == 0) {
			*found = full;
			r = 0;
		} else {
			free(full);
		}
		img_close(cand);
	}
	closedir(d);
	return r;
}

static bool is_snapshots_dir(const char *dir)
{
	const char *base = strrchr(dir, '/');

	return strcmp(base ? base + 1 : dir, "Snapshots") == 0;
}

static int find_parent_by_identity(struct img *img, unsigned pflags,
				   struct chain_ctx *ctx, char **found)
{
	char *snapdir = NULL;
	int r = -ENOENT;

	for (const char *const *d = ctx->search_dirs; d && *d && r == -ENOENT;
	     d++)
		r = scan_dir_for_parent(img, *d, pflags, ctx, found);
	if (r == -ENOENT)
		r = scan_dir_for_parent(img, img->dir, pflags, ctx, found);
	if (r == -ENOENT && asprintf(&snapdir, "%s.snapshots", img->path) > 0) {
		r = scan_dir_for_parent(img, snapdir, pflags, ctx, found);
		free(snapdir);
	}
	/* VirtualBox keeps differencing images in <vm>/Snapshots/ and the
	 * base disk in <vm>/. */
	if (r == -ENOENT && is_snapshots_dir(img->dir)) {
		char *up = path_resolve(img->dir, "..");

		if (!up)
			return -ENOMEM;
		r = scan_dir_for_parent(img, up, pflags, ctx, found);
		free(up);
	}
	return r;
}

/* Open a parent candidate by itself (its own chain comes after it has
 * been accepted, so a wrong candidate costs one open). */
static int attach_parent(struct img *img, const char *path, const char *format,
			 unsigned pflags, struct chain_ctx *ctx,
			 struct img **parent, struct stat *st)
{
	char ebuf[IMG_ERRMSG_MAX];
	int r;

	r = open_one(parent, path, format, pflags, ctx, st, ebuf, sizeof(ebuf));
	if (r < 0)
		return img_error(img, r, "cannot open its parent: %s", ebuf);
	return 0;
}

/* The accepted parent becomes img's backing handle, with its own chain. */
static int adopt_parent(struct img *img, struct img *parent,
			const struct stat *st, char *full,
			struct chain_ctx *ctx)
{
	int r = open_chain(parent, st, NULL, NULL, ctx);

	if (r < 0) {
		/* The parent's message names the layer that is broken. */
		set_errmsg_raw(img, parent->errmsg);
		img_close(parent);
		free(full);
		return r;
	}
	img->backing = parent;
	img->backing_full = full;
	return 0;
}

static int open_backing(struct img *img, const char *override_path,
			const char *override_format, struct chain_ctx *ctx)
{
	unsigned pflags = IMG_OPEN_RDONLY |
			  (img->flags & (IMG_OPEN_NO_LOCK | IMG_OPEN_DIRECT |
					 IMG_OPEN_FORCE));
	bool force = img->flags & IMG_OPEN_FORCE;
	struct img *parent = NULL, *forced = NULL;
	char *forced_path = NULL, *missing = NULL, *found = NULL;
	char mismatch[IMG_ERRMSG_MAX] = "";
	struct stat st, forced_st;
	int r;

	/* An override names where the recorded parent is; an image that
	 * records no parent has none to relocate. */
	if (override_path && (img->ncandidates > 0 || img->identity_format)) {
		char *full = strdup(override_path);

		if (!full)
			return img_error(img, -ENOMEM, "out of memory");
		r = attach_parent(img, override_path, override_format, pflags,
				  ctx, &parent, &st);
		if (r == 0) {
			r = backing_check(img, parent);
			if (r < 0 && force)
				r = 0;
			if (r < 0)
				img_close(parent);
		}
		if (r < 0) {
			free(full);
			return r;
		}
		return adopt_parent(img, parent, &st, full, ctx);
	}

	for (int i = 0; i < img->ncandidates && !img->backing; i++) {
		struct backing_candidate *c = &img->candidates[i];
		char *full = path_resolve(img->dir, c->path);

		if (!full) {
			r = img_error(img, -ENOMEM, "out of memory");
			goto fail;
		}
		r = img_backing_stat(full, &st);
		if (r == -ENOENT || r == -ENOTDIR) {
			if (!missing)
				missing = full;
			else
				free(full);
			continue;
		}
		r = attach_parent(img, full, c->format, pflags, ctx, &parent,
				  &st);
		if (r < 0) {
			free(full);
			goto fail;
		}
		r = backing_check(img, parent);
		if (r == 0) {
			r = adopt_parent(img, parent, &st, full, ctx);
			if (r < 0)
				goto fail;
			break;
		}
		if (r != -ESTALE) {
			img_close(parent);
			free(full);
			goto fail;
		}
		if (!mismatch[0])
			snprintf(mismatch, sizeof(mismatch), "%s", img->errmsg);
		if (force && !forced) {
			forced = parent;
			forced_path = full;
			forced_st = st;
		} else {
			img_close(parent);
			free(full);
		}
	}

	if (!img->backing && img->identity_format) {
		r = find_parent_by_identity(img, pflags, ctx, &found);
		if (r == 0) {
			r = attach_parent(img, found, img->identity_format,
					  pflags, ctx, &parent, &st);
			if (r < 0)
				goto fail;
			r = adopt_parent(img, parent, &st, found, ctx);
			found = NULL;
			if (r < 0)
				goto fail;
		} else if (r != -ENOENT) {
			r = img_error(img, r, "searching for its parent: %s",
				      strerror(-r));
			goto fail;
		}
	}

	if (!img->backing && forced) {
		/* The caller accepted a parent that does not match. */
		r = adopt_parent(img, forced, &forced_st, forced_path, ctx);
		forced = NULL;
		forced_path = NULL;
		if (r < 0)
			goto fail;
	}
	if (!img->backing) {
		if (mismatch[0]) {
			set_errmsg_raw(img, mismatch);
			r = -ESTALE;
			goto fail;
		}
		if (missing) {
			r = img_error(img, -ENOENT,
				      "its parent %s does not exist", missing);
			goto fail;
		}
		if (img->identity_format) {
			r = img_error(
				img, -ENOENT,
				"cannot find its parent (a %s image with the recorded UUID) next to it, in %s.snapshots/ or in the search dirs",
				img->identity_format, img->path);
			goto fail;
		}
	}
	r = 0;
fail:
	if (forced)
		img_close(forced);
	free(forced_path);
	free(missing);
	free(found);
	return r;
}

/* One image by itself: checks, format, driver open.  st receives the
 * file's identity for loop detection. */
static int open_one(struct img **out, const char *path, const char *format,
		    unsigned flags, struct chain_ctx *ctx, struct stat *st,
		    char *errbuf, size_t errlen)
{
	const struct img_driver *drv;
	struct img *img = NULL;
	int r;

	*out = NULL;
	r = img_backing_stat(path, st);
	if (r < 0) {
		return img_error_buf(errbuf, errlen, r, "%s: %s", path,
				     strerror(-r));
	}
	if (S_ISDIR(st->st_mode))
		return img_error_buf(errbuf, errlen, -EISDIR,
				     "%s: is a directory", path);
	if (is_ancestor(ctx, st))
		return img_error_buf(errbuf, errlen, -ELOOP,
				     "%s: the backing chain loops back to it",
				     path);
	if (ctx->depth >= MAX_CHAIN_DEPTH)
		return img_error_buf(errbuf, errlen, -ELOOP,
				     "%s: backing chain deeper than %d images",
				     path, MAX_CHAIN_DEPTH);
	if (format) {
		drv = img_driver_find(format);
		if (!drv)
			return unknown_format(errbuf, errlen, path, format);
	} else {
		r = probe_file(path, &drv, errbuf, errlen);
		if (r < 0)
			return r;
	}
	/* Forced opens accept inconsistent images, which must not be
	 * written. */
	if (flags & IMG_OPEN_FORCE)
		flags &= ~(unsigned)IMG_OPEN_RDWR;
	if ((flags & IMG_OPEN_COMPRESS) &&
	    !(drv->flags & IMG_DRV_COMPRESSED_WRITES))
		return img_error_buf(errbuf, errlen, -ENOTSUP,
				     "%s: %s images cannot store compressed "
				     "data",
				     path, drv->name);
	img = img_alloc(path, flags);
	if (!img)
		return img_error_buf(errbuf, errlen, -ENOMEM,
				     "%s: out of memory", path);
	img->drv = drv;
	img->shared_reads = drv->flags & IMG_DRV_CONCURRENT_READS;
	img->byte_aligned = drv->flags & IMG_DRV_BYTE_ALIGNED;
	img->parallel_rw = drv->flags & IMG_DRV_PARALLEL_RW;
	if (drv->state_size) {
		img->state = calloc(1, drv->state_size);
		if (!img->state) {
			img_free(img);
			return img_error_buf(errbuf, errlen, -ENOMEM,
					     "%s: out of memory", path);
		}
	}
	r = drv->open(img);
	if (r < 0) {
		if (!img->errmsg[0])
			img_error(img, r, "cannot open as %s: %s", drv->name,
				  strerror(-r));
		img_error_buf(errbuf, errlen, r, "%s", img->errmsg);
		img_free(img);
		return r;
	}
	if ((flags & IMG_OPEN_NO_BACKING) && img->ncandidates > 0) {
		/* Not opened, but info still shows where it would be. */
		img->backing_full =
			path_resolve(img->dir, img->candidates[0].path);
	}
	*out = img;
	return 0;
}

/* img's parents, unless it was opened without them.  Message on img. */
static int open_chain(struct img *img, const struct stat *st,
		      const char *backing_path, const char *backing_format,
		      struct chain_ctx *ctx)
{
	int r;

	if (img->flags & IMG_OPEN_NO_BACKING)
		return 0;
	ctx->dev[ctx->depth] = st->st_dev;
	ctx->ino[ctx->depth] = st->st_ino;
	ctx->depth++;
	r = open_backing(img, backing_path, backing_format, ctx);
	ctx->depth--;
	return r;
}

int img_open(struct img **out, const char *path,
	     const struct img_open_options *opts, char *errbuf, size_t errlen)
{
	static const struct img_open_options defaults;
	struct chain_ctx ctx = { 0 };
	struct img *img;
	struct stat st;
	int r;

	*out = NULL;
	if (!opts)
		opts = &defaults;
	ctx.search_dirs = opts->search_dirs;
	if (!path || !*path)
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "no image file name given");
	r = open_one(&img, path, opts->format, opts->flags, &ctx, &st, errbuf,
		     errlen);
	if (r < 0)
		return r;
	r = open_chain(img, &st, opts->backing_path, opts->backing_format,
		       &ctx);
	if (r < 0) {
		img_error_buf(errbuf, errlen, r, "%s", img->errmsg);
		/* No flush: an image that failed to open is left as found. */
		img->drv->close(img);
		if (img->backing)
			img_close(img->backing);
		img_free(img);
		return r;
	}
	*out = img;
	return 0;
}

int img_close(struct img *img)
{
	int r = 0;

	if (!img)
		return 0;
	if (img->flags & IMG_OPEN_RDWR) {
		r = img_flush(img);
	}
	img->drv->close(img);
	if (img->backing)
		img_close(img->backing);
	img_free(img);
	return r;
}

/* ---- the data path -------------------------------------------------------*/

static int check_range(struct img *img, const char *what, uint64_t off,
		       uint64_t len)
{
	if (off > img->size || len > img->size - off)
		return img_error(img, -EINVAL,
				 "%s of %" PRIu64 " bytes at offset %" PRIu64
				 " is beyond the end of the image (%" PRIu64
				 " bytes)",
				 what, len, off, img->size);
	return 0;
}

static int check_writable(struct img *img)
{
	if (!(img->flags & IMG_OPEN_RDWR))
		return img_error(img, -EROFS, "image is opened read-only");
	return 0;
}

static int read_sector(struct img *img, uint64_t off, uint8_t *sector)
{
	struct iovec iov = { .iov_base = sector, .iov_len = SECTOR };

	return img->drv->preadv(img, off, &iov, 1, SECTOR);
}

static int write_sector(struct img *img, uint64_t off, uint8_t *sector)
{
	struct iovec iov = { .iov_base = sector, .iov_len = SECTOR };

	return img->drv->pwritev(img, off, &iov, 1, SECTOR);
}

/* Driver call on the part [pos, pos+len) of the request's iovec. */
static int driver_rw_slice(struct img *img, bool write, uint64_t off,
			   const struct iovec *iov, int iovcnt, size_t pos,
			   size_t len)
{
	struct img_iov_view v;
	int r;

	if (len == 0)
		return 0;
	r = img_iov_view(&v, iov, iovcnt, pos, len);
	if (r < 0)
		return img_error(img, r, "out of memory");
	r = write ? img->drv->pwritev(img, off, v.iov, v.cnt, len)
		  : img->drv->preadv(img, off, v.iov, v.cnt, len);
	img_iov_view_release(&v);
	return r;
}

/*
 * Drivers without IMG_DRV_BYTE_ALIGNED see whole sectors only: a partial
 * first or last sector goes through a bounce sector (read-modify-write for
 * writes, under the exclusive lock), the aligned middle goes straight
 * through with the caller's buffers.
 */
static int rw_unaligned(struct img *img, bool write, uint64_t off,
			const struct iovec *iov, int iovcnt, size_t len)
{
	uint8_t sector[SECTOR] __attribute__((aligned(64)));
	uint64_t end = off + len;
	uint64_t head = off & ~(uint64_t)(SECTOR - 1);
	uint64_t tail = end & ~(uint64_t)(SECTOR - 1);
	size_t pos = 0;
	int r;

	if (off != head) {
		size_t n =
			(size_t)((end < head + SECTOR ? end : head + SECTOR) -
				 off);

		r = read_sector(img, head, sector);
		if (r < 0)
			return r;
		if (write) {
			img_iov_to_buf(iov, iovcnt, 0, sector + (off - head),
				       n);
			r = write_sector(img, head, sector);
			if (r < 0)
				return r;
		} else {
			img_iov_from_buf(iov, iovcnt, 0, sector + (off - head),
					 n);
		}
		pos = n;
	}
	if (off + pos < tail) {
		size_t n = (size_t)(tail - (off + pos));

		r = driver_rw_slice(img, write, off + pos, iov, iovcnt, pos, n);
		if (r < 0)
			return r;
		pos += n;
	}
	if (pos < len) {
		r = read_sector(img, tail, sector);
		if (r < 0)
			return r;
		if (write) {
			img_iov_to_buf(iov, iovcnt, pos, sector, len - pos);
			r = write_sector(img, tail, sector);
			if (r < 0)
				return r;
		} else {
			img_iov_from_buf(iov, iovcnt, pos, sector, len - pos);
		}
	}
	return 0;
}

static inline bool request_aligned(const struct img *img, uint64_t off,
				   size_t len)
{
	return img->byte_aligned || ((off | len) & (SECTOR - 1)) == 0;
}

/* Lock held by the caller. */
static int do_read(struct img *img, uint64_t off, const struct iovec *iov,
		   int iovcnt, size_t len)
{
	if (request_aligned(img, off, len))
		return img->drv->preadv(img, off, iov, iovcnt, len);
	return rw_unaligned(img, false, off, iov, iovcnt, len);
}

static int do_write(struct img *img, uint64_t off, const struct iovec *iov,
		    int iovcnt, size_t len)
{
	if (request_aligned(img, off, len))
		return img->drv->pwritev(img, off, iov, iovcnt, len);
	return rw_unaligned(img, true, off, iov, iovcnt, len);
}

static int img_preadv_len(struct img *img, const struct iovec *iov, int iovcnt,
			  size_t len, uint64_t off)
{
	unsigned seq;
	int r;

	seq = op_begin(img);
	lock_shared(img);
	/* Checked under the lock: a resize may be changing the size. */
	r = check_range(img, "read", off, len);
	if (r == 0 && len)
		r = do_read(img, off, iov, iovcnt, len);
	unlock(img);
	if (r < 0)
		return io_failed(img, seq, r, "read", off, len);
	return 0;
}

int img_preadv(struct img *img, const struct iovec *iov, int iovcnt,
	       uint64_t off)
{
	return img_preadv_len(img, iov, iovcnt, img_iov_total(iov, iovcnt),
			      off);
}

int img_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	struct iovec iov = { .iov_base = buf, .iov_len = len };

	return img_preadv_len(img, &iov, 1, len, off);
}

static int img_pwritev_len(struct img *img, const struct iovec *iov, int iovcnt,
			   size_t len, uint64_t off)
{
	unsigned seq;
	int r;

	r = check_writable(img);
	if (r < 0)
		return r;
	seq = op_begin(img);
	lock_for_write(img, request_aligned(img, off, len));
	r = check_range(img, "write", off, len);
	if (r == 0 && len)
		r = do_write(img, off, iov, iovcnt, len);
	unlock(img);
	if (r < 0)
		return io_failed(img, seq, r, "write", off, len);
	return 0;
}

int img_pwritev(struct img *img, const struct iovec *iov, int iovcnt,
		uint64_t off)
{
	return img_pwritev_len(img, iov, iovcnt, img_iov_total(iov, iovcnt),
			       off);
}

int img_pwrite(struct img *img, const void *buf, size_t len, uint64_t off)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return img_pwritev_len(img, &iov, 1, len, off);
}

int img_read_backing(struct img *img, uint64_t off, const struct iovec *iov,
		     int iovcnt, size_t len)
{
	struct img *parent = img->backing;
	struct img_iov_view v;
	size_t n = len;
	unsigned seq;
	int r;

	if (!parent || off >= parent->size) {
		img_iov_memset(iov, iovcnt, 0, 0, len);
		return 0;
	}
	if (n > parent->size - off)
		n = (size_t)(parent->size - off);
	r = img_iov_view(&v, iov, iovcnt, 0, n);
	if (r < 0)
		return img_error(img, r, "out of memory");
	seq = op_begin(parent);
	lock_shared(parent);
	r = do_read(parent, off, v.iov, v.cnt, n);
	unlock(parent);
	img_iov_view_release(&v);
	if (r < 0) {
		io_failed(parent, seq, r, "read", off, n);
		set_errmsg_raw(img, parent->errmsg);
		return r;
	}
	if (n < len)
		img_iov_memset(iov, iovcnt, n, 0, len - n);
	return 0;
}

int img_flush(struct img *img)
{
	unsigned seq;
	int r;

	if (!(img->flags & IMG_OPEN_RDWR) || !img->drv->flush)
		return 0;
	seq = op_begin(img);
	lock_for_write(img, true);
	r = img->drv->flush(img);
	unlock(img);
	if (r < 0)
		return io_failed(img, seq, r, "flush", 0, 0);
	return 0;
}

/* Store zeros with ordinary writes, 1 MiB per call from a shared zero
 * block.  Lock held. */
static int write_zero_data(struct img *img, uint64_t off, uint64_t len)
{
	enum { NIOV = 16 };
	struct iovec iov[NIOV];

	while (len) {
		size_t chunk = 0;
		int n = 0, r;

		while (n < NIOV && chunk < len) {
			size_t l = IMG_ZERO_BLOCK_SIZE;

			if (l > len - chunk)
				l = (size_t)(len - chunk);
			iov[n].iov_base = (void *)img_zero_block;
			iov[n].iov_len = l;
			chunk += l;
			n++;
		}
		r = do_write(img, off, iov, n, chunk);
		if (r < 0)
			return r;
		off += chunk;
		len -= chunk;
	}
	return 0;
}

static bool not_supported(int r)
{
	return r == -ENOTSUP || r == -EOPNOTSUPP;
}

/* Zeroing with the lock held: the driver's way on the aligned middle,
 * zero data on the edges (or everywhere when the driver has no way). */
static int write_zeroes_locked(struct img *img, uint64_t off, uint64_t len,
			       unsigned flags)
{
	uint64_t a = off, b = off + len;
	int r;

	if (!img->drv->write_zeroes)
		return write_zero_data(img, off, len);
	if (!img->byte_aligned) {
		a = (off + SECTOR - 1) & ~(uint64_t)(SECTOR - 1);
		b &= ~(uint64_t)(SECTOR - 1);
		if (a >= b)
			return write_zero_data(img, off, len);
	}
	r = img->drv->write_zeroes(img, a, b - a, flags);
	if (not_supported(r))
		r = write_zero_data(img, a, b - a);
	if (r == 0 && a > off)
		r = write_zero_data(img, off, a - off);
	if (r == 0 && off + len > b)
		r = write_zero_data(img, b, off + len - b);
	return r;
}

int img_write_zeroes(struct img *img, uint64_t off, uint64_t len,
		     unsigned flags)
{
	unsigned seq;
	int r;

	r = check_writable(img);
	if (r < 0)
		return r;
	seq = op_begin(img);
	lock_exclusive(img);
	r = check_range(img, "write zeroes", off, len);
	if (r == 0 && len)
		r = write_zeroes_locked(img, off, len, flags);
	unlock(img);
	if (r < 0)
		return io_failed(img, seq, r, "write zeroes", off, len);
	return 0;
}

int img_discard(struct img *img, uint64_t off, uint64_t len)
{
	uint64_t a = off, b = off + len;
	unsigned seq;
	int r;

	r = check_writable(img);
	if (r < 0)
		return r;
	if (!img->byte_aligned) {
		/* Advisory: only the whole sectors inside the range. */
		a = (off + SECTOR - 1) & ~(uint64_t)(SECTOR - 1);
		b &= ~(uint64_t)(SECTOR - 1);
	}
	seq = op_begin(img);
	lock_exclusive(img);
	r = check_range(img, "discard", off, len);
	if (r == 0 && a < b && img->drv->discard)
		r = img->drv->discard(img, a, b - a);
	unlock(img);
	if (not_supported(r))
		return 0;
	if (r < 0)
		return io_failed(img, seq, r, "discard", off, len);
	return 0;
}

/* ---- block status --------------------------------------------------------*/

/* This layer only; lock held; len > 0 and within the size. */
static int layer_status(struct img *img, uint64_t off, uint64_t len,
			struct img_extent *ext)
{
	bool here;
	int r;

	if (!img->drv->block_status) {
		*ext = (struct img_extent){ .start = off,
					    .length = len,
					    .flags = IMG_EXTENT_DATA |
						     IMG_EXTENT_ALLOCATED,
					    .depth = 0,
					    .file_offset = -1 };
		return 0;
	}
	memset(ext, 0, sizeof(*ext));
	ext->file_offset = -1;
	r = img->drv->block_status(img, off, len, ext);
	if (r < 0)
		return r;
	if (ext->length == 0)
		return img_error(img, -EIO,
				 "block status at offset %" PRIu64
				 " returned an empty extent",
				 off);
	ext->start = off;
	if (ext->length > len)
		ext->length = len;
	/* depth is what the driver contract defines; keep the flag in step */
	here = ext->depth >= 0 || (ext->flags & IMG_EXTENT_ALLOCATED);
	if (here) {
		ext->depth = 0;
		ext->flags |= IMG_EXTENT_ALLOCATED;
	} else {
		ext->depth = -1;
		ext->flags &= ~(unsigned)IMG_EXTENT_ALLOCATED;
	}
	return 0;
}

static int status_range(struct img *img, uint64_t off, uint64_t *len)
{
	if (off >= img->size || *len == 0)
		return img_error(img, -EINVAL,
				 "block status at offset %" PRIu64
				 " (length %" PRIu64
				 ") is outside the image (%" PRIu64 " bytes)",
				 off, *len, img->size);
	if (*len > img->size - off)
		*len = img->size - off;
	return 0;
}

int img_block_status_layer(struct img *img, uint64_t off, uint64_t len,
			   struct img_extent *ext)
{
	unsigned seq;
	int r;

	seq = op_begin(img);
	lock_shared(img);
	r = status_range(img, off, &len);
	if (r == 0)
		r = layer_status(img, off, len, ext);
	unlock(img);
	if (r < 0)
		return io_failed(img, seq, r, "block status", off, len);
	return 0;
}

int img_block_status(struct img *img, uint64_t off, uint64_t len,
		     struct img_extent *ext)
{
	struct img *layer = img;
	int depth = 0, r;

	for (;;) {
		struct img_extent e;
		unsigned seq = op_begin(layer);

		lock_shared(layer);
		r = layer == img ? status_range(img, off, &len) : 0;
		if (r == 0)
			r = layer_status(layer, off, len, &e);
		unlock(layer);
		if (r < 0) {
			io_failed(layer, seq, r, "block status", off, len);
			if (layer != img)
				set_errmsg_raw(img, layer->errmsg);
			return r;
		}
		if (e.depth == 0) {
			e.depth = depth;
			*ext = e;
			return 0;
		}
		/* Not here: the same range (no longer) in the parent. */
		len = e.length;
		layer = layer->backing;
		if (!layer || off >= layer->size)
			break;
		if (len > layer->size - off)
			len = layer->size - off;
		depth++;
	}
	*ext = (struct img_extent){ .start = off,
				    .length = len,
				    .flags = IMG_EXTENT_ZERO,
				    .depth = -1,
				    .file_offset = -1 };
	return 0;
}

/* ---- resize, check, backing ----------------------------------------------*/

int img_resize(struct img *img, uint64_t new_size, unsigned flags)
{
	char a[32], b[32];
	uint64_t old;
	unsigned seq;
	int r;

	r = check_writable(img);
	if (r < 0)
		return r;
	if (!img->byte_aligned && new_size % SECTOR)
		return img_error(img, -EINVAL,
				 "%s images must be a multiple of %u bytes",
				 img->drv->name, SECTOR);
	if (!img->drv->resize)
		return img_error(img, -ENOTSUP, "%s images cannot be resized",
				 img->drv->name);
	seq = op_begin(img);
	lock_exclusive(img);
	old = img->size;
	if (new_size < old && !(flags & IMG_RESIZE_SHRINK))
		r = img_error(
			img, -EINVAL,
			"shrinking from %s to %s would cut off data (shrink explicitly to allow it)",
			img_format_size(old, a, sizeof(a)),
			img_format_size(new_size, b, sizeof(b)));
	else if (new_size != old)
		r = img->drv->resize(img, new_size, flags);
	if (r == 0 && img->size == old)
		img->size = new_size;
	/* Grown over a longer parent (after a shrink): the new room reads
	 * as zeros, as on a real disk, not as the parent's old data. */
	if (r == 0 && new_size > old && img->backing &&
	    img->backing->size > old) {
		uint64_t end = img->backing->size < new_size
				       ? img->backing->size
				       : new_size;

		r = write_zeroes_locked(img, old, end - old, 0);
	}
	unlock(img);
	if (r < 0)
		return io_failed(img, seq, r, "resize", new_size, 0);
	return 0;
}

int img_check(struct img *img, struct img_check_result *res, unsigned fix)
{
	unsigned seq;
	int r;

	memset(res, 0, sizeof(*res));
	if (!img->drv->check)
		return img_error(img, -ENOTSUP,
				 "%s images have no consistency checks",
				 img->drv->name);
	if (fix) {
		r = check_writable(img);
		if (r < 0)
			return r;
	}
	seq = op_begin(img);
	lock_exclusive(img);
	r = img->drv->check(img, res, fix);
	unlock(img);
	if (r < 0)
		return io_failed(img, seq, r, "check", 0, 0);
	return 0;
}

/* ---- internal snapshots -------------------------------------------------*/

bool img_has_internal_snapshots(const struct img *img)
{
	return img->drv->snapshot_create != NULL;
}

static int snapshot_op(struct img *img, const char *what, bool write,
		       int (*op)(struct img *, const char *), const char *name)
{
	unsigned seq;
	int r;

	if (!op)
		return img_error(img, -ENOTSUP,
				 "%s images have no internal snapshots",
				 img->drv->name);
	if (write) {
		r = check_writable(img);
		if (r < 0)
			return r;
	} else if (img->flags & IMG_OPEN_RDWR) {
		return img_error(img, -EINVAL,
				 "a snapshot is loaded into read-only handles "
				 "only");
	}
	seq = op_begin(img);
	lock_exclusive(img);
	r = op(img, name);
	unlock(img);
	if (r < 0)
		return io_failed(img, seq, r, what, 0, 0);
	return 0;
}

int img_snapshot_list(struct img *img, struct img_snapshot **list, int *count)
{
	int r;

	*list = NULL;
	*count = 0;
	if (!img->drv->snapshot_list)
		return img_error(img, -ENOTSUP,
				 "%s images have no internal snapshots",
				 img->drv->name);
	lock_exclusive(img);
	r = img->drv->snapshot_list(img, list, count);
	unlock(img);
	return r;
}

int img_snapshot_create(struct img *img, const char *name)
{
	return snapshot_op(img, "create snapshot", true,
			   img->drv->snapshot_create, name);
}

int img_snapshot_apply(struct img *img, const char *name)
{
	return snapshot_op(img, "apply snapshot", true,
			   img->drv->snapshot_apply, name);
}

int img_snapshot_delete(struct img *img, const char *name)
{
	return snapshot_op(img, "delete snapshot", true,
			   img->drv->snapshot_delete, name);
}

int img_snapshot_load(struct img *img, const char *name)
{
	return snapshot_op(img, "load snapshot", false, img->drv->snapshot_load,
			   name);
}

/* After set_backing, info reports the new reference.  The open parent
 * handle (if any) stays until the image is closed: the caller owns the new
 * parent's handle. */
static int remember_new_backing(struct img *img, const char *backing_file,
				const char *backing_format)
{
	struct backing_candidate c = { NULL, NULL };
	char *full = NULL;

	if (backing_file && *backing_file) {
		c.path = strdup(backing_file);
		c.format = backing_format ? strdup(backing_format) : NULL;
		full = path_resolve(img->dir, backing_file);
		if (!c.path || !full || (backing_format && !c.format)) {
			free(c.path);
			free(c.format);
			free(full);
			return img_error(img, -ENOMEM, "out of memory");
		}
	}
	for (int i = 0; i < img->ncandidates; i++) {
		free(img->candidates[i].path);
		free(img->candidates[i].format);
	}
	img->ncandidates = 0;
	if (c.path)
		img->candidates[img->ncandidates++] = c;
	free(img->backing_full);
	img->backing_full = full;
	return 0;
}

int img_set_backing(struct img *img, const char *backing_file,
		    const char *backing_format, struct img *parent)
{
	unsigned seq;
	int r;

	r = check_writable(img);
	if (r < 0)
		return r;
	if (!img->drv->set_backing)
		return img_error(img, -ENOTSUP,
				 "%s images cannot record a backing file",
				 img->drv->name);
	seq = op_begin(img);
	lock_exclusive(img);
	r = img->drv->set_backing(img, backing_file, backing_format, parent);
	if (r == 0)
		r = remember_new_backing(img, backing_file, backing_format);
	unlock(img);
	if (r < 0)
		return io_failed(img, seq, r, "set backing file", 0, 0);
	return 0;
}

/* ---- info ----------------------------------------------------------------*/

static uint64_t allocated_bytes(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return 0;
	return (uint64_t)st.st_blocks * 512;
}

int img_get_info(struct img *img, struct img_info **out)
{
	struct img_info *info = calloc(1, sizeof(*info));
	unsigned seq;
	int r = 0;

	*out = NULL;
	if (!info)
		return img_error(img, -ENOMEM, "out of memory");
	info->struct_size = sizeof(*info);
	snprintf(info->filename, sizeof(info->filename), "%s", img->path);
	snprintf(info->format, sizeof(info->format), "%s", img->drv->name);
	info->virtual_size = img->size;
	info->read_only = !(img->flags & IMG_OPEN_RDWR);
	if (img->backing_full)
		snprintf(info->backing_full, sizeof(info->backing_full), "%s",
			 img->backing_full);
	if (img->ncandidates > 0)
		snprintf(info->backing_filename, sizeof(info->backing_filename),
			 "%s", img->candidates[0].path);
	if (img->drv->get_info) {
		seq = op_begin(img);
		lock_shared(img);
		r = img->drv->get_info(img, info);
		unlock(img);
		if (r < 0) {
			img_info_free(info);
			return io_failed(img, seq, r, "get info", 0, 0);
		}
	}
	if (!info->backing_format[0] && img->backing)
		snprintf(info->backing_format, sizeof(info->backing_format),
			 "%s", img->backing->drv->name);
	if (info->nfiles <= 0) {
		info->actual_size = allocated_bytes(img->path);
	} else {
		info->actual_size = 0;
		for (int i = 0; i < info->nfiles; i++)
			info->actual_size += allocated_bytes(info->files[i]);
	}
	*out = info;
	return 0;
}

uint32_t img_cluster_size(const struct img *cimg)
{
	struct img *img = (struct img *)cimg;
	struct img_info *info;

	if (__atomic_load_n(&img->cluster_size_known, __ATOMIC_ACQUIRE))
		return img->cluster_size;
	if (!img->drv->get_info)
		return 0;
	if (img_get_info(img, &info) == 0) {
		img->cluster_size = info->cluster_size;
		__atomic_store_n(&img->cluster_size_known, true,
				 __ATOMIC_RELEASE);
		img_info_free(info);
	}
	return img->cluster_size;
}

/* ---- create --------------------------------------------------------------*/

/* Splits "a=1,b=x,,y" in place (",," is a literal comma) into args->opts,
 * taking the generic keys out. */
static int parse_create_options(char *s, const struct img_driver *drv,
				struct img_create_args *args, char *errbuf,
				size_t errlen)
{
	while (s && *s) {
		char *key = s, *value = NULL, *w = s, *p = s;
		uint64_t num;

		/* Find the end of this item, unescaping ",,". */
		for (;;) {
			if (*p == ',' && p[1] == ',') {
				*w++ = ',';
				p += 2;
			} else if (*p == ',' || *p == '\0') {
				break;
			} else {
				*w++ = *p++;
			}
		}
		s = *p ? p + 1 : NULL;
		*w = '\0';
		if (!*key)
			continue;
		value = strchr(key, '=');
		if (value)
			*value++ = '\0';
		else
			value = "on";

		if (strcmp(key, "subformat") == 0) {
			args->subformat = value;
		} else if (strcmp(key, "cluster_size") == 0 ||
			   strcmp(key, "block_size") == 0 ||
			   strcmp(key, "grain_size") == 0) {
			if (img_parse_size(value, &num) < 0 || num == 0 ||
			    num > UINT32_MAX)
				return img_error_buf(errbuf, errlen, -EINVAL,
						     "invalid %s '%s'", key,
						     value);
			args->cluster_size = (uint32_t)num;
		} else if (strcmp(key, "preallocation") == 0) {
			if (strcmp(value, "off") == 0)
				args->preallocate = false;
			else if (strcmp(value, "full") == 0 ||
				 strcmp(value, "falloc") == 0)
				args->preallocate = true;
			else
				return img_error_buf(
					errbuf, errlen, -EINVAL,
					"invalid preallocation '%s' (off, full or falloc)",
					value);
		} else if (strcmp(key, "size") == 0) {
			if (img_parse_size(value, &num) < 0)
				return img_error_buf(errbuf, errlen, -EINVAL,
						     "invalid size '%s'",
						     value);
			args->size = num;
		} else if (strcmp(key, "backing_file") == 0) {
			args->backing_file = value;
		} else if (strcmp(key, "backing_fmt") == 0) {
			args->backing_format = value;
		} else {
			bool known = false;

			for (const char *const *o = drv->create_options;
			     o && *o && !known; o++)
				known = strcmp(*o, key) == 0;
			if (!known)
				return img_error_buf(
					errbuf, errlen, -EINVAL,
					"unknown option '%s' for format %s",
					key, drv->name);
			if (args->nopts >=
			    (int)(sizeof(args->opts) / sizeof(args->opts[0])))
				return img_error_buf(errbuf, errlen, -E2BIG,
						     "too many options");
			args->opts[args->nopts].key = key;
			args->opts[args->nopts].value = value;
			args->nopts++;
		}
	}
	return 0;
}

int img_create(const char *path, const struct img_create_options *opts,
	       char *errbuf, size_t errlen)
{
	struct img_create_args args = { 0 };
	const struct img_driver *drv;
	char ebuf[IMG_ERRMSG_MAX] = "";
	char *optcopy = NULL, *dir = NULL, *parent_path = NULL;
	struct img *parent = NULL;
	bool existed = true;
	const char *fmt;
	struct stat st;
	size_t plen;
	int r;

	if (!path || !*path)
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "no image file name given");
	fmt = opts && opts->format ? opts->format : "raw";
	drv = img_driver_find(fmt);
	if (!drv)
		return unknown_format(errbuf, errlen, NULL, fmt);
	if (!drv->create)
		return img_error_buf(errbuf, errlen, -ENOTSUP,
				     "%s: format %s cannot create images", path,
				     drv->name);
	args.path = path;
	if (opts) {
		args.size = opts->size;
		args.subformat = opts->subformat;
		args.cluster_size = opts->cluster_size;
		args.backing_file = opts->backing_file;
		args.backing_format = opts->backing_format;
		args.excl = opts->flags & IMG_CREATE_EXCL;
		args.preallocate = opts->flags & IMG_CREATE_PREALLOCATE;
		if (opts->options) {
			optcopy = strdup(opts->options);
			if (!optcopy)
				return img_error_buf(errbuf, errlen, -ENOMEM,
						     "out of memory");
			r = parse_create_options(optcopy, drv, &args, ebuf,
						 sizeof(ebuf));
			if (r < 0)
				goto fail;
		}
	}
	if (args.backing_file && *args.backing_file) {
		struct img_open_options po = { .format = args.backing_format,
					       .flags = IMG_OPEN_RDONLY };

		dir = path_dirname(path);
		parent_path = dir ? path_resolve(dir, args.backing_file) : NULL;
		if (!parent_path) {
			r = img_error_buf(ebuf, sizeof(ebuf), -ENOMEM,
					  "out of memory");
			goto fail;
		}
		r = img_open(&parent, parent_path, &po, ebuf, sizeof(ebuf));
		if (r < 0) {
			char pmsg[IMG_ERRMSG_MAX];

			snprintf(pmsg, sizeof(pmsg), "%s", ebuf);
			img_error_buf(ebuf, sizeof(ebuf), r,
				      "cannot open backing file: %s", pmsg);
			goto fail;
		}
		if (args.size == 0)
			args.size = parent->size;
		if (!args.backing_format)
			args.backing_format = parent->drv->name;
		args.backing = parent;
	} else {
		args.backing_file = NULL;
	}
	ebuf[0] = '\0';
	existed = img_name_is_local(path) ? lstat(path, &st) == 0 : false;
	r = drv->create(&args, ebuf, sizeof(ebuf));
	if (r < 0 && !ebuf[0])
		snprintf(ebuf, sizeof(ebuf), "cannot create %s image: %s",
			 drv->name, strerror(-r));
	/* A failed create leaves no half-made image behind (a file that was
	 * there before is the caller's and stays). */
	if (r < 0 && !existed && r != -EEXIST)
		img_file_remove_name(path, NULL, 0);
fail:
	if (r < 0) {
		plen = strlen(path);
		if (strncmp(ebuf, path, plen) == 0 && ebuf[plen] == ':')
			img_error_buf(errbuf, errlen, r, "%s", ebuf);
		else
			img_error_buf(errbuf, errlen, r, "%s: %s", path, ebuf);
	}
	if (parent)
		img_close(parent);
	free(parent_path);
	free(dir);
	free(optcopy);
	return r;
}
