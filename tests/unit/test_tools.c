/* SPDX-License-Identifier: MIT */
/* Unit tests for the tools area's modules: the read-ahead pipeline (zero
 * detection, segment lists, ordering, early stop, errors, block-status
 * claims on a real sparse raw image) and the chain helpers (parent
 * references). */
#include "img.h"
#include "tools/chain.h"
#include "tools/pipeline.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_tools.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
}

TestSuite(tools, .init = setup, .fini = teardown);

/* ---- zero detection ------------------------------------------------------*/

Test(tools, buf_is_zero_any_alignment_and_position)
{
	static uint8_t buf[4096 + 128];

	memset(buf, 0, sizeof(buf));
	for (size_t start = 0; start < 70; start += 7)
		for (size_t len = 0; len < 1100; len += 37)
			cr_assert(pipeline_buf_is_zero(buf + start, len));
	for (size_t pos = 0; pos < 1100; pos++) {
		buf[3 + pos] = 1;
		cr_assert_not(pipeline_buf_is_zero(buf + 3, 1100),
			      "missed a byte at %zu", pos);
		cr_assert(pipeline_buf_is_zero(buf + 3, pos));
		buf[3 + pos] = 0;
	}
}

static struct pipeline_chunk *chunk_new(size_t buf_size)
{
	struct pipeline_chunk *c = calloc(1, sizeof(*c));

	cr_assert_not_null(c);
	c->max_segments = (int)(buf_size / 512) + 64;
	c->seg = calloc(c->max_segments, sizeof(*c->seg));
	c->out = calloc(c->max_segments, sizeof(*c->out));
	c->buf[0] = calloc(1, buf_size);
	cr_assert(c->seg && c->out && c->buf[0]);
	return c;
}

static void chunk_free(struct pipeline_chunk *c)
{
	free(c->seg);
	free(c->out);
	free(c->buf[0]);
	free(c);
}

Test(tools, detect_zeroes_splits_at_granularity_and_min_run)
{
	struct pipeline_chunk *c = chunk_new(65536);

	/* Chunk at 1 MiB: data in 4K blocks 0, 3, and bytes in 8 and 9. */
	c->off = 1 << 20;
	c->len = 65536;
	memset(c->buf[0], 0xaa, 4096);
	memset(c->buf[0] + 3 * 4096, 0xbb, 4096);
	c->buf[0][8 * 4096 + 17] = 1;
	c->buf[0][9 * 4096 + 4095] = 1;
	c->seg[0] =
		(struct pipeline_segment){ c->off, 65536, PIPELINE_SEG_DATA };
	c->nseg = 1;

	pipeline_detect_zeroes(c, 4096, 4096);
	cr_assert_eq(c->nout, 6);
	cr_assert_eq(c->out[0].kind, PIPELINE_SEG_DATA);
	cr_assert_eq(c->out[0].len, 4096);
	cr_assert_eq(c->out[1].kind, PIPELINE_SEG_ZERO);
	cr_assert_eq(c->out[1].off, c->off + 4096);
	cr_assert_eq(c->out[1].len, 8192);
	cr_assert_eq(c->out[2].kind, PIPELINE_SEG_DATA);
	cr_assert_eq(c->out[3].kind, PIPELINE_SEG_ZERO);
	cr_assert_eq(c->out[3].len, 4 * 4096);
	cr_assert_eq(c->out[4].kind, PIPELINE_SEG_DATA);
	cr_assert_eq(c->out[4].off, c->off + 8 * 4096);
	cr_assert_eq(c->out[4].len, 2 * 4096);
	cr_assert_eq(c->out[5].kind, PIPELINE_SEG_ZERO);
	cr_assert_eq(c->out[5].off + c->out[5].len, c->off + 65536);

	/* A minimum run of 3 blocks keeps the 2-block gap as data. */
	pipeline_detect_zeroes(c, 4096, 3 * 4096);
	cr_assert_eq(c->out[0].kind, PIPELINE_SEG_DATA);
	cr_assert_eq(c->out[0].len, 4 * 4096);

	/* Granularity 0 copies the claimed segments unchanged. */
	pipeline_detect_zeroes(c, 0, 0);
	cr_assert_eq(c->nout, 1);
	cr_assert_eq(c->out[0].len, 65536);
	chunk_free(c);
}

