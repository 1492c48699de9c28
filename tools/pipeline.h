/* SPDX-License-Identifier: MIT */
/*
 * An ordered read-ahead pipeline for the commands that stream a whole disk
 * (convert, checksum, compare, compact).
 *
 * The caller's claim() cuts the disk into chunks (under a lock, in order,
 * usually from block status); worker threads run produce() on several
 * chunks at once (the reads, zero detection); the calling thread runs
 * consume() on the chunks strictly in order (the writes, the hash).  A ring
 * of slots bounds the memory and how far the readers run ahead.
 */
#ifndef TOOLS_PIPELINE_H
#define TOOLS_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct img;

#define PIPELINE_ERRMSG_MAX 512

enum pipeline_segment_kind {
	PIPELINE_SEG_DATA, /* bytes are in the chunk's buffer */
	PIPELINE_SEG_ZERO, /* reads as zero; nothing in the buffer */
	PIPELINE_SEG_SAME, /* the target already reads the same: skip */
};

struct pipeline_segment {
	uint64_t off; /* offset in the caller's address space */
	uint64_t len;
	enum pipeline_segment_kind kind;
};

struct pipeline_chunk {
	uint64_t index;
	int source;   /* caller's choice (which input image) */
	uint64_t off; /* first byte, caller's address space */
	uint64_t len;
	uint64_t src_off; /* offset of off inside the source */
	/* Two buffers of buf_size bytes each (second one for compare / -B);
	 * byte off + i lives at buf[i]. */
	uint8_t *buf[2];
	/* Claimed segments (claim fills them, in order, covering the chunk). */
	int nseg;
	struct pipeline_segment *seg;
	/* Result segments (produce fills them). */
	int nout;
	struct pipeline_segment *out;
	int max_segments; /* capacity of seg and out */
	/* Free for the caller (e.g. a second source's segments). */
	uint64_t user[4];
	/* A failing claim/produce/consume leaves its one-line message here;
	 * only the first failure in chunk order is reported. */
	char errmsg[PIPELINE_ERRMSG_MAX];
};

struct pipeline_ops {
	/* Under the pipeline lock, in order: describe the next chunk (off,
	 * len, source, seg).  Return 1 for a chunk, 0 at the end, -errno on
	 * failure.  A chunk longer than buf_size must have no DATA segment. */
	int (*claim)(void *ctx, struct pipeline_chunk *c);
	/* In a worker thread, any order: fill the buffers and out[]. */
	int (*produce)(void *ctx, struct pipeline_chunk *c);
	/* In the caller's thread, strictly in order.  Return 0 to go on, 1 to
	 * stop early (compare found a difference), -errno to fail. */
	int (*consume)(void *ctx, struct pipeline_chunk *c);
	/* On the caller's thread, once, for the failure that ends the run
	 * (the first in chunk order): err and the message the failing step
	 * left in errmsg ("" if none).  Workers never print, so a run prints
	 * exactly one error line. */
	void (*report)(void *ctx, int err, const char *msg);
};

struct pipeline_config {
	size_t buf_size; /* bytes per buffer; 0: 2 MiB */
	int nbufs;	 /* buffers per chunk, 1 or 2 */
	int workers;	 /* 0: by CPU count */
	int slots;	 /* 0: 4 per worker */
};

/* Runs until claim() says the end, consume() says stop, or an error (the
 * first one wins).  Returns 0, 1 (stopped by consume) or -errno. */
int pipeline_run(const struct pipeline_config *cfg,
		 const struct pipeline_ops *ops, void *ctx);

/* Record img's last error message (or strerror) as the chunk's error and
 * return err, for claim/produce/consume: `return pipeline_fail(c, img, r)`. */
int pipeline_fail(struct pipeline_chunk *c, struct img *img, int err);

/* Fill c->seg[] from img_block_status() of img over [src_off, src_off+len)
 * where the chunk starts at c->off: merges runs of the same kind.  Stops
 * early (shrinking c->len) when the segment list is full.  When the first
 * extent is a zero run, the chunk becomes just that run, up to max_zero
 * bytes long (no buffer needed); otherwise the chunk ends before a zero run
 * that would reach past buf_size.  Returns 0 or -errno. */
int pipeline_claim_from_status(struct img *img, struct pipeline_chunk *c,
			       uint64_t src_off, uint64_t remaining,
			       size_t buf_size, uint64_t max_zero);

/* Read the DATA segments of c->seg[] from img into c->buf[which]. */
int pipeline_read_segments(struct img *img, const struct pipeline_chunk *c,
			   int which);

/* Split the DATA segments of c->seg[] further at zero runs: aligned blocks
 * of granularity bytes (relative to offset 0 of the caller's space) that
 * are all zero become ZERO segments in c->out[] when the run is at least
 * min_run bytes long.  granularity 0 copies seg[] to out[] unchanged. */
void pipeline_detect_zeroes(struct pipeline_chunk *c, uint64_t granularity,
			    uint64_t min_run);

/* Append a segment to seg[] (*nseg entries, max capacity), merging it into
 * the previous one when they touch and are of the same kind.  false when
 * the list is full. */
bool pipeline_segment_append(struct pipeline_segment *seg, int *nseg, int max,
			     uint64_t off, uint64_t len,
			     enum pipeline_segment_kind kind);

/* Is the buffer all zero bytes? (fast, vectorised) */
bool pipeline_buf_is_zero(const void *buf, size_t len);

/* A buffer of zeros, at least PIPELINE_ZERO_BUF_SIZE long. */
#define PIPELINE_ZERO_BUF_SIZE (1u << 20)
/* Never written. */
extern uint8_t pipeline_zero_buf[PIPELINE_ZERO_BUF_SIZE];

#endif
