/* SPDX-License-Identifier: MIT */
/*
 * imgtool compare: are two virtual disks the same, byte for byte?  Any two
 * formats compare by contents; regions both sides report as zero are not
 * read.  Exit 0 identical, 1 different, 2 error (as qemu-img compare).
 */
#include "tools/cmdline.h"
#include "tools/pipeline.h"

#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

enum { COMPARE_IDENTICAL = 0, COMPARE_DIFFERENT = 1, COMPARE_ERROR = 2 };

struct compare {
	struct img *img[2];
	uint64_t size[2];
	uint64_t end; /* the larger size */
	uint64_t cursor;
	size_t buf_size;
	uint64_t mismatch; /* first differing byte */
	uint64_t done;
	struct cmdline_progress progress;
};

/* Block status of one side, where past its end reads as zero. */
static int compare_status(struct compare *cmp, int side, uint64_t off,
			  uint64_t len, struct img_extent *ext)
{
	if (off >= cmp->size[side]) {
		ext->start = off;
		ext->length = len;
		ext->flags = IMG_EXTENT_ZERO;
		return 0;
	}
	if (len > cmp->size[side] - off)
		len = cmp->size[side] - off;
	return img_block_status(cmp->img[side], off, len, ext);
}

static int compare_claim(void *ctx, struct pipeline_chunk *c)
{
	struct compare *cmp = ctx;
	struct img_extent ext[2];
	uint64_t left, want;

	if (cmp->cursor >= cmp->end)
		return 0;
	left = cmp->end - cmp->cursor;
	want = left < (1ull << 30) ? left : (1ull << 30);
	for (int side = 0; side < 2; side++) {
		int ret = compare_status(cmp, side, cmp->cursor, want,
					 &ext[side]);

		if (ret < 0)
			return pipeline_fail(c, cmp->img[side], ret);
	}
	c->off = cmp->cursor;
	if ((ext[0].flags & IMG_EXTENT_ZERO) &&
	    (ext[1].flags & IMG_EXTENT_ZERO)) {
		c->len = ext[0].length < ext[1].length ? ext[0].length
						       : ext[1].length;
		if (c->len > want)
			c->len = want;
		c->user[0] = 1; /* both zero: nothing to read */
	} else {
		c->len = left < cmp->buf_size ? left : cmp->buf_size;
	}
	cmp->cursor += c->len;
	return 1;
}

/* Fill buf with [off, off+len) of one side: zero regions by memset. */
static int compare_read_side(struct compare *cmp, int side, uint8_t *buf,
			     uint64_t off, uint64_t len)
{
	uint64_t pos = 0;

	while (pos < len) {
		struct img_extent ext;
		uint64_t n;
		int ret = compare_status(cmp, side, off + pos, len - pos, &ext);

		if (ret < 0)
			return ret;
		n = ext.length < len - pos ? ext.length : len - pos;
		if (ext.flags & IMG_EXTENT_ZERO) {
			memset(buf + pos, 0, n);
		} else {
			ret = img_pread(cmp->img[side], buf + pos, n,
					off + pos);
			if (ret < 0)
				return ret;
		}
		pos += n;
	}
	return 0;
}

static int compare_produce(void *ctx, struct pipeline_chunk *c)
{
	struct compare *cmp = ctx;

	if (c->user[0])
		return 0;
	for (int side = 0; side < 2; side++) {
		int ret = compare_read_side(cmp, side, c->buf[side], c->off,
					    c->len);

		if (ret < 0)
			return pipeline_fail(c, cmp->img[side], ret);
	}
	return 0;
}

static int compare_consume(void *ctx, struct pipeline_chunk *c)
{
	struct compare *cmp = ctx;

	if (!c->user[0] && memcmp(c->buf[0], c->buf[1], c->len) != 0) {
		uint64_t i = 0;

		while (c->buf[0][i] == c->buf[1][i])
			i++;
		cmp->mismatch = c->off + i;
		return 1;
	}
	cmp->done += c->len;
	cmdline_progress_update(&cmp->progress, cmp->done);
	return 0;
}

static void compare_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgtool compare [-f FMT] [-F FMT] [-s] [-p] [-q] [-U] A B\n"
		"Compare the virtual disks of A and B by contents (any two formats).\n"
		"Without -s, a size difference is fine when the longer disk's tail reads\n"
		"as zero.\n"
		"\n"
		"  -f FMT   format of A (default: probed)\n"
		"  -F FMT   format of B (default: probed)\n"
		"  -s       strict: different virtual sizes are a difference\n"
		"  -p       show progress (on a terminal)\n"
		"  -q       quiet: print nothing, only the exit status tells\n"
		"  -U       do not lock the images (--force-share)\n"
		"Exit status: 0 identical, 1 different (the first differing byte offset is\n"
		"printed), 2 error or usage error.\n");
}

int cmd_compare(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "strict", no_argument, NULL, 's' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "progress", no_argument, NULL, 'p' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	static const struct pipeline_ops ops = {
		.claim = compare_claim,
		.produce = compare_produce,
		.consume = compare_consume,
		.report = cmdline_pipeline_report,
	};
	struct compare cmp = { .buf_size = 2u << 20 };
	struct pipeline_config cfg = { .buf_size = cmp.buf_size, .nbufs = 2 };
	const char *format[2] = { NULL, NULL };
	bool strict = false, quiet = false, progress = false;
	unsigned flags = IMG_OPEN_RDONLY;
	int opt, ret, status = COMPARE_ERROR;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hf:F:spqU", longopts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'h':
			compare_usage(stdout);
			return 0;
		case 'f':
			format[0] = optarg;
			break;
		case 'F':
			format[1] = optarg;
			break;
		case 's':
			strict = true;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 'U':
			flags |= IMG_OPEN_NO_LOCK;
			break;
		default:
			return cmdline_bad_option("compare", argv);
		}
	}
	if (argc - optind != 2)
		return tool_usage_error("compare", "needs two images");
	for (int side = 0; side < 2; side++) {
		if (tool_open(&cmp.img[side], argv[optind + side], format[side],
			      flags) < 0)
			goto out;
		cmp.size[side] = img_size(cmp.img[side]);
	}
	cmp.end = cmp.size[0] > cmp.size[1] ? cmp.size[0] : cmp.size[1];
	if (cmp.size[0] != cmp.size[1]) {
		if (strict) {
			if (!quiet)
				printf("Image size mismatch: %" PRIu64
				       " bytes != %" PRIu64 " bytes\n",
				       cmp.size[0], cmp.size[1]);
			status = COMPARE_DIFFERENT;
			goto out;
		}
		if (!quiet)
			fprintf(stderr,
				"imgtool: warning: image sizes differ (%" PRIu64
				" and %" PRIu64
				" bytes); comparing the tail with zeros\n",
				cmp.size[0], cmp.size[1]);
	}
	cmdline_progress_start(&cmp.progress, progress && !quiet, cmp.end);
	ret = pipeline_run(&cfg, &ops, &cmp);
	cmdline_progress_end(&cmp.progress, ret == 0);
	if (ret < 0)
		goto out; /* reported once, by the pipeline */
	if (ret == 1) {
		if (!quiet)
			printf("Content mismatch at offset %" PRIu64 "!\n",
			       cmp.mismatch);
		status = COMPARE_DIFFERENT;
	} else {
		if (!quiet)
			printf("Images are identical.\n");
		status = COMPARE_IDENTICAL;
	}
out:
	for (int side = 0; side < 2; side++)
		if (cmp.img[side])
			img_close(cmp.img[side]);
	return status;
}