Test(tools, detect_zeroes_unaligned_segment_edges)
{
	struct pipeline_chunk *c = chunk_new(65536);
	uint64_t covered = 0;

	c->off = 1000; /* not block-aligned */
	c->len = 20000;
	c->buf[0][19999] = 7;
	c->seg[0] = (struct pipeline_segment){ 1000, 20000, PIPELINE_SEG_DATA };
	c->nseg = 1;
	pipeline_detect_zeroes(c, 4096, 4096);
	for (int i = 0; i < c->nout; i++) {
		cr_assert_eq(c->out[i].off, 1000 + covered);
		covered += c->out[i].len;
		if (c->out[i].kind == PIPELINE_SEG_ZERO)
			cr_assert_eq(c->out[i].off % 4096 == 0 ||
					     c->out[i].off == 1000,
				     1);
	}
	cr_assert_eq(covered, 20000);
	cr_assert_eq(c->out[c->nout - 1].kind, PIPELINE_SEG_DATA);
	chunk_free(c);
}

Test(tools, segment_append_merges_neighbours_only)
{
	struct pipeline_segment seg[2];
	int n = 0;

	cr_assert(
		pipeline_segment_append(seg, &n, 2, 0, 10, PIPELINE_SEG_DATA));
	cr_assert(
		pipeline_segment_append(seg, &n, 2, 10, 5, PIPELINE_SEG_DATA));
	cr_assert_eq(n, 1);
	cr_assert_eq(seg[0].len, 15);
	cr_assert(
		pipeline_segment_append(seg, &n, 2, 15, 5, PIPELINE_SEG_ZERO));
	cr_assert_eq(n, 2);
	cr_assert(
		pipeline_segment_append(seg, &n, 2, 20, 0, PIPELINE_SEG_DATA));
	cr_assert_not(
		pipeline_segment_append(seg, &n, 2, 20, 1, PIPELINE_SEG_DATA));
}

/* ---- the pipeline -------------------------------------------------------*/

struct order_test {
	int reports;
	int report_err;
	char report_msg[64];
	uint64_t claim_fail_at; /* claim fails there (0: never) */
	uint64_t chunks;
	uint64_t claimed;
	uint64_t consumed;
	uint64_t stop_at; /* consume returns 1 there (0: never) */
	uint64_t fail_at; /* produce fails there (0: never) */
	bool out_of_order;
};

static int order_claim(void *ctx, struct pipeline_chunk *c)
{
	struct order_test *t = ctx;

	if (t->claimed == t->chunks)
		return 0;
	if (t->claim_fail_at && t->claimed == t->claim_fail_at) {
		snprintf(c->errmsg, sizeof(c->errmsg), "claim %u failed",
			 (unsigned)t->claimed);
		return -ENOSPC;
	}
	c->off = t->claimed * 100;
	c->len = 100;
	t->claimed++;
	return 1;
}

static int order_produce(void *ctx, struct pipeline_chunk *c)
{
	struct order_test *t = ctx;

	/* Uneven work so that workers finish out of order. */
	if (c->index % 3 == 0)
		usleep(200);
	memset(c->buf[0], (int)(c->index & 0xff), 64);
	c->user[0] = c->index * 7;
	if (t->fail_at && c->index >= t->fail_at) {
		/* Every later chunk fails too: only the first is reported. */
		snprintf(c->errmsg, sizeof(c->errmsg), "chunk %u failed",
			 (unsigned)c->index);
		return -EIO;
	}
	return 0;
}

static void order_report(void *ctx, int err, const char *msg)
{
	struct order_test *t = ctx;

	t->reports++;
	t->report_err = err;
	snprintf(t->report_msg, sizeof(t->report_msg), "%s", msg);
}

