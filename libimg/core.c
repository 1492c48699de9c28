/* SPDX-License-Identifier: MIT */
/*
 * The libimg core: errors, the handle and its accessors, resize, check,
 * backing changes, internal snapshots and info.  Opening and chain
 * discovery are in open.c, the request path in io.c, create in create.c.
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

/* ---- errors --------------------------------------------------------------*/

/* Threads share handles (the NBD server, the VMM's queues): each thread
 * keeps the message of its own last failure, and img_errmsg hands out
 * that, or a copy of the handle's latest, never the handle's buffer that
 * another thread may be rewriting. */
static __thread struct {
	const struct img *img;
	char msg[IMG_ERRMSG_MAX];
} thread_error;

void img_set_errmsg(struct img *img, const char *msg)
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
		img_set_errmsg(img, msg);
	else {
		/* Long messages are cut: the point is one readable line. */
		if (snprintf(full, sizeof(full), "%s: %s", img->path, msg) < 0)
			full[0] = '\0';
		img_set_errmsg(img, full);
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
int img_io_failed(struct img *img, unsigned seq, int r, const char *what,
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

unsigned img_op_begin(struct img *img)
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

char *img_path_dirname(const char *path)
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
char *img_path_resolve(const char *dir, const char *path)
{
	char *out;

	if (path[0] == '/' || strcmp(dir, ".") == 0 || !img_name_is_local(path))
		return strdup(path);
	if (asprintf(&out, "%s/%s", dir, path) < 0)
		return NULL;
	return out;
}

struct img *img_handle_alloc(const char *path, unsigned flags)
{
	struct img *img = calloc(1, sizeof(*img));
	pthread_rwlockattr_t attr;

	if (!img)
		return NULL;
	img->path = strdup(path);
	img->dir = img_path_dirname(path);
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

void img_handle_free(struct img *img)
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

void img_lock_shared(struct img *img)
{
	if (img->shared_reads)
		pthread_rwlock_rdlock(&img->lock);
	else
		pthread_rwlock_wrlock(&img->lock);
}

void img_lock_exclusive(struct img *img)
{
	pthread_rwlock_wrlock(&img->lock);
}

/* Writes and flushes: shared where the driver takes them in parallel
 * (see Locking in driver.h), except a read-modify-write of edges. */
void img_lock_for_write(struct img *img, bool aligned)
{
	if (img->parallel_rw && img->shared_reads && aligned)
		pthread_rwlock_rdlock(&img->lock);
	else
		pthread_rwlock_wrlock(&img->lock);
}

void img_unlock(struct img *img)
{
	pthread_rwlock_unlock(&img->lock);
}

/* ---- resize, check, backing ----------------------------------------------*/

int img_resize(struct img *img, uint64_t new_size, unsigned flags)
{
	char a[32], b[32];
	uint64_t old;
	unsigned seq;
	int r;

	r = img_check_writable(img);
	if (r < 0)
		return r;
	if (!img->byte_aligned && new_size % SECTOR)
		return img_error(img, -EINVAL,
				 "%s images must be a multiple of %u bytes",
				 img->drv->name, SECTOR);
	if (!img->drv->resize)
		return img_error(img, -ENOTSUP, "%s images cannot be resized",
				 img->drv->name);
	seq = img_op_begin(img);
	img_lock_exclusive(img);
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

		r = img_write_zeroes_locked(img, old, end - old, 0);
	}
	img_unlock(img);
	if (r < 0)
		return img_io_failed(img, seq, r, "resize", new_size, 0);
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
		r = img_check_writable(img);
		if (r < 0)
			return r;
	}
	seq = img_op_begin(img);
	img_lock_exclusive(img);
	r = img->drv->check(img, res, fix);
	img_unlock(img);
	if (r < 0)
		return img_io_failed(img, seq, r, "check", 0, 0);
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
		r = img_check_writable(img);
		if (r < 0)
			return r;
	} else if (img->flags & IMG_OPEN_RDWR) {
		return img_error(img, -EINVAL,
				 "a snapshot is loaded into read-only handles "
				 "only");
	}
	seq = img_op_begin(img);
	img_lock_exclusive(img);
	r = op(img, name);
	img_unlock(img);
	if (r < 0)
		return img_io_failed(img, seq, r, what, 0, 0);
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
	img_lock_exclusive(img);
	r = img->drv->snapshot_list(img, list, count);
	img_unlock(img);
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
		full = img_path_resolve(img->dir, backing_file);
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

	r = img_check_writable(img);
	if (r < 0)
		return r;
	if (!img->drv->set_backing)
		return img_error(img, -ENOTSUP,
				 "%s images cannot record a backing file",
				 img->drv->name);
	seq = img_op_begin(img);
	img_lock_exclusive(img);
	r = img->drv->set_backing(img, backing_file, backing_format, parent);
	if (r == 0)
		r = remember_new_backing(img, backing_file, backing_format);
	img_unlock(img);
	if (r < 0)
		return img_io_failed(img, seq, r, "set backing file", 0, 0);
	return 0;
}

/* ---- info ----------------------------------------------------------------*/

/* What the store holds for one file of the image; false when its backend
 * cannot tell. */
static bool allocated_bytes(const char *path, uint64_t *bytes)
{
	return img_file_allocated_name(path, bytes) == 0;
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
		seq = img_op_begin(img);
		img_lock_shared(img);
		r = img->drv->get_info(img, info);
		img_unlock(img);
		if (r < 0) {
			img_info_free(info);
			return img_io_failed(img, seq, r, "get info", 0, 0);
		}
	}
	if (!info->backing_format[0] && img->backing)
		snprintf(info->backing_format, sizeof(info->backing_format),
			 "%s", img->backing->drv->name);
	if (info->nfiles <= 0) {
		info->actual_size_unknown =
			!allocated_bytes(img->path, &info->actual_size);
	} else {
		info->actual_size = 0;
		for (int i = 0; i < info->nfiles; i++) {
			uint64_t bytes;

			if (!allocated_bytes(info->files[i], &bytes))
				info->actual_size_unknown = true;
			info->actual_size += bytes;
		}
	}
	if (info->actual_size_unknown)
		info->actual_size = 0;
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
