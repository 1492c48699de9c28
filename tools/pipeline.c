/* SPDX-License-Identifier: MIT */
/* Ordered read-ahead pipeline: see pipeline.h. */
#include "tools/pipeline.h"

#include "img.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PIPELINE_DEFAULT_BUF_SIZE (2u << 20)
#define PIPELINE_MAX_WORKERS 8

uint8_t pipeline_zero_buf[PIPELINE_ZERO_BUF_SIZE]
	__attribute__((aligned(4096)));

enum pipeline_slot_state { SLOT_FREE, SLOT_CLAIMED, SLOT_READY };

struct pipeline_slot {
	struct pipeline_chunk chunk;
	enum pipeline_slot_state state;
	int err;
};

struct pipeline {
	pthread_mutex_t lock;
	pthread_cond_t chunk_ready; /* a slot became READY, or the end */
	pthread_cond_t slot_free;   /* a slot became FREE, or stop */
	struct pipeline_slot *slots;
	int nslots;
	uint64_t next_claim;
	bool end;	/* claim() said the end (or failed) */
	uint64_t total; /* chunk count, valid once end */
	int claim_err;
	char claim_msg[PIPELINE_ERRMSG_MAX];
	bool stop;
	const struct pipeline_ops *ops;
	void *ctx;
};

static void pipeline_chunk_reset(struct pipeline_chunk *c, uint64_t index)
{
	c->index = index;
	c->source = 0;
	c->off = 0;
	c->len = 0;
	c->src_off = 0;
	c->nseg = 0;
	c->nout = 0;
	memset(c->user, 0, sizeof(c->user));
	c->errmsg[0] = '\0';
}

