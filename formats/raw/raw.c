/* SPDX-License-Identifier: MIT */
/*
 * Raw images: the virtual disk is the file (or block device) byte for byte.
 * Sparse files keep holes: block status comes from SEEK_DATA/SEEK_HOLE,
 * discard punches holes, and zeroing uses fallocate where it can.
 */
#include "driver.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct raw_state {
	struct img_file file; /* with IMG_OPEN_DIRECT, direct where aligned */
};

static int raw_probe(const uint8_t *head, size_t head_len, uint64_t file_size,
		     struct img_file *f)
{
	(void)head;
	(void)head_len;
	(void)file_size;
	(void)f;
	return 1; /* anything is a raw image, as a last resort */
}

static int raw_create(const struct img_create_args *args, char *errbuf,
		      size_t errlen)
{
	struct img_file f;
	uint64_t size;
	int r;

	if (args->backing_file)
		return img_error_buf(errbuf, errlen, -ENOTSUP,
				     "raw images cannot have a backing file");
	if (args->subformat)
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "raw images have no subformat '%s'",
				     args->subformat);
	r = img_file_create(&f, args->path, args->excl, errbuf, errlen);
	if (r < 0)
		return r;
	if (f.is_block_device) {
		/* The device's size is fixed: it only has to be big enough. */
		r = img_file_size(&f, &size);
		if (r == 0 && size < args->size)
			r = img_error_buf(errbuf, errlen, -ENOSPC,
					  "%s: device has %" PRIu64
					  " bytes, %" PRIu64 " requested",
					  args->path, size, args->size);
		goto out;
	}
	r = img_file_truncate(&f, args->size);
	if (r < 0) {
		img_error_buf(errbuf, errlen, r, "%s: cannot set size: %s",
			      args->path, strerror(-r));
		goto out;
	}
	if (args->preallocate && args->size) {
		/* fallocate where the file system has it, else real zeros
		 * (img_file_zero_range falls back to writing). */
		r = img_file_zero_range(&f, 0, args->size);
		if (r < 0) {
			img_error_buf(errbuf, errlen, r,
				      "%s: cannot preallocate: %s", args->path,
				      strerror(-r));
			goto out;
		}
	}
	r = img_file_sync(&f);
	if (r < 0)
		img_error_buf(errbuf, errlen, r, "%s: sync: %s", args->path,
			      strerror(-r));
out:
	img_file_close(&f);
	return r;
}

static int raw_open(struct img *img)
{
	struct raw_state *s = img_state(img);
	uint64_t size;
	int r;

	r = img_file_open(img, &s->file, img_filename(img),
			  img_open_flags(img) & IMG_OPEN_RDWR);
	if (r < 0)
		return r;
	r = img_file_size(&s->file, &size);
	if (r < 0) {
		img_file_close(&s->file);
		return img_error(img, r, "cannot get the size");
	}
	img_set_size(img, size);
	return 0;
}

static void raw_close(struct img *img)
{
	struct raw_state *s = img_state(img);

	img_file_close(&s->file);
}

static int raw_preadv(struct img *img, uint64_t off, const struct iovec *iov,
		      int iovcnt, size_t len)
{
	struct raw_state *s = img_state(img);

	(void)len;
	return img_file_preadv(&s->file, iov, iovcnt, off);
}

static int raw_pwritev(struct img *img, uint64_t off, const struct iovec *iov,
		       int iovcnt, size_t len)
{
	struct raw_state *s = img_state(img);

	(void)len;
	return img_file_pwritev(&s->file, iov, iovcnt, off);
}

static int raw_flush(struct img *img)
{
	struct raw_state *s = img_state(img);

	return img_file_sync(&s->file);
}

static int raw_write_zeroes(struct img *img, uint64_t off, uint64_t len,
			    unsigned flags)
{
	struct raw_state *s = img_state(img);

	if ((flags & IMG_ZERO_MAY_UNMAP) &&
	    img_file_punch_hole(&s->file, off, len) == 0)
		return 0;
	return img_file_zero_range(&s->file, off, len);
}

static int raw_discard(struct img *img, uint64_t off, uint64_t len)
{
	struct raw_state *s = img_state(img);
	int r = img_file_punch_hole(&s->file, off, len);

	return r == -EOPNOTSUPP ? 0 : r;
}

static int raw_block_status(struct img *img, uint64_t off, uint64_t len,
			    struct img_extent *ext)
{
	struct raw_state *s = img_state(img);
	uint64_t run;
	bool data;
	int r;

	r = img_file_extent(&s->file, off, len, &data, &run);
	if (r < 0)
		return r;
	ext->start = off;
	ext->length = run;
	if (data) {
		ext->flags = IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED;
		ext->depth = 0;
		ext->file_offset = (int64_t)off;
	} else {
		ext->flags = IMG_EXTENT_ZERO;
		ext->depth = -1;
		ext->file_offset = -1;
	}
	return 0;
}

static int raw_resize(struct img *img, uint64_t new_size, unsigned flags)
{
	struct raw_state *s = img_state(img);
	int r;

	(void)flags;
	if (s->file.is_block_device)
		return img_error(img, -ENOTSUP,
				 "a block device cannot be resized");
	r = img_file_truncate(&s->file, new_size);
	if (r < 0)
		return r;
	img_set_size(img, new_size);
	return 0;
}

static int raw_get_info(struct img *img, struct img_info *info)
{
	struct raw_state *s = img_state(img);

	if (s->file.is_block_device)
		img_info_add_bool(info, "block-device", true);
	return 0;
}

const struct img_driver img_driver_raw = {
	.name = "raw",
	.description = "raw disk image (sparse file or block device)",
	.flags = IMG_DRV_CONCURRENT_READS | IMG_DRV_BYTE_ALIGNED |
		 IMG_DRV_PARALLEL_RW,
	.state_size = sizeof(struct raw_state),
	.probe = raw_probe,
	.create = raw_create,
	.open = raw_open,
	.close = raw_close,
	.preadv = raw_preadv,
	.pwritev = raw_pwritev,
	.flush = raw_flush,
	.write_zeroes = raw_write_zeroes,
	.discard = raw_discard,
	.block_status = raw_block_status,
	.resize = raw_resize,
	.get_info = raw_get_info,
};
