/* SPDX-License-Identifier: MIT */
/*
 * streamOptimized writer ("Virtual Disk Format 1.1", "Stream-Optimized
 * Compressed Sparse Extents"): the layout ESXi and OVF imports expect.
 *
 *   header (gdOffset = at end) | descriptor | grain markers + deflated
 *   grains, each grain table after its grains behind a GT marker |
 *   GD marker + grain directory | footer marker + footer | EOS marker
 *
 * Writes must come in ascending order (IMG_OPEN_SEQUENTIAL: convert).  All
 * zero grains are skipped.  Complete grains are collected in batches and
 * deflated by several threads at a fast level, then appended in order.
 *
 * Every flush writes a valid tail (the partial grain, the current grain
 * table, the directory, footer, end-of-stream) after the last complete
 * data and syncs; the next write continues from before that tail, so the
 * file is a readable stream after any flush.
 */
#include "vmdk_priv.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define STREAM_BATCH 64
#define STREAM_MAX_THREADS 8

struct stream_slot {
	uint64_t grain;
	uint8_t *data; /* grain_bytes */
	uint8_t *out;  /* marker + deflated data + padding */
	size_t out_cap;
	size_t out_len;
	int zret;
};

struct vmdk_stream_writer {
	struct vmdk_extent *e;
	uint64_t grain_bytes;
	uint64_t capacity_bytes;
	uint64_t min_off;  /* writes below this are out of order */
	uint64_t pos;	   /* sector for the next grain */
	int64_t cur_grain; /* grain being filled in slots[nslots], or -1 */
	struct stream_slot slots[STREAM_BATCH + 1];
	int nslots; /* complete grains waiting */
	uint32_t *gd;
	uint32_t *gt;
	int64_t cur_gt;
	bool gt_used;
	int nthreads;
	struct iovec iov[STREAM_BATCH];
};

static int slot_compress(struct vmdk_stream_writer *w, struct stream_slot *s)
{
	struct vmdk_grain_marker m;
	uLongf clen = s->out_cap - sizeof(m);

	s->zret = compress2(s->out + sizeof(m), &clen, s->data, w->grain_bytes,
			    Z_BEST_SPEED);
	if (s->zret != Z_OK)
		return -EIO;
	m.lba = IMG_LE64(s->grain * w->e->grain_sectors);
	m.size = IMG_LE32((uint32_t)clen);
	memcpy(s->out, &m, sizeof(m));
	s->out_len = (sizeof(m) + clen + VMDK_SECTOR - 1) &
		     ~(size_t)(VMDK_SECTOR - 1);
	memset(s->out + sizeof(m) + clen, 0, s->out_len - sizeof(m) - clen);
	return 0;
}

struct compress_job {
	struct vmdk_stream_writer *w;
	int first, step;
};

static void *compress_worker(void *arg)
{
	struct compress_job *job = arg;
	int i;

	for (i = job->first; i < job->w->nslots; i += job->step)
		slot_compress(job->w, &job->w->slots[i]);
	return NULL;
}

static int write_gt(struct img *img, struct vmdk_stream_writer *w)
{
	struct vmdk_extent *e = w->e;
	uint64_t gt_sectors = vmdk_gt_sectors(e->gtes_per_gt);
	size_t bytes = (1 + gt_sectors) * VMDK_SECTOR;
	uint8_t *buf;
	uint32_t *gt, i;
	int ret;

	if (!w->gt_used || w->cur_gt < 0)
		return 0;
	buf = calloc(1, bytes);
	if (!buf)
		return -ENOMEM;
	vmdk_meta_marker_init((struct vmdk_meta_marker *)buf, VMDK_MARKER_GT,
			      gt_sectors);
	gt = (uint32_t *)(buf + VMDK_SECTOR);
	for (i = 0; i < e->gtes_per_gt; i++)
		gt[i] = IMG_LE32(w->gt[i]);
	ret = img_file_pwrite(e->file, buf, bytes, w->pos * VMDK_SECTOR);
	free(buf);
	if (ret)
		return vmdk_io_error(img, ret, "%s: cannot write a grain table",
				     e->path);
	w->gd[w->cur_gt] = (uint32_t)(w->pos + 1);
	w->pos += 1 + gt_sectors;
	return 0;
}

/* Moves to grain table t, writing the finished one. */
static int switch_gt(struct img *img, struct vmdk_stream_writer *w, int64_t t)
{
	int ret;

	if (t == w->cur_gt)
		return 0;
	ret = write_gt(img, w);
	if (ret)
		return ret;
	memset(w->gt, 0, (size_t)w->e->gtes_per_gt * 4);
	w->gt_used = false;
	w->cur_gt = t;
	return 0;
}