static void *pipeline_worker(void *arg)
{
	struct pipeline *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct pipeline_slot *slot;
		int ret;

		while (!p->stop && !p->end &&
		       p->slots[p->next_claim % p->nslots].state != SLOT_FREE)
			pthread_cond_wait(&p->slot_free, &p->lock);
		if (p->stop || p->end)
			break;
		slot = &p->slots[p->next_claim % p->nslots];
		pipeline_chunk_reset(&slot->chunk, p->next_claim);
		ret = p->ops->claim(p->ctx, &slot->chunk);
		if (ret <= 0) {
			p->claim_err = ret;
			memcpy(p->claim_msg, slot->chunk.errmsg,
			       sizeof(p->claim_msg));
			p->end = true;
			p->total = p->next_claim;
			pthread_cond_broadcast(&p->chunk_ready);
			pthread_cond_broadcast(&p->slot_free);
			break;
		}
		slot->state = SLOT_CLAIMED;
		p->next_claim++;
		pthread_mutex_unlock(&p->lock);

		ret = p->ops->produce ? p->ops->produce(p->ctx, &slot->chunk)
				      : 0;

		pthread_mutex_lock(&p->lock);
		slot->err = ret;
		slot->state = SLOT_READY;
		pthread_cond_broadcast(&p->chunk_ready);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static int pipeline_default_workers(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		n = 1;
	/* Readers mostly wait on I/O or copy from the page cache; two per
	 * core keeps the consumer fed without flooding small machines. */
	n *= 2;
	if (n > PIPELINE_MAX_WORKERS)
		n = PIPELINE_MAX_WORKERS;
	return (int)n;
}

static void pipeline_free_slots(struct pipeline *p)
{
	for (int i = 0; i < p->nslots; i++) {
		struct pipeline_chunk *c = &p->slots[i].chunk;

		free(c->buf[0]);
		free(c->buf[1]);
		free(c->seg);
		free(c->out);
	}
	free(p->slots);
}

int pipeline_run(const struct pipeline_config *cfg,
		 const struct pipeline_ops *ops, void *ctx)
{
	struct pipeline p = { .ops = ops, .ctx = ctx };
	size_t buf_size = cfg->buf_size ? cfg->buf_size
					: PIPELINE_DEFAULT_BUF_SIZE;
	int nbufs = cfg->nbufs == 2 ? 2 : 1;
	int workers = cfg->workers > 0 ? cfg->workers
				       : pipeline_default_workers();
	pthread_t threads[PIPELINE_MAX_WORKERS];
	int started = 0;
	int result = 0;

	if (workers > PIPELINE_MAX_WORKERS)
		workers = PIPELINE_MAX_WORKERS;
	p.nslots = cfg->slots > 0 ? cfg->slots : workers * 2 + 2;
	p.slots = calloc(p.nslots, sizeof(*p.slots));
	if (!p.slots)
		return -ENOMEM;
	for (int i = 0; i < p.nslots; i++) {
		struct pipeline_chunk *c = &p.slots[i].chunk;

		c->max_segments = (int)(buf_size / IMG_SECTOR_SIZE) + 64;
		c->seg = calloc(c->max_segments, sizeof(*c->seg));
		c->out = calloc(c->max_segments, sizeof(*c->out));
		if (!c->seg || !c->out)
			goto nomem;
		for (int b = 0; b < nbufs; b++)
			if (posix_memalign((void **)&c->buf[b], 4096, buf_size))
				goto nomem;
	}
	pthread_mutex_init(&p.lock, NULL);
	pthread_cond_init(&p.chunk_ready, NULL);
	pthread_cond_init(&p.slot_free, NULL);

	for (started = 0; started < workers; started++)
		if (pthread_create(&threads[started], NULL, pipeline_worker,
				   &p))
			break;
	if (started == 0) {
		result = -EAGAIN;
		if (ops->report)
			ops->report(ctx, result, "cannot start reader threads");
		goto out;
	}

	for (uint64_t i = 0;; i++) {
		struct pipeline_slot *slot = &p.slots[i % p.nslots];

		pthread_mutex_lock(&p.lock);
		while (!(slot->state == SLOT_READY && slot->chunk.index == i) &&
		       !(p.end && i >= p.total))
			pthread_cond_wait(&p.chunk_ready, &p.lock);
		if (p.end && i >= p.total) {
			result = p.claim_err;
			if (result < 0 && ops->report)
				ops->report(ctx, result, p.claim_msg);
			pthread_mutex_unlock(&p.lock);
			break;
		}
		pthread_mutex_unlock(&p.lock);

		result = slot->err;
		if (result == 0)
			result = ops->consume(ctx, &slot->chunk);
		if (result < 0 && ops->report)
			ops->report(ctx, result, slot->chunk.errmsg);
		if (result != 0)
			break;

		pthread_mutex_lock(&p.lock);
		slot->state = SLOT_FREE;
		pthread_cond_broadcast(&p.slot_free);
		pthread_mutex_unlock(&p.lock);
	}

out:
	pthread_mutex_lock(&p.lock);
	p.stop = true;
	pthread_cond_broadcast(&p.slot_free);
	pthread_mutex_unlock(&p.lock);
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	pthread_cond_destroy(&p.chunk_ready);
	pthread_cond_destroy(&p.slot_free);
	pthread_mutex_destroy(&p.lock);
	pipeline_free_slots(&p);
	return result;

nomem:
	pipeline_free_slots(&p);
	if (ops->report)
		ops->report(ctx, -ENOMEM, "out of memory for the copy buffers");
	return -ENOMEM;
}

int pipeline_fail(struct pipeline_chunk *c, struct img *img, int err)
{
	const char *msg = img ? img_errmsg(img) : NULL;

	if (msg && *msg)
		snprintf(c->errmsg, sizeof(c->errmsg), "%s", msg);
	else if (img)
		snprintf(c->errmsg, sizeof(c->errmsg), "%s: %s",
			 img_filename(img), strerror(-err));
	else
		snprintf(c->errmsg, sizeof(c->errmsg), "%s", strerror(-err));
	return err;
}

/* Append a segment, merging it into the previous one of the same kind. */
bool pipeline_segment_append(struct pipeline_segment *seg, int *nseg, int max,
			     uint64_t off, uint64_t len,
			     enum pipeline_segment_kind kind)
{
	if (len == 0)
		return true;
	if (*nseg > 0) {
		struct pipeline_segment *last = &seg[*nseg - 1];

		if (last->kind == kind && last->off + last->len == off) {
			last->len += len;
			return true;
		}
	}
	if (*nseg >= max)
		return false;
	seg[*nseg] = (struct pipeline_segment){ off, len, kind };
	(*nseg)++;
	return true;
}

int pipeline_claim_from_status(struct img *img, struct pipeline_chunk *c,
			       uint64_t src_off, uint64_t remaining,
			       size_t buf_size, uint64_t max_zero)
{
	struct img_extent ext;
	uint64_t pos = 0;
	int ret;

	c->src_off = src_off;
	c->nseg = 0;
	if (remaining == 0) {
		c->len = 0;
		return 0;
	}

	/* A chunk that starts with a long zero run is only that run. */
	while (pos < remaining && pos < max_zero) {
		uint64_t want = remaining - pos;

		if (want > max_zero - pos)
			want = max_zero - pos;
		ret = img_block_status(img, src_off + pos, want, &ext);
		if (ret < 0)
			return ret;
		if (!(ext.flags & IMG_EXTENT_ZERO))
			break;
		pos += ext.length < want ? ext.length : want;
	}
	if (pos > 0 && (pos >= buf_size || pos == remaining)) {
		c->seg[0] = (struct pipeline_segment){ c->off, pos,
						       PIPELINE_SEG_ZERO };
		c->nseg = 1;
		c->len = pos;
		return 0;
	}
	if (pos > 0)
		pipeline_segment_append(c->seg, &c->nseg, c->max_segments,
					c->off, pos, PIPELINE_SEG_ZERO);

	while (pos < remaining && pos < buf_size) {
		uint64_t want = remaining - pos;
		enum pipeline_segment_kind kind;
		uint64_t take;

		if (want > buf_size - pos)
			want = buf_size - pos;
		ret = img_block_status(img, src_off + pos, want, &ext);
		if (ret < 0)
			return ret;
		take = ext.length < want ? ext.length : want;
		kind = (ext.flags & IMG_EXTENT_ZERO) ? PIPELINE_SEG_ZERO
						     : PIPELINE_SEG_DATA;
		if (!pipeline_segment_append(c->seg, &c->nseg, c->max_segments,
					     c->off + pos, take, kind))
			break;
		pos += take;
	}
	c->len = pos;
	return 0;
}

int pipeline_read_segments(struct img *img, const struct pipeline_chunk *c,
			   int which)
{
	for (int i = 0; i < c->nseg; i++) {
		const struct pipeline_segment *s = &c->seg[i];
		uint64_t rel = s->off - c->off;
		int ret;

		if (s->kind != PIPELINE_SEG_DATA)
			continue;
		ret = img_pread(img, c->buf[which] + rel, s->len,
				c->src_off + rel);
		if (ret < 0)
			return ret;
	}
	return 0;
}

bool pipeline_buf_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len && ((uintptr_t)p & 63)) {
		if (*p)
			return false;
		p++;
		len--;
	}
	while (len >= 256) {
		const uint64_t *q = (const uint64_t *)(const void *)p;
		uint64_t acc = 0;

		for (int i = 0; i < 32; i++)
			acc |= q[i];
		if (acc)
			return false;
		p += 256;
		len -= 256;
	}
	while (len) {
		if (*p)
			return false;
		p++;
		len--;
	}
	return true;
}

