/* SPDX-License-Identifier: MIT */
/*
 * qcow2 compressed clusters: zlib (raw deflate, 4 KiB window, as the
 * specification's compression type 0) read and written, zstd read.
 */
#include "qcow2_priv.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

static int inflate_cluster(const uint8_t *in, size_t in_len, uint8_t *out,
			   size_t out_len)
{
	z_stream z;
	int ret;

	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, -12) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)in_len;
	z.next_out = out;
	z.avail_out = (uInt)out_len;
	ret = inflate(&z, Z_FINISH);
	/* The stored length is rounded up to sectors: trailing bytes past
	 * the stream's end are expected, a short output is not. */
	if ((ret != Z_STREAM_END && ret != Z_BUF_ERROR && ret != Z_OK) ||
	    z.avail_out) {
		inflateEnd(&z);
		return -EIO;
	}
	inflateEnd(&z);
	return 0;
}

static int zstd_cluster(const uint8_t *in, size_t in_len, uint8_t *out,
			size_t out_len)
{
	ZSTD_DStream *d = ZSTD_createDStream();
	ZSTD_inBuffer ib = { in, in_len, 0 };
	ZSTD_outBuffer ob = { out, out_len, 0 };
	int ret = 0;

	if (!d)
		return -ENOMEM;
	ZSTD_initDStream(d);
	/* The stream may be followed by padding: stop at a full cluster. */
	while (ob.pos < ob.size) {
		size_t r = ZSTD_decompressStream(d, &ob, &ib);

		if (ZSTD_isError(r)) {
			ret = -EIO;
			break;
		}
		if (r == 0 || ib.pos == ib.size) {
			if (ob.pos < ob.size)
				ret = -EIO;
			break;
		}
	}
	ZSTD_freeDStream(d);
	return ret;
}

int qcow2_decompress(const struct qcow2_state *s, const uint8_t *in,
		     size_t in_len, uint8_t *out, size_t out_len)
{
	if (s->h.compression_type == QCOW2_COMPRESSION_ZSTD)
		return zstd_cluster(in, in_len, out, out_len);
	return inflate_cluster(in, in_len, out, out_len);
}

int qcow2_compress(const uint8_t *in, size_t in_len, uint8_t *out,
		   size_t out_cap, size_t *out_len)
{
	z_stream z;
	int ret;

	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)in_len;
	z.next_out = out;
	z.avail_out = (uInt)out_cap;
	ret = deflate(&z, Z_FINISH);
	*out_len = out_cap - z.avail_out;
	deflateEnd(&z);
	/* Not smaller than the input: store the cluster uncompressed. */
	return ret == Z_STREAM_END ? 0 : -ENOSPC;
}

/* ---- compressed writer (IMG_OPEN_COMPRESS) ---------------------------- */

#define QCOW2_COMPRESS_BATCH 128
#define QCOW2_COMPRESS_MAX_THREADS 16

struct compress_batch {
	const uint8_t *in; /* n clusters */
	uint8_t *out;	   /* n clusters */
	size_t *out_len;
	int *ret;
	int n;
	unsigned cluster_size;
	int next; /* next job, taken atomically */
};

static void *compress_worker(void *arg)
{
	struct compress_batch *b = arg;
	bool ready = false;
	z_stream z;

	/* One deflate state per thread, reset between clusters. */
	memset(&z, 0, sizeof(z));
	for (;;) {
		int i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
		int zr;

		if (i >= b->n)
			break;
		if (!ready) {
			if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
					 -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
				b->ret[i] = -ENOSPC; /* stored as it is */
				continue;
			}
			ready = true;
		} else {
			deflateReset(&z);
		}
		z.next_in = (Bytef *)(b->in + (size_t)i * b->cluster_size);
		z.avail_in = b->cluster_size;
		z.next_out = b->out + (size_t)i * b->cluster_size;
		z.avail_out = b->cluster_size;
		zr = deflate(&z, Z_FINISH);
		b->out_len[i] = b->cluster_size - z.avail_out;
		/* Not worth it unless it saves a sector. */
		b->ret[i] = zr == Z_STREAM_END && b->out_len[i] + 512 <=
							  b->cluster_size
				    ? 0
				    : -ENOSPC;
	}
	if (ready)
		deflateEnd(&z);
	return NULL;
}

