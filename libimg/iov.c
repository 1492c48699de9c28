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

void img_iov_memset(const struct iovec *iov, int iovcnt, size_t off, int c,
		    size_t len)
{
	for (int i = 0; i < iovcnt && len; i++) {
		size_t n;

		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		n = iov[i].iov_len - off;
		if (n > len)
			n = len;
		memset((char *)iov[i].iov_base + off, c, n);
		len -= n;
		off = 0;
	}
}

size_t img_iov_to_buf(const struct iovec *iov, int iovcnt, size_t off,
		      void *buf, size_t len)
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
		memcpy((char *)buf + done, (char *)iov[i].iov_base + off, n);
		done += n;
		off = 0;
	}
	return done;
}

size_t img_iov_from_buf(const struct iovec *iov, int iovcnt, size_t off,
			const void *buf, size_t len)
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
		memcpy((char *)iov[i].iov_base + off, (const char *)buf + done,
		       n);
		done += n;
		off = 0;
	}
	return done;
}

int img_iov_slice(const struct iovec *iov, int iovcnt, size_t off, size_t len,
		  struct iovec *out, int outmax)
{
	int n = 0;

	for (int i = 0; i < iovcnt && len; i++) {
		size_t take;

		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		if (n >= outmax)
			return -EINVAL;
		take = iov[i].iov_len - off;
		if (take > len)
			take = len;
		out[n].iov_base = (char *)iov[i].iov_base + off;
		out[n].iov_len = take;
		n++;
		len -= take;
		off = 0;
	}
	if (len)
		return -EINVAL; /* the iovec is shorter than off + len */
	return n;
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
	for (int i = 0; i < iovcnt && len; i++) {
		size_t n = iov[i].iov_len < len ? iov[i].iov_len : len;

		if (!img_buf_is_zero(iov[i].iov_base, n))
			return false;
		len -= n;
	}
	return true;
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

bool img_iov_range_is_zero(const struct iovec *iov, int iovcnt, size_t off,
			   size_t len)
{
	for (int i = 0; i < iovcnt && len; i++) {
		size_t n;

		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		n = iov[i].iov_len - off;
		if (n > len)
			n = len;
		if (!img_buf_is_zero((const char *)iov[i].iov_base + off, n))
			return false;
		len -= n;
		off = 0;
	}
	return true;
}
