/* SPDX-License-Identifier: MIT */
/*
 * Opening images: probing by content, and the backing chain (recorded
 * names, candidates, identity search, loop detection).
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

int img_unknown_format(char *errbuf, size_t errlen, const char *path,
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
		full = img_path_resolve(dir, de->d_name);
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
		char *up = img_path_resolve(img->dir, "..");

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
		img_set_errmsg(img, parent->errmsg);
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
		char *full = img_path_resolve(img->dir, c->path);

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
			img_set_errmsg(img, mismatch);
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
			return img_unknown_format(errbuf, errlen, path, format);
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
	img = img_handle_alloc(path, flags);
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
			img_handle_free(img);
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
		img_handle_free(img);
		return r;
	}
	if ((flags & IMG_OPEN_NO_BACKING) && img->ncandidates > 0) {
		/* Not opened, but info still shows where it would be. */
		img->backing_full =
			img_path_resolve(img->dir, img->candidates[0].path);
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
		img_handle_free(img);
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
	img_handle_free(img);
	return r;
}