static int write_iovs(struct img *img, struct vmdk_stream_writer *w, int n,
		      uint64_t sector)
{
	int ret;

	if (!n)
		return 0;
	ret = img_file_pwritev(w->e->file, w->iov, n, sector * VMDK_SECTOR);
	if (ret)
		return vmdk_io_error(img, ret, "%s: cannot write grains",
				     w->e->path);
	return 0;
}

/* Deflates slots [0, count) and appends them in order. */
static int emit_slots(struct img *img, struct vmdk_stream_writer *w, int count)
{
	pthread_t tids[STREAM_MAX_THREADS];
	struct compress_job jobs[STREAM_MAX_THREADS];
	int nthreads = w->nthreads < count ? w->nthreads : count;
	int i, n = 0, ret = 0, saved = w->nslots;
	uint64_t run_start = w->pos;

	w->nslots = count;
	if (nthreads <= 1) {
		for (i = 0; i < count; i++)
			slot_compress(w, &w->slots[i]);
	} else {
		int started = 0;

		for (i = 0; i < nthreads; i++) {
			jobs[i] = (struct compress_job){ w, i, nthreads };
			if (i == 0)
				continue;
			if (pthread_create(&tids[i], NULL, compress_worker,
					   &jobs[i]))
				break;
			started = i;
		}
		/* Threads that did not start: their share runs here. */
		for (i = started + 1; i < nthreads; i++)
			compress_worker(&jobs[i]);
		compress_worker(&jobs[0]);
		for (i = 1; i <= started; i++)
			pthread_join(tids[i], NULL);
	}
	w->nslots = saved;
	for (i = 0; i < count; i++) {
		struct stream_slot *s = &w->slots[i];
		int64_t t = (int64_t)(s->grain / w->e->gtes_per_gt);

		if (s->zret != Z_OK)
			return img_error(img, -EIO,
					 "%s: deflate failed (zlib error %d)",
					 w->e->path, s->zret);
		if (t != w->cur_gt) {
			ret = write_iovs(img, w, n, run_start);
			if (ret)
				return ret;
			n = 0;
			ret = switch_gt(img, w, t);
			if (ret)
				return ret;
			run_start = w->pos;
		}
		if (w->pos > UINT32_MAX)
			return img_error(img, -EFBIG,
					 "%s: stream too big for 32-bit grain "
					 "offsets",
					 w->e->path);
		w->iov[n++] = (struct iovec){ s->out, s->out_len };
		w->gt[s->grain % w->e->gtes_per_gt] = (uint32_t)w->pos;
		w->gt_used = true;
		w->pos += s->out_len / VMDK_SECTOR;
	}
	return write_iovs(img, w, n, run_start);
}

static int flush_batch(struct img *img, struct vmdk_stream_writer *w)
{
	int ret = emit_slots(img, w, w->nslots);
	struct stream_slot tmp;

	if (ret)
		return ret;
	/* The grain being filled lives in slots[nslots]: move it to 0. */
	if (w->nslots) {
		tmp = w->slots[0];
		w->slots[0] = w->slots[w->nslots];
		w->slots[w->nslots] = tmp;
	}
	w->nslots = 0;
	return 0;
}

/* The grain being filled is complete: queue it unless it is all zero. */
static int complete_grain(struct img *img, struct vmdk_stream_writer *w)
{
	struct stream_slot *s = &w->slots[w->nslots], tmp;

	if (w->cur_grain < 0)
		return 0;
	w->cur_grain = -1;
	if (img_buf_is_zero(s->data, w->grain_bytes))
		return 0;
	w->nslots++;
	if (w->nslots == STREAM_BATCH)
		return flush_batch(img, w);
	(void)tmp;
	return 0;
}

static int start_grain(struct img *img, struct vmdk_stream_writer *w,
		       uint64_t g)
{
	int ret;

	if (w->cur_grain == (int64_t)g)
		return 0;
	ret = complete_grain(img, w);
	if (ret)
		return ret;
	w->cur_grain = (int64_t)g;
	w->slots[w->nslots].grain = g;
	memset(w->slots[w->nslots].data, 0, w->grain_bytes);
	return 0;
}

