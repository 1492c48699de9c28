/* SPDX-License-Identifier: MIT */
/*
 * Work across the layers of a backing chain (img.h, "chains"): copying
 * what one layer holds into another image (commit, snapshot delete), and
 * naming and recording a parent in a child (snapshots, commit, rebase).
 */
#include "internal.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COPY_BUF_SIZE (4u << 20)

/* A failure on from, reported on to (where the caller looks). */
static int failed_on(struct img *from, struct img *to, int r)
{
	char msg[IMG_ERRMSG_MAX];

	snprintf(msg, sizeof(msg), "%s", img_errmsg(from));
	img_set_errmsg(to, msg);
	return r;
}

/* Copy [off, off+len), allocated in from's layer, into to. */
static int copy_range(struct img *from, struct img *to, uint64_t off,
		      uint64_t len, bool zero, uint8_t *buf)
{
	int r;

	if (zero)
		return img_write_zeroes(to, off, len, 0);
	while (len) {
		size_t n = len < COPY_BUF_SIZE ? len : COPY_BUF_SIZE;

		r = img_pread(from, buf, n, off);
		if (r < 0)
			return failed_on(from, to, r);
		r = img_pwrite(to, buf, n, off);
		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

/* The part of [pos, pos+len) where to has nothing of its own. */
static int copy_where_unallocated(struct img *from, struct img *to,
				  uint64_t pos, uint64_t len, bool zero,
				  uint8_t *buf)
{
	for (uint64_t sub = pos; sub < pos + len;) {
		struct img_extent te;
		uint64_t n;
		int r = img_block_status_layer(to, sub, pos + len - sub, &te);

		if (r < 0)
			return r;
		n = te.length < pos + len - sub ? te.length : pos + len - sub;
		if (!(te.flags & IMG_EXTENT_ALLOCATED)) {
			r = copy_range(from, to, sub, n, zero, buf);
			if (r < 0)
				return r;
		}
		sub += n;
	}
	return 0;
}

int img_copy_layer(struct img *from, struct img *to, unsigned flags)
{
	uint64_t size = img_size(from), pos = 0;
	uint8_t *buf = NULL;
	int r = 0;

	if (size > img_size(to))
		size = img_size(to);
	if (posix_memalign((void **)&buf, 4096, COPY_BUF_SIZE))
		return img_error(to, -ENOMEM, "out of memory");
	while (pos < size) {
		struct img_extent ext;
		uint64_t len;
		bool zero;

		r = img_block_status_layer(from, pos, size - pos, &ext);
		if (r < 0) {
			failed_on(from, to, r);
			break;
		}
		len = ext.length < size - pos ? ext.length : size - pos;
		zero = (ext.flags & IMG_EXTENT_ZERO) &&
		       !(ext.flags & IMG_EXTENT_DATA);
		if (!(ext.flags & IMG_EXTENT_ALLOCATED))
			r = 0;
		else if (flags & IMG_COPY_ONLY_UNALLOCATED)
			r = copy_where_unallocated(from, to, pos, len, zero,
						   buf);
		else
			r = copy_range(from, to, pos, len, zero, buf);
		if (r < 0)
			break;
		pos += len;
	}
	free(buf);
	return r;
}

char *img_parent_reference(const char *child, const char *parent)
{
	char child_real[PATH_MAX], parent_real[PATH_MAX], rel[PATH_MAX];
	int ups;

	if (!realpath(child, child_real) || !realpath(parent, parent_real))
		return NULL;
	ups = img_path_relative(dirname(child_real), parent_real, rel,
				sizeof(rel));
	if (ups < 0) {
		errno = -ups;
		return NULL;
	}
	/* more than two levels up: the absolute path reads better */
	return strdup(ups > 2 ? parent_real : rel);
}

int img_record_parent(const char *child_path, const char *child_format,
		      const char *parent_path, const char *parent_format,
		      const char *ref, char *errbuf, size_t errlen)
{
	struct img_open_options po = { .format = parent_format,
				       .flags = IMG_OPEN_RDONLY };
	struct img_open_options co = { .format = child_format,
				       .flags = IMG_OPEN_RDWR |
						IMG_OPEN_NO_BACKING };
	struct img *child = NULL, *parent = NULL;
	char *text;
	int r;

	text = ref ? strdup(ref)
		   : img_parent_reference(child_path, parent_path);
	if (!text) {
		r = errno ? -errno : -ENOMEM;
		return img_error_buf(errbuf, errlen, r,
				     "%s: cannot name the parent %s: %s",
				     child_path, parent_path, strerror(-r));
	}
	r = img_open(&parent, parent_path, &po, errbuf, errlen);
	if (r == 0)
		r = img_open(&child, child_path, &co, errbuf, errlen);
	if (r < 0)
		goto out;
	r = img_set_backing(child, text, parent_format, parent);
	if (r < 0) {
		img_error_buf(errbuf, errlen, r, "%s", img_errmsg(child));
		goto out;
	}
	r = img_close(child);
	child = NULL;
	if (r < 0)
		img_error_buf(errbuf, errlen, r, "%s: flush failed: %s",
			      child_path, strerror(-r));
out:
	if (child)
		img_close(child);
	if (parent)
		img_close(parent);
	free(text);
	return r;
}