/* Deflate a batch on every CPU: the calling thread and nthreads - 1
 * helpers take clusters from a shared counter. */
static void compress_run(struct compress_batch *b, int nthreads)
{
	pthread_t tids[QCOW2_COMPRESS_MAX_THREADS];
	int started = 0;

	if (nthreads > b->n)
		nthreads = b->n;
	for (int i = 1; i < nthreads; i++) {
		if (pthread_create(&tids[started], NULL, compress_worker, b))
			break;
		started++;
	}
	compress_worker(b);
	for (int i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
}

/* Is the cluster at virtual pos unallocated (a candidate)? */
static int cluster_fresh(struct img *img, struct qcow2_state *s, uint64_t pos,
			 bool *fresh)
{
	uint64_t vc = pos >> s->cluster_bits;
	uint32_t l1i = (uint32_t)(vc / s->l2_entries);
	uint32_t l2i = (uint32_t)(vc % s->l2_entries);
	uint64_t *t;
	int ret = qcow2_l2_load(img, s, l1i, &t);

	if (ret < 0)
		return ret;
	*fresh = !t || (!t[l2i * s->l2_words] &&
			(s->l2_words == 1 || !t[l2i * 2 + 1]));
	return 0;
}

/* Room for need bytes at s->cpos, extending the packed area. */
static int compressed_room(struct img *img, struct qcow2_state *s,
			   uint64_t need)
{
	uint64_t cs = s->cluster_size, avail = s->cend - s->cpos, first, n;
	int ret;

	if (avail >= need)
		return 0;
	if (avail) {
		n = (need - avail + cs - 1) / cs;
		ret = qcow2_alloc_clusters(img, s, n, &first);
		if (ret < 0)
			return ret;
		if (first * cs == s->cend) {
			s->cend += n * cs;
			return 0;
		}
		for (uint64_t i = 0; i < n; i++)
			qcow2_ref_set(img, s, first + i, 0);
	}
	n = (need + cs - 1) / cs;
	ret = qcow2_alloc_clusters(img, s, n, &first);
	if (ret < 0)
		return ret;
	s->cpos = first * cs;
	s->cend = s->cpos + n * cs;
	return 0;
}

/* Claim [s->cpos, +need) for one compressed cluster: each host cluster it
 * touches counts one more reference (fresh ones have theirs already). */
static int compressed_claim(struct img *img, struct qcow2_state *s,
			    uint64_t need, uint64_t *host)
{
	uint64_t a = s->cpos >> s->cluster_bits;
	uint64_t b = (s->cpos + need - 1) >> s->cluster_bits;
	int ret = compressed_room(img, s, need);

	if (ret < 0)
		return ret;
	a = s->cpos >> s->cluster_bits;
	b = (s->cpos + need - 1) >> s->cluster_bits;
	for (uint64_t k = a; k <= b; k++) {
		if (k == s->clast) {
			ret = qcow2_ref_set(img, s, k, qcow2_ref_get(s, k) + 1);
			if (ret < 0)
				return ret;
		}
		s->clast = k;
	}
	*host = s->cpos;
	s->cpos += need;
	return 0;
}

static int write_run(struct img *img, struct qcow2_state *s, const uint8_t *buf,
		     uint64_t len, uint64_t host)
{
	int ret;

	if (!len)
		return 0;
	ret = img_file_pwrite(&s->file, buf, len, host);
	if (ret < 0)
		return img_error(img, ret, "cannot write compressed data: %s",
				 strerror(-ret));
	s->data_unsynced = true;
	return 0;
}

/* Store n whole clusters from virtual pos (data in b->in) compressed. */
static int store_batch(struct img *img, struct qcow2_state *s, uint64_t pos,
		       struct compress_batch *b, uint8_t *run)
{
	uint64_t cs = s->cluster_size, run_host = 0, run_len = 0;
	unsigned x = 62 - (s->cluster_bits - 8);
	int ret;

	b->next = 0;
	compress_run(b, s->compress_threads);
	for (int i = 0; i < b->n; i++) {
		uint64_t vpos = pos + (uint64_t)i * cs;
		uint64_t vc = vpos >> s->cluster_bits;
		uint32_t l1i = (uint32_t)(vc / s->l2_entries);
		uint32_t l2i = (uint32_t)(vc % s->l2_entries);
		uint64_t need, host, *t;

		if (b->ret[i] < 0) {
			/* Incompressible: stored as it is. */
			uint64_t n = cs;
			struct iovec v;

			if (vpos + n > img_size(img))
				n = img_size(img) - vpos;
			v.iov_base = (void *)(b->in + (size_t)i * cs);
			v.iov_len = (size_t)n;
			ret = qcow2_write_plain(img, vpos, &v, 1, (size_t)n);
			if (ret < 0)
				return ret;
			continue;
		}
		need = (b->out_len[i] + 511) & ~(uint64_t)511;
		ret = qcow2_l2_for_write(img, s, l1i, &t);
		if (ret >= 0)
			ret = compressed_claim(img, s, need, &host);
		if (ret < 0)
			return ret;
		if (run_len && run_host + run_len != host) {
			ret = write_run(img, s, run, run_len, run_host);
			if (ret < 0)
				return ret;
			run_len = 0;
		}
		if (!run_len)
			run_host = host;
		memcpy(run + run_len, b->out + (size_t)i * cs, b->out_len[i]);
		memset(run + run_len + b->out_len[i], 0, need - b->out_len[i]);
		run_len += need;
		ret = qcow2_entry_release(img, s, t[l2i * s->l2_words]);
		if (ret < 0)
			return ret;
		t[l2i * s->l2_words] = QCOW2_OFLAG_COMPRESSED |
				       ((need / 512 - 1) << x) | host;
		if (s->l2_words == 2)
			t[l2i * 2 + 1] = 0;
		s->l2_dirty[l1i] = 1;
	}
	return write_run(img, s, run, run_len, run_host);
}

/* Compress and store n clusters from virtual pos, their data in in[]
 * (n * cluster_size bytes, zero-padded past the disk's end). */
static int store_clusters(struct img *img, struct qcow2_state *s, uint64_t pos,
			  const uint8_t *in, int n)
{
	uint64_t cs = s->cluster_size;
	struct compress_batch b = { 0 };
	uint8_t *run;
	int ret;

	if (!s->compress_threads) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);

		s->compress_threads = c < 1 ? 1
				      : c > QCOW2_COMPRESS_MAX_THREADS
					      ? QCOW2_COMPRESS_MAX_THREADS
					      : (int)c;
	}
	b.in = in;
	b.n = n;
	b.cluster_size = (unsigned)cs;
	b.out = malloc((size_t)n * cs);
	b.out_len = calloc((size_t)n, sizeof(*b.out_len));
	b.ret = calloc((size_t)n, sizeof(*b.ret));
	run = malloc((size_t)n * (cs + 512));
	if (!b.out || !b.out_len || !b.ret || !run)
		ret = img_error(img, -ENOMEM, "out of memory");
	else
		ret = store_batch(img, s, pos, &b, run);
	free(b.out);
	free(b.out_len);
	free(b.ret);
	free(run);
	return ret;
}