static int check_order(struct img *img, struct vmdk_stream_writer *w,
		       uint64_t off)
{
	if (off < w->min_off)
		return img_error(img, -EINVAL,
				 "streamOptimized images are written strictly "
				 "sequentially (write at %" PRIu64
				 " after %" PRIu64 ")",
				 off, w->min_off);
	return 0;
}

int vmdk_stream_write(struct img *img, uint64_t off, const struct iovec *iov,
		      int iovcnt, size_t len)
{
	struct vmdk_state *st = img_state(img);
	struct vmdk_stream_writer *w = st->writer;
	size_t done = 0;
	int ret;

	ret = check_order(img, w, off);
	if (ret)
		return ret;
	while (done < len) {
		uint64_t g = (off + done) / w->grain_bytes;
		uint64_t in = (off + done) % w->grain_bytes;
		uint64_t end = (g + 1) * w->grain_bytes;
		size_t n = w->grain_bytes - in;

		if (n > len - done)
			n = len - done;
		if (w->cur_grain != (int64_t)g &&
		    img_iov_range_is_zero(iov, iovcnt, done, n)) {
			/* Zeros into a fresh grain: nothing to store yet. */
			done += n;
			continue;
		}
		ret = start_grain(img, w, g);
		if (ret)
			return ret;
		img_iov_to_buf(iov, iovcnt, done, w->slots[w->nslots].data + in,
			       n);
		done += n;
		if (end > w->capacity_bytes)
			end = w->capacity_bytes;
		if (off + done >= end) {
			ret = complete_grain(img, w);
			if (ret)
				return ret;
		}
	}
	w->min_off = off + len;
	return 0;
}

int vmdk_stream_skip(struct img *img, uint64_t off, uint64_t len)
{
	struct vmdk_state *st = img_state(img);
	struct vmdk_stream_writer *w = st->writer;
	int ret;

	ret = check_order(img, w, off);
	if (ret)
		return ret;
	if (w->cur_grain >= 0 &&
	    off + len >= (uint64_t)(w->cur_grain + 1) * w->grain_bytes) {
		ret = complete_grain(img, w);
		if (ret)
			return ret;
	}
	w->min_off = off + len;
	return 0;
}

int vmdk_stream_write_tail(struct img_file *f,
			   const struct vmdk_sparse_header *h,
			   const uint32_t *gd, uint32_t gd_entries,
			   uint64_t pos, char *err, size_t errlen)
{
	uint64_t gd_sectors = vmdk_gd_sectors(gd_entries);
	size_t bytes = (1 + gd_sectors + 3) * VMDK_SECTOR;
	struct vmdk_sparse_header footer = *h;
	uint8_t *buf = calloc(1, bytes), *p;
	uint32_t *dir, i;
	int ret;

	if (!buf)
		return -ENOMEM;
	p = buf;
	vmdk_meta_marker_init((struct vmdk_meta_marker *)p, VMDK_MARKER_GD,
			      gd_sectors);
	p += VMDK_SECTOR;
	dir = (uint32_t *)p;
	for (i = 0; i < gd_entries; i++)
		dir[i] = IMG_LE32(gd ? gd[i] : 0);
	p += gd_sectors * VMDK_SECTOR;
	vmdk_meta_marker_init((struct vmdk_meta_marker *)p, VMDK_MARKER_FOOTER,
			      1);
	p += VMDK_SECTOR;
	footer.gd_offset = pos + 1;
	footer.unclean_shutdown = 0;
	vmdk_sparse_header_to_disk(&footer);
	memcpy(p, &footer, sizeof(footer));
	p += VMDK_SECTOR;
	vmdk_meta_marker_init((struct vmdk_meta_marker *)p, VMDK_MARKER_EOS, 0);
	ret = img_file_pwrite(f, buf, bytes, pos * VMDK_SECTOR);
	if (!ret)
		ret = img_file_truncate(f, pos * VMDK_SECTOR + bytes);
	free(buf);
	if (ret)
		img_error_buf(err, errlen, ret,
			      "%s: cannot write the stream footer: %s", f->path,
			      strerror(-ret));
	return ret;
}

