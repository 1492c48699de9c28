/* SPDX-License-Identifier: MIT */
/*
 * The request path: range checks, locking (see Locking in driver.h),
 * sub-sector read-modify-write, zeroes, discard, flush, and block status
 * through the chain.
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

int img_check_writable(struct img *img)
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

	seq = img_op_begin(img);
	img_lock_shared(img);
	/* Checked under the lock: a resize may be changing the size. */
	r = check_range(img, "read", off, len);
	if (r == 0 && len)
		r = do_read(img, off, iov, iovcnt, len);
	img_unlock(img);
	if (r < 0)
		return img_io_failed(img, seq, r, "read", off, len);
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

	r = img_check_writable(img);
	if (r < 0)
		return r;
	seq = img_op_begin(img);
	img_lock_for_write(img, request_aligned(img, off, len));
	r = check_range(img, "write", off, len);
	if (r == 0 && len)
		r = do_write(img, off, iov, iovcnt, len);
	img_unlock(img);
	if (r < 0)
		return img_io_failed(img, seq, r, "write", off, len);
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
	seq = img_op_begin(parent);
	img_lock_shared(parent);
	r = do_read(parent, off, v.iov, v.cnt, n);
	img_unlock(parent);
	img_iov_view_release(&v);
	if (r < 0) {
		img_io_failed(parent, seq, r, "read", off, n);
		img_set_errmsg(img, parent->errmsg);
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
	seq = img_op_begin(img);
	img_lock_for_write(img, true);
	r = img->drv->flush(img);
	img_unlock(img);
	if (r < 0)
		return img_io_failed(img, seq, r, "flush", 0, 0);
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
int img_write_zeroes_locked(struct img *img, uint64_t off, uint64_t len,
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

	r = img_check_writable(img);
	if (r < 0)
		return r;
	seq = img_op_begin(img);
	img_lock_exclusive(img);
	r = check_range(img, "write zeroes", off, len);
	if (r == 0 && len)
		r = img_write_zeroes_locked(img, off, len, flags);
	img_unlock(img);
	if (r < 0)
		return img_io_failed(img, seq, r, "write zeroes", off, len);
	return 0;
}

int img_discard(struct img *img, uint64_t off, uint64_t len)
{
	uint64_t a = off, b = off + len;
	unsigned seq;
	int r;

	r = img_check_writable(img);
	if (r < 0)
		return r;
	if (!img->byte_aligned) {
		/* Advisory: only the whole sectors inside the range. */
		a = (off + SECTOR - 1) & ~(uint64_t)(SECTOR - 1);
		b &= ~(uint64_t)(SECTOR - 1);
	}
	seq = img_op_begin(img);
	img_lock_exclusive(img);
	r = check_range(img, "discard", off, len);
	if (r == 0 && a < b && img->drv->discard)
		r = img->drv->discard(img, a, b - a);
	img_unlock(img);
	if (not_supported(r))
		return 0;
	if (r < 0)
		return img_io_failed(img, seq, r, "discard", off, len);
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

	seq = img_op_begin(img);
	img_lock_shared(img);
	r = status_range(img, off, &len);
	if (r == 0)
		r = layer_status(img, off, len, ext);
	img_unlock(img);
	if (r < 0)
		return img_io_failed(img, seq, r, "block status", off, len);
	return 0;
}

int img_block_status(struct img *img, uint64_t off, uint64_t len,
		     struct img_extent *ext)
{
	struct img *layer = img;
	int depth = 0, r;

	for (;;) {
		struct img_extent e;
		unsigned seq = img_op_begin(layer);

		img_lock_shared(layer);
		r = layer == img ? status_range(img, off, &len) : 0;
		if (r == 0)
			r = layer_status(layer, off, len, &e);
		img_unlock(layer);
		if (r < 0) {
			img_io_failed(layer, seq, r, "block status", off, len);
			if (layer != img)
				img_set_errmsg(img, layer->errmsg);
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
