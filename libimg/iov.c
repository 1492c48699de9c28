// SPDX-License-Identifier: MIT
/*
 * The iovec toolkit: the one place that slices, gathers, scatters and
 * zero-checks the iovecs of requests, for the core, the drivers, the NBD
 * server and the VMM's devices (declared in img.h).
 */
#include "img.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

size_t img_iov_total(const struct iovec *iov, int iovcnt)
{
	size_t total = 0;

	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	return total;
}

/*
 * Every range operation below is a walk over the pieces of [off, off+len)
 * in the iovec: fn gets each piece (its address, its length, and the
 * bytes of the range before it) and returns false to stop.  Returns the
 * bytes walked, less than len when the iovec is shorter or fn stopped.
 */
typedef bool iov_piece_fn(void *piece, size_t n, size_t before, void *arg);

static size_t iov_walk(const struct iovec *iov, int iovcnt, size_t off,
		       size_t len, iov_piece_fn *fn, void *arg)
{
	size_t done = 0;

	for (int i = 0; i < iovcnt && done < len; i++) {
		size_t n;

		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		n = iov[i].iov_len - off;
		if (n > len - done)
			n = len - done;
		if (!fn((char *)iov[i].iov_base + off, n, done, arg))
			return done;
		done += n;
		off = 0;
	}
	return done;
}

static bool piece_fill(void *piece, size_t n, size_t before, void *arg)
{
	(void)before;
	memset(piece, *(const int *)arg, n);
	return true;
}

static bool piece_gather(void *piece, size_t n, size_t before, void *arg)
{
	memcpy((char *)arg + before, piece, n);
	return true;
}

static bool piece_scatter(void *piece, size_t n, size_t before, void *arg)
{
	memcpy(piece, (const char *)arg + before, n);
	return true;
}

static bool piece_is_zero(void *piece, size_t n, size_t before, void *arg)
{
	(void)before;
	(void)arg;
	return img_buf_is_zero(piece, n);
}

struct slice_out {
	struct iovec *out;
	int count;
	int max;
};

static bool piece_append(void *piece, size_t n, size_t before, void *arg)
{
	struct slice_out *so = arg;

	(void)before;
	if (so->count >= so->max)
		return false;
	so->out[so->count].iov_base = piece;
	so->out[so->count].iov_len = n;
	so->count++;
	return true;
}

void img_iov_memset(const struct iovec *iov, int iovcnt, size_t off, int c,
		    size_t len)
{
	iov_walk(iov, iovcnt, off, len, piece_fill, &c);
}

size_t img_iov_to_buf(const struct iovec *iov, int iovcnt, size_t off,
		      void *buf, size_t len)
{
	return iov_walk(iov, iovcnt, off, len, piece_gather, buf);
}

size_t img_iov_from_buf(const struct iovec *iov, int iovcnt, size_t off,
			const void *buf, size_t len)
{
	return iov_walk(iov, iovcnt, off, len, piece_scatter, (void *)buf);
}

int img_iov_slice(const struct iovec *iov, int iovcnt, size_t off, size_t len,
		  struct iovec *out, int outmax)
{
	struct slice_out so = { .out = out, .max = outmax };

	/* short: the iovec ends before off + len, or out is too small */
	if (iov_walk(iov, iovcnt, off, len, piece_append, &so) < len)
		return -EINVAL;
	return so.count;
}

bool img_buf_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t head = len < 16 ? len : 16;

	for (size_t i = 0; i < head; i++)
		if (p[i])
			return false;
	if (len <= 16)
		return true;
	/* The first 16 bytes are zero; the rest is zero iff every byte
	 * equals the one 16 bytes before it.  memcmp is vectorised. */
	return memcmp(p, p + 16, len - 16) == 0;
}

bool img_iov_is_zero(const struct iovec *iov, int iovcnt, size_t len)
{
	return img_iov_range_is_zero(iov, iovcnt, 0, len);
}

bool img_iov_range_is_zero(const struct iovec *iov, int iovcnt, size_t off,
			   size_t len)
{
	/* past the iovec's end counts as zero, as before */
	size_t total = img_iov_total(iov, iovcnt);
	size_t want = off >= total ? 0
				   : (len < total - off ? len : total - off);

	return iov_walk(iov, iovcnt, off, len, piece_is_zero, NULL) == want;
}

int img_iov_view_init(struct img_iov_view *v, int iovcnt)
{
	/* one more entry than the iovec: a leading buffer */
	v->cap = iovcnt + 1;
	v->cnt = 0;
	if (v->cap <= IMG_IOV_VIEW_STACK) {
		v->cap = IMG_IOV_VIEW_STACK;
		v->iov = v->stack;
		return 0;
	}
	v->iov = malloc(sizeof(*v->iov) * (size_t)v->cap);
	return v->iov ? 0 : -ENOMEM;
}

int img_iov_view_set(struct img_iov_view *v, const void *lead, size_t lead_len,
		     const struct iovec *iov, int iovcnt, size_t off,
		     size_t len)
{
	int first = lead != NULL, n;

	if (lead) {
		v->iov[0].iov_base = (void *)lead;
		v->iov[0].iov_len = lead_len;
	}
	n = img_iov_slice(iov, iovcnt, off, len, v->iov + first,
			  v->cap - first);
	if (n < 0)
		return n;
	v->cnt = n + first;
	return 0;
}

int img_iov_view(struct img_iov_view *v, const struct iovec *iov, int iovcnt,
		 size_t off, size_t len)
{
	int r = img_iov_view_init(v, iovcnt);

	if (r == 0)
		r = img_iov_view_set(v, NULL, 0, iov, iovcnt, off, len);
	if (r < 0)
		img_iov_view_release(v);
	return r;
}

void img_iov_view_release(struct img_iov_view *v)
{
	if (v->iov != v->stack)
		free(v->iov);
	v->iov = v->stack;
	v->cnt = 0;
}