int qcow2_compress_pending_store(struct img *img, struct qcow2_state *s)
{
	int ret;

	if (s->pend_vc == UINT64_MAX)
		return 0;
	ret = store_clusters(img, s, s->pend_vc << s->cluster_bits, s->pend_buf,
			     1);
	s->pend_vc = UINT64_MAX;
	return ret;
}

void qcow2_compress_pending_overlay(struct qcow2_state *s, uint64_t off,
				    const struct iovec *iov, int iovcnt,
				    size_t len)
{
	uint64_t a = s->pend_vc << s->cluster_bits, b = a + s->cluster_size;
	uint64_t lo = off > a ? off : a, hi = off + len < b ? off + len : b;

	if (s->pend_vc == UINT64_MAX || lo >= hi)
		return;
	img_iov_from_buf(iov, iovcnt, lo - off, s->pend_buf + (lo - a),
			 hi - lo);
}

/* A write into part of a fresh cluster: gathered in the pending-cluster
 * buffer (convert writes in ascending order, skipping zero runs), which
 * is compressed once the writes have moved past it. */
static int write_partial(struct img *img, struct qcow2_state *s, uint64_t pos,
			 const struct iovec *iov, int iovcnt, size_t done,
			 uint64_t n)
{
	uint64_t vc = pos >> s->cluster_bits, cs = s->cluster_size;
	uint64_t cstart = vc << s->cluster_bits;
	uint64_t cstop = cstart + cs < img_size(img) ? cstart + cs
						     : img_size(img);
	int ret;

	if (s->pend_vc != vc) {
		ret = qcow2_compress_pending_store(img, s);
		if (ret < 0)
			return ret;
		if (!s->pend_buf) {
			s->pend_buf = malloc(cs);
			if (!s->pend_buf)
				return img_error(img, -ENOMEM, "out of memory");
		}
		memset(s->pend_buf, 0, cs);
		/* What the cluster reads as now: zeros or the parent. */
		{
			struct iovec v = { s->pend_buf,
					   (size_t)(cstop - cstart) };

			ret = img_read_backing(img, cstart, &v, 1,
					       (size_t)(cstop - cstart));
			if (ret < 0)
				return ret;
		}
		s->pend_vc = vc;
	}
	img_iov_to_buf(iov, iovcnt, done, s->pend_buf + (pos - cstart), n);
	if (pos + n >= cstop)
		return qcow2_compress_pending_store(img, s);
	return 0;
}