static int order_consume(void *ctx, struct pipeline_chunk *c)
{
	struct order_test *t = ctx;

	if (c->index != t->consumed || c->off != c->index * 100 ||
	    c->user[0] != c->index * 7 || c->buf[0][63] != (c->index & 0xff))
		t->out_of_order = true;
	t->consumed++;
	if (t->stop_at && c->index == t->stop_at)
		return 1;
	return 0;
}

static const struct pipeline_ops order_ops = {
	.claim = order_claim,
	.produce = order_produce,
	.consume = order_consume,
	.report = order_report,
};

Test(tools, pipeline_consumes_in_order_with_many_workers)
{
	struct order_test t = { .chunks = 500 };
	struct pipeline_config cfg = { .buf_size = 4096,
				       .workers = 4,
				       .slots = 6 };

	cr_assert_eq(pipeline_run(&cfg, &order_ops, &t), 0);
	cr_assert_eq(t.consumed, 500);
	cr_assert_not(t.out_of_order);
}

Test(tools, pipeline_empty_input)
{
	struct order_test t = { .chunks = 0 };
	struct pipeline_config cfg = { .buf_size = 4096 };

	cr_assert_eq(pipeline_run(&cfg, &order_ops, &t), 0);
	cr_assert_eq(t.consumed, 0);
}

Test(tools, pipeline_stops_early_when_consume_says_so)
{
	struct order_test t = { .chunks = 1000, .stop_at = 10 };
	struct pipeline_config cfg = { .buf_size = 4096, .workers = 3 };

	cr_assert_eq(pipeline_run(&cfg, &order_ops, &t), 1);
	cr_assert_eq(t.consumed, 11);
	cr_assert_lt(t.claimed, 1000, "readers ran to the end anyway");
}

Test(tools, pipeline_reports_produce_error_in_order)
{
	struct order_test t = { .chunks = 100, .fail_at = 42 };
	struct pipeline_config cfg = { .buf_size = 4096, .workers = 2 };

	cr_assert_eq(pipeline_run(&cfg, &order_ops, &t), -EIO);
	cr_assert_eq(t.consumed, 42, "chunks before the failure are consumed");
	cr_assert_not(t.out_of_order);
	cr_assert_eq(t.reports, 1, "one error line, not one per worker");
	cr_assert_str_eq(t.report_msg, "chunk 42 failed");
}

Test(tools, pipeline_reports_claim_error_once_after_earlier_chunks)
{
	struct order_test t = { .chunks = 100, .claim_fail_at = 17 };
	struct pipeline_config cfg = { .buf_size = 4096, .workers = 4 };

	cr_assert_eq(pipeline_run(&cfg, &order_ops, &t), -ENOSPC);
	cr_assert_eq(t.consumed, 17);
	cr_assert_eq(t.reports, 1);
	cr_assert_eq(t.report_err, -ENOSPC);
	cr_assert_str_eq(t.report_msg, "claim 17 failed");
}

Test(tools, pipeline_no_report_on_success_or_stop)
{
	struct order_test t = { .chunks = 50, .stop_at = 5 };
	struct pipeline_config cfg = { .buf_size = 4096 };

	cr_assert_eq(pipeline_run(&cfg, &order_ops, &t), 1);
	cr_assert_eq(t.reports, 0);
}

/* ---- claims from block status on a real sparse raw image ---------------*/