int vmdk_stream_flush(struct img *img)
{
	struct vmdk_state *st = img_state(img);
	struct vmdk_stream_writer *w = st->writer;
	struct vmdk_extent *e = w->e;
	uint64_t saved_pos;
	int64_t partial_idx = -1, saved_gt;
	char err[256];
	int ret;

	ret = flush_batch(img, w);
	if (ret)
		return ret;
	/* The partial grain goes out now and is rewritten when the stream
	 * continues; a grain table it starts is final already. */
	if (w->cur_grain >= 0 &&
	    !img_buf_is_zero(w->slots[0].data, w->grain_bytes)) {
		ret = switch_gt(img, w,
				(int64_t)(w->slots[0].grain / e->gtes_per_gt));
		if (ret)
			return ret;
	}
	saved_pos = w->pos;
	saved_gt = w->cur_gt;
	if (w->cur_grain >= 0 &&
	    !img_buf_is_zero(w->slots[0].data, w->grain_bytes)) {
		partial_idx = (int64_t)(w->slots[0].grain % e->gtes_per_gt);
		ret = emit_slots(img, w, 1);
		if (ret)
			return ret;
	}
	ret = write_gt(img, w);
	if (ret)
		return ret;
	ret = vmdk_stream_write_tail(e->file, &e->header, w->gd, e->gd_entries,
				     w->pos, err, sizeof(err));
	if (ret)
		return img_error(img, ret, "%s", err);
	ret = img_file_sync(e->file);
	if (ret)
		return vmdk_io_error(img, ret, "%s: fdatasync failed", e->path);
	/* Continue from before the temporary tail. */
	w->pos = saved_pos;
	if (saved_gt >= 0)
		w->gd[saved_gt] = 0;
	if (partial_idx >= 0)
		w->gt[partial_idx] = 0;
	return 0;
}

void vmdk_stream_writer_free(struct img *img)
{
	struct vmdk_state *st = img_state(img);
	struct vmdk_stream_writer *w = st->writer;
	int i;

	if (!w)
		return;
	for (i = 0; i <= STREAM_BATCH; i++) {
		free(w->slots[i].data);
		free(w->slots[i].out);
	}
	free(w->gd);
	free(w->gt);
	free(w);
	st->writer = NULL;
}

int vmdk_stream_writer_open(struct img *img)
{
	struct vmdk_state *st = img_state(img);
	struct vmdk_stream_writer *w;
	struct vmdk_extent *e = st->extents[0];
	uint32_t i;
	long ncpu;
	int ret;

	if (st->nextents != 1 || !e->sparse || !e->compressed || e->start != 0)
		return img_error(img, -ENOTSUP,
				 "sequential writing needs a single-extent "
				 "streamOptimized image");
	for (i = 0; i < e->gd_entries; i++)
		if (e->gd[i])
			return img_error(img, -ENOTSUP,
					 "streamOptimized image already holds "
					 "data; it can only be written once, "
					 "right after create");
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	st->writer = w;
	w->e = e;
	w->grain_bytes = (uint64_t)e->grain_sectors * VMDK_SECTOR;
	w->capacity_bytes = e->header.capacity * VMDK_SECTOR;
	w->cur_grain = -1;
	w->cur_gt = -1;
	w->pos = e->header.overhead;
	if (w->pos < 1 + (st->desc_embedded ? st->desc_area / VMDK_SECTOR : 0))
		w->pos = 1 + st->desc_area / VMDK_SECTOR;
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (getenv("VMDK_STREAM_THREADS"))
		ncpu = atol(getenv("VMDK_STREAM_THREADS"));
	w->nthreads = ncpu < 1			  ? 1
		      : ncpu > STREAM_MAX_THREADS ? STREAM_MAX_THREADS
						  : (int)ncpu;
	w->gd = calloc(e->gd_entries ? e->gd_entries : 1, 4);
	w->gt = calloc(e->gtes_per_gt, 4);
	if (!w->gd || !w->gt)
		goto nomem;
	for (i = 0; i <= STREAM_BATCH; i++) {
		struct stream_slot *s = &w->slots[i];

		s->data = malloc(w->grain_bytes);
		s->out_cap = sizeof(struct vmdk_grain_marker) +
			     compressBound(w->grain_bytes) + VMDK_SECTOR;
		s->out = malloc(s->out_cap);
		if (!s->data || !s->out)
			goto nomem;
	}
	/* A header VMware's importers accept: version 3, GD at the end. */
	e->header.version = 3;
	e->header.flags = VMDK_FLAG_NL_DETECT | VMDK_FLAG_COMPRESSED |
			  VMDK_FLAG_MARKERS;
	e->header.compress_algorithm = VMDK_COMPRESS_DEFLATE;
	e->header.gd_offset = VMDK_GD_AT_END;
	e->header.rgd_offset = 0;
	ret = vmdk_sparse_write_header(img, e);
	if (ret)
		goto fail;
	return 0;
nomem:
	ret = -ENOMEM;
fail:
	vmdk_stream_writer_free(img);
	return ret;
}