int qcow2_write_compressed(struct img *img, struct qcow2_state *s, uint64_t off,
			   const struct iovec *iov, int iovcnt, size_t len)
{
	uint64_t cs = s->cluster_size, end = off + len, size = img_size(img);
	uint8_t *in = NULL;
	size_t done = 0;
	int ret = 0;

	while (done < len) {
		uint64_t pos = off + done, batch_pos = pos;
		uint64_t vc = pos >> s->cluster_bits;
		uint64_t cstart = vc << s->cluster_bits;
		uint64_t cstop = cstart + cs < size ? cstart + cs : size;
		uint64_t n = (cstop < end ? cstop : end) - pos;
		bool fresh = false;
		int count = 0;

		if (vc != s->pend_vc) {
			ret = cluster_fresh(img, s, pos, &fresh);
			if (ret < 0)
				goto out;
		}
		if (vc == s->pend_vc ||
		    (fresh && (pos != cstart || end < cstop))) {
			ret = write_partial(img, s, pos, iov, iovcnt, done, n);
			if (ret < 0)
				goto out;
			done += n;
			continue;
		}
		if (!fresh) {
			/* Already stored: the plain path. */
			struct iovec *part =
				malloc(sizeof(*part) * (size_t)iovcnt);
			int k;

			if (!part) {
				ret = img_error(img, -ENOMEM, "out of memory");
				goto out;
			}
			k = img_iov_slice(iov, iovcnt, done, n, part, iovcnt);
			ret = k < 0 ? k
				    : qcow2_write_plain(img, pos, part, k,
							(size_t)n);
			free(part);
			if (ret < 0)
				goto out;
			done += n;
			continue;
		}
		/* A run of whole fresh clusters, compressed together. */
		if (!in) {
			in = malloc(QCOW2_COMPRESS_BATCH * cs);
			if (!in) {
				ret = img_error(img, -ENOMEM, "out of memory");
				goto out;
			}
		}
		ret = qcow2_compress_pending_store(img, s);
		if (ret < 0)
			goto out;
		while (count < QCOW2_COMPRESS_BATCH && done < len) {
			uint8_t *dst = in + (size_t)count * cs;

			pos = off + done;
			cstop = pos + cs < size ? pos + cs : size;
			if (end < cstop)
				break;
			if (count) {
				ret = cluster_fresh(img, s, pos, &fresh);
				if (ret < 0)
					goto out;
				if (!fresh)
					break;
			}
			n = cstop - pos;
			img_iov_to_buf(iov, iovcnt, done, dst, n);
			if (n < cs)
				memset(dst + n, 0, cs - n);
			count++;
			done += n;
		}
		ret = store_clusters(img, s, batch_pos, in, count);
		if (ret < 0)
			goto out;
	}
out:
	free(in);
	return ret;
}