/* Emit the data/zero runs of one DATA segment into out[]. */
static void detect_zeroes_in_segment(struct pipeline_chunk *c,
				     const struct pipeline_segment *s,
				     uint64_t granularity, uint64_t min_run)
{
	const uint8_t *buf = c->buf[0] + (s->off - c->off);
	uint64_t end = s->off + s->len;
	uint64_t zero_start = 0, zero_len = 0;
	uint64_t pos = s->off;

	while (pos < end) {
		uint64_t next = (pos / granularity + 1) * granularity;
		uint64_t len;

		if (next > end)
			next = end;
		len = next - pos;
		if (pipeline_buf_is_zero(buf + (pos - s->off), len)) {
			if (zero_len == 0)
				zero_start = pos;
			zero_len += len;
		} else {
			if (zero_len)
				pipeline_segment_append(
					c->out, &c->nout, c->max_segments,
					zero_start, zero_len,
					zero_len >= min_run
						? PIPELINE_SEG_ZERO
						: PIPELINE_SEG_DATA);
			zero_len = 0;
			pipeline_segment_append(c->out, &c->nout,
						c->max_segments, pos, len,
						PIPELINE_SEG_DATA);
		}
		pos = next;
	}
	if (zero_len)
		pipeline_segment_append(c->out, &c->nout, c->max_segments,
					zero_start, zero_len,
					zero_len >= min_run
						? PIPELINE_SEG_ZERO
						: PIPELINE_SEG_DATA);
}

void pipeline_detect_zeroes(struct pipeline_chunk *c, uint64_t granularity,
			    uint64_t min_run)
{
	c->nout = 0;
	for (int i = 0; i < c->nseg; i++) {
		const struct pipeline_segment *s = &c->seg[i];

		if (s->kind == PIPELINE_SEG_DATA && granularity)
			detect_zeroes_in_segment(c, s, granularity, min_run);
		else
			pipeline_segment_append(c->out, &c->nout,
						c->max_segments, s->off, s->len,
						s->kind);
	}
}
