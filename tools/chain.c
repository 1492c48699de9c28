/* SPDX-License-Identifier: MIT */
/* Backing-chain helpers: see chain.h. */
#include "tools/chain.h"
#include "tools/cmdline.h"

#include "img.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CHAIN_COPY_BUF_SIZE (4u << 20)

int chain_length(struct img *img)
{
	int n = 0;

	for (; img; img = img_backing(img))
		n++;
	return n;
}

bool chain_same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Copy [off, off+len), allocated in from's layer, into to. */
static int chain_copy_range(struct img *from, struct img *to, uint64_t off,
			    uint64_t len, bool zero, uint8_t *buf)
{
	int ret;

	if (zero) {
		ret = img_write_zeroes(to, off, len, 0);
		if (ret < 0)
			cmdline_img_error(to, ret);
		return ret;
	}
	while (len) {
		size_t n = len < CHAIN_COPY_BUF_SIZE ? len
						     : CHAIN_COPY_BUF_SIZE;

		ret = img_pread(from, buf, n, off);
		if (ret < 0) {
			cmdline_img_error(from, ret);
			return ret;
		}
		ret = img_pwrite(to, buf, n, off);
		if (ret < 0) {
			cmdline_img_error(to, ret);
			return ret;
		}
		off += n;
		len -= n;
	}
	return 0;
}

int chain_copy_layer(struct img *from, struct img *to, bool only_unallocated)
{
	uint64_t size = img_size(from), pos = 0;
	uint8_t *buf = NULL;
	int ret = 0;

	if (size > img_size(to))
		size = img_size(to);
	if (posix_memalign((void **)&buf, 4096, CHAIN_COPY_BUF_SIZE)) {
		tool_error("out of memory");
		return -ENOMEM;
	}
	while (pos < size) {
		struct img_extent ext;
		uint64_t len;
		bool zero;

		ret = img_block_status_layer(from, pos, size - pos, &ext);
		if (ret < 0) {
			cmdline_img_error(from, ret);
			goto out;
		}
		len = ext.length < size - pos ? ext.length : size - pos;
		zero = (ext.flags & IMG_EXTENT_ZERO) &&
		       !(ext.flags & IMG_EXTENT_DATA);
		if (!(ext.flags & IMG_EXTENT_ALLOCATED)) {
			pos += len;
			continue;
		}
		if (!only_unallocated) {
			ret = chain_copy_range(from, to, pos, len, zero, buf);
			if (ret < 0)
				goto out;
			pos += len;
			continue;
		}
		/* Only where the target has nothing of its own. */
		for (uint64_t sub = pos; sub < pos + len;) {
			struct img_extent te;
			uint64_t n;

			ret = img_block_status_layer(to, sub, pos + len - sub,
						     &te);
			if (ret < 0) {
				cmdline_img_error(to, ret);
				goto out;
			}
			n = te.length < pos + len - sub ? te.length
							: pos + len - sub;
			if (!(te.flags & IMG_EXTENT_ALLOCATED)) {
				ret = chain_copy_range(from, to, sub, n, zero,
						       buf);
				if (ret < 0)
					goto out;
			}
			sub += n;
		}
		pos += len;
	}
out:
	free(buf);
	return ret;
}

char *chain_parent_reference(const char *child, const char *parent)
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

int chain_refresh_child(const char *child_path, const char *child_format,
			const char *parent_path, const char *parent_format,
			const char *given_ref)
{
	struct img *child = NULL, *parent = NULL;
	char *ref = NULL;
	int ret;

	ref = given_ref ? strdup(given_ref)
			: chain_parent_reference(child_path, parent_path);
	if (!ref) {
		ret = errno ? -errno : -ENOMEM;
		tool_error("%s: cannot name the parent %s: %s", child_path,
			   parent_path, strerror(-ret));
		return ret;
	}
	ret = tool_open(&parent, parent_path, parent_format, IMG_OPEN_RDONLY);
	if (ret < 0)
		goto out;
	ret = tool_open(&child, child_path, child_format,
			IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING);
	if (ret < 0)
		goto out;
	ret = img_set_backing(child, ref, parent_format, parent);
	if (ret < 0) {
		cmdline_img_error(child, ret);
		goto out;
	}
	ret = img_close(child);
	child = NULL;
	if (ret < 0)
		tool_error("%s: flush failed: %s", child_path, strerror(-ret));
out:
	if (child)
		img_close(child);
	if (parent)
		img_close(parent);
	free(ref);
	return ret;
}