Test(tools, claim_from_status_skips_holes_and_merges_runs)
{
	struct img_create_options co = { .format = "raw", .size = 64 << 20 };
	struct pipeline_chunk *c = chunk_new(2 << 20);
	char path[128], errbuf[IMG_ERRMSG_MAX];
	struct img *img;
	static uint8_t data[1 << 20];

	snprintf(path, sizeof(path), "%s/sparse.raw", dir);
	cr_assert_eq(img_create(path, &co, errbuf, sizeof(errbuf)), 0, "%s",
		     errbuf);
	cr_assert_eq(img_open(&img, path,
			      &(struct img_open_options){
				      .format = "raw", .flags = IMG_OPEN_RDWR },
			      errbuf, sizeof(errbuf)),
		     0, "%s", errbuf);
	memset(data, 0x5a, sizeof(data));
	cr_assert_eq(img_pwrite(img, data, sizeof(data), 40 << 20), 0);

	/* From 0: one pure zero chunk up to the data at 40 MiB. */
	c->off = 0;
	cr_assert_eq(pipeline_claim_from_status(img, c, 0, 64 << 20, 2 << 20,
						1ull << 30),
		     0);
	cr_assert_eq(c->nseg, 1);
	cr_assert_eq(c->seg[0].kind, PIPELINE_SEG_ZERO);
	cr_assert_eq(c->len, 40 << 20);

	/* max_zero caps a zero chunk. */
	cr_assert_eq(pipeline_claim_from_status(img, c, 0, 64 << 20, 2 << 20,
						8 << 20),
		     0);
	cr_assert_eq(c->len, 8 << 20);

	/* From 39.5 MiB: a short zero run, the data, then zeros up to the
	 * buffer size, at most one buffer long. */
	c->off = (39 << 20) + (1 << 19);
	cr_assert_eq(pipeline_claim_from_status(img, c, c->off, 24 << 20,
						2 << 20, 1ull << 30),
		     0);
	cr_assert_eq(c->len, 2 << 20);
	cr_assert_eq(c->nseg, 3);
	cr_assert_eq(c->seg[0].kind, PIPELINE_SEG_ZERO);
	cr_assert_eq(c->seg[1].kind, PIPELINE_SEG_DATA);
	cr_assert_eq(c->seg[1].off, 40 << 20);
	cr_assert_eq(c->seg[1].len, 1 << 20);
	cr_assert_eq(c->seg[2].kind, PIPELINE_SEG_ZERO);

	memset(c->buf[0], 0, 2 << 20);
	cr_assert_eq(pipeline_read_segments(img, c, 0), 0);
	cr_assert(pipeline_buf_is_zero(c->buf[0], 1 << 19));
	cr_assert_eq(memcmp(c->buf[0] + (1 << 19), data, sizeof(data)), 0);

	img_close(img);
	chunk_free(c);
}

/* ---- chain helpers -------------------------------------------------------*/

static void touch(const char *path)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f, "%s", path);
	fclose(f);
}

Test(tools, parent_reference_is_relative_to_the_child)
{
	char child[160], sib[160], sub[256], subdir[160], up[200];
	char *ref;

	snprintf(child, sizeof(child), "%s/disk.vmdk", dir);
	snprintf(sib, sizeof(sib), "%s/base.vmdk", dir);
	snprintf(subdir, sizeof(subdir), "%s/disk.vmdk.snapshots", dir);
	snprintf(sub, sizeof(sub), "%s/s1.vmdk", subdir);
	cr_assert_eq(mkdir(subdir, 0755), 0);
	touch(child);
	touch(sib);
	touch(sub);

	ref = chain_parent_reference(child, sib);
	cr_assert_str_eq(ref, "base.vmdk");
	free(ref);
	ref = chain_parent_reference(child, sub);
	cr_assert_str_eq(ref, "disk.vmdk.snapshots/s1.vmdk");
	free(ref);
	ref = chain_parent_reference(sub, sib);
	cr_assert_str_eq(ref, "../base.vmdk");
	free(ref);
	/* Far away: absolute. */
	snprintf(up, sizeof(up), "%s/a/b/c", dir);
	{
		char cmd[512];

		snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && touch '%s/x'", up,
			 up);
		cr_assert_eq(system(cmd), 0);
	}
	strcat(up, "/x");
	ref = chain_parent_reference(up, sib);
	{
		char real[4096];

		cr_assert_not_null(realpath(sib, real));
		cr_assert_str_eq(ref, real);
	}
	free(ref);
	cr_assert_null(chain_parent_reference(child, "/nonexistent/parent"));
	cr_assert(chain_same_file(child, child));
	cr_assert_not(chain_same_file(child, sib));
}
