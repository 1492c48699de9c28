/* SPDX-License-Identifier: MIT */
/*
 * imgtool checksum: a digest of the virtual disk's contents, the same for
 * the same contents in any format (sha256sum of the raw disk).
 *
 * Reader threads fetch data in large chunks while this thread hashes;
 * regions that block status reports as zero are hashed from a static zero
 * buffer without being read.
 */
#include "tools/cmdline.h"
#include "tools/pipeline.h"

#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

struct checksum {
	struct img *img;
	uint64_t size;
	uint64_t cursor;
	size_t buf_size;
	EVP_MD_CTX *md;
	uint64_t done;
	struct cmdline_progress progress;
};

static int checksum_claim(void *ctx, struct pipeline_chunk *c)
{
	struct checksum *ck = ctx;
	int ret;

	if (ck->cursor >= ck->size)
		return 0;
	c->off = ck->cursor;
	ret = pipeline_claim_from_status(ck->img, c, ck->cursor,
					 ck->size - ck->cursor, ck->buf_size,
					 1ull << 30);
	if (ret < 0)
		return pipeline_fail(c, ck->img, ret);
	ck->cursor += c->len;
	return 1;
}

static int checksum_produce(void *ctx, struct pipeline_chunk *c)
{
	struct checksum *ck = ctx;
	int ret = pipeline_read_segments(ck->img, c, 0);

	return ret < 0 ? pipeline_fail(c, ck->img, ret) : 0;
}

static int checksum_consume(void *ctx, struct pipeline_chunk *c)
{
	struct checksum *ck = ctx;

	for (int i = 0; i < c->nseg; i++) {
		const struct pipeline_segment *s = &c->seg[i];

		if (s->kind == PIPELINE_SEG_DATA) {
			if (!EVP_DigestUpdate(ck->md,
					      c->buf[0] + (s->off - c->off),
					      s->len))
				goto fail;
			continue;
		}
		for (uint64_t left = s->len; left;) {
			size_t n = left < PIPELINE_ZERO_BUF_SIZE
					   ? left
					   : PIPELINE_ZERO_BUF_SIZE;

			if (!EVP_DigestUpdate(ck->md, pipeline_zero_buf, n))
				goto fail;
			left -= n;
		}
	}
	ck->done += c->len;
	cmdline_progress_update(&ck->progress, ck->done);
	return 0;
fail:
	snprintf(c->errmsg, sizeof(c->errmsg), "checksum: the digest failed");
	return -EIO;
}

static void checksum_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgtool checksum [-a sha256|sha512|md5|ALGORITHM] [-f FMT] [-p] [-U]\n"
		"                        FILE...\n"
		"Print a digest of each image's virtual disk contents, like sha256sum\n"
		"prints for the raw disk: the same contents give the same digest in any\n"
		"format.  Zero and unallocated regions are hashed without being read.\n"
		"\n"
		"  -a ALG   digest algorithm known to OpenSSL (default sha256)\n"
		"  -f FMT   image format (default: probed)\n"
		"  -p       show progress (on a terminal)\n"
		"  -q       quiet (no progress)\n"
		"  -U       do not lock the image (--force-share)\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

static int checksum_one(const char *path, const char *format, unsigned flags,
			const EVP_MD *algorithm, bool progress)
{
	static const struct pipeline_ops ops = {
		.claim = checksum_claim,
		.produce = checksum_produce,
		.consume = checksum_consume,
		.report = cmdline_pipeline_report,
	};
	struct checksum ck = { .buf_size = 4u << 20 };
	struct pipeline_config cfg = { .buf_size = ck.buf_size, .nbufs = 1 };
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	int ret;

	if (tool_open(&ck.img, path, format, flags) < 0)
		return -EIO;
	ck.size = img_size(ck.img);
	ck.md = EVP_MD_CTX_new();
	if (!ck.md || !EVP_DigestInit_ex(ck.md, algorithm, NULL)) {
		tool_error("checksum: cannot set up the digest");
		ret = -ENOMEM;
		goto out;
	}
	cmdline_progress_start(&ck.progress, progress, ck.size);
	ret = pipeline_run(&cfg, &ops, &ck);
	cmdline_progress_end(&ck.progress, ret == 0);
	if (ret < 0)
		goto out; /* reported once, by the pipeline */
	if (!EVP_DigestFinal_ex(ck.md, digest, &digest_len)) {
		tool_error("checksum: the digest failed");
		ret = -EIO;
		goto out;
	}
	for (unsigned i = 0; i < digest_len; i++)
		printf("%02x", digest[i]);
	printf("  %s\n", path);
	ret = 0;
out:
	EVP_MD_CTX_free(ck.md);
	img_close(ck.img);
	return ret;
}

int cmd_checksum(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "algorithm", required_argument, NULL, 'a' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "progress", no_argument, NULL, 'p' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	const char *algorithm_name = "sha256", *format = NULL;
	const EVP_MD *algorithm;
	unsigned flags = IMG_OPEN_RDONLY;
	bool progress = false;
	int opt, status = TOOL_EXIT_OK;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "ha:f:pqU", longopts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'h':
			checksum_usage(stdout);
			return 0;
		case 'a':
			algorithm_name = optarg;
			break;
		case 'f':
			format = optarg;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			progress = false;
			break;
		case 'U':
			flags |= IMG_OPEN_NO_LOCK;
			break;
		default:
			return cmdline_bad_option("checksum", argv);
		}
	}
	if (optind >= argc)
		return tool_usage_error("checksum", "needs an image file");
	algorithm = EVP_get_digestbyname(algorithm_name);
	if (!algorithm)
		return tool_usage_error("checksum",
					"unknown digest algorithm '%s'",
					algorithm_name);
	for (int i = optind; i < argc; i++) {
		fflush(stdout);
		if (checksum_one(argv[i], format, flags, algorithm, progress) <
		    0)
			status = TOOL_EXIT_FAILURE;
	}
	return status;
}
