/* SPDX-License-Identifier: MIT */
/*
 * imgtool convert: copy one or more images (concatenated) into a new image
 * of any format, or into an existing one (-n).
 *
 * The copy runs through the read-ahead pipeline: reader threads ask block
 * status to skip what is unallocated or zero without reading it, read the
 * rest in large chunks and find zero runs; this thread writes in order, so
 * a target opened IMG_OPEN_SEQUENTIAL (streamOptimized) sees strictly
 * ascending writes.
 */
#include "tools/chain.h"
#include "tools/cmdline.h"
#include "tools/pipeline.h"

#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A zero run longer than this is still cut into several chunks, so that
 * progress moves and a huge sparse disk does not look stuck. */
#define CONVERT_MAX_ZERO_CHUNK (1ull << 30)

struct convert_source {
	struct img *img;
	uint64_t size;
	uint64_t start; /* where it begins in the concatenated stream */
};

struct convert {
	struct convert_source *src;
	int nsrc;
	uint64_t total;
	struct img *dst;
	/* -B: the target's parent; only what differs from it is written. */
	struct img *backing;
	bool existing;	      /* -n: the target holds old data */
	bool fully_allocate;  /* -S 0: write zeros too */
	uint64_t granularity; /* zero detection block, bytes */
	size_t buf_size;
	/* claim cursor, under the pipeline lock */
	int cur_src;
	uint64_t cur_off;
	uint64_t done;
	struct cmdline_progress progress;
	/* The copy's failure, kept to be reported in one line with what
	 * became of the target this run created. */
	int failure;
	char failure_msg[IMG_ERRMSG_MAX];
};

static int convert_claim(void *ctx, struct pipeline_chunk *c)
{
	struct convert *cv = ctx;
	struct convert_source *s;
	int ret;

	while (cv->cur_src < cv->nsrc &&
	       cv->cur_off >= cv->src[cv->cur_src].size) {
		cv->cur_src++;
		cv->cur_off = 0;
	}
	if (cv->cur_src == cv->nsrc)
		return 0;
	s = &cv->src[cv->cur_src];
	c->source = cv->cur_src;
	c->off = s->start + cv->cur_off;
	ret = pipeline_claim_from_status(s->img, c, cv->cur_off,
					 s->size - cv->cur_off, cv->buf_size,
					 CONVERT_MAX_ZERO_CHUNK);
	if (ret < 0)
		return pipeline_fail(c, s->img, ret);
	cv->cur_off += c->len;
	return 1;
}

/* Read [off, off+len) of the backing image into buf, zeros past its end. */
static int convert_read_backing(struct convert *cv, uint8_t *buf, uint64_t off,
				uint64_t len)
{
	uint64_t bsize = img_size(cv->backing);
	uint64_t inside = 0;

	if (off < bsize)
		inside = bsize - off < len ? bsize - off : len;
	if (inside) {
		int ret = img_pread(cv->backing, buf, inside, off);

		if (ret < 0)
			return ret;
	}
	memset(buf + inside, 0, len - inside);
	return 0;
}

/* A run the source reads as zero: SAME where the backing reads zero too,
 * ZERO (write zeros) where it does not. */
static int convert_zero_vs_backing(struct convert *cv, struct pipeline_chunk *c,
				   const struct pipeline_segment *s)
{
	uint64_t bsize = img_size(cv->backing);
	uint64_t pos = s->off, end = s->off + s->len;

	while (pos < end) {
		struct img_extent ext;
		uint64_t len;
		int ret;

		if (pos >= bsize) {
			pipeline_segment_append(c->out, &c->nout,
						c->max_segments, pos, end - pos,
						PIPELINE_SEG_SAME);
			break;
		}
		len = (end < bsize ? end : bsize) - pos;
		ret = img_block_status(cv->backing, pos, len, &ext);
		if (ret < 0)
			return ret;
		len = ext.length < len ? ext.length : len;
		if (ext.flags & IMG_EXTENT_ZERO) {
			pipeline_segment_append(c->out, &c->nout,
						c->max_segments, pos, len,
						PIPELINE_SEG_SAME);
		} else if (c->len <= cv->buf_size) {
			/* Small enough to look at: the parent may hold
			 * zeros in allocated blocks. */
			uint8_t *b = c->buf[1] + (pos - c->off);

			ret = convert_read_backing(cv, b, pos, len);
			if (ret < 0)
				return ret;
			pipeline_segment_append(c->out, &c->nout,
						c->max_segments, pos, len,
						pipeline_buf_is_zero(b, len)
							? PIPELINE_SEG_SAME
							: PIPELINE_SEG_ZERO);
		} else {
			pipeline_segment_append(c->out, &c->nout,
						c->max_segments, pos, len,
						PIPELINE_SEG_ZERO);
		}
		pos += len;
	}
	return 0;
}

/* Keep only what differs from the backing image (convert -B). */
static int convert_diff_backing(struct convert *cv, struct pipeline_chunk *c)
{
	uint64_t g = cv->granularity ? cv->granularity : 4096;
	int n = c->nout;

	/* seg[] is no longer needed: it holds the input of this pass. */
	memcpy(c->seg, c->out, (size_t)n * sizeof(*c->out));
	c->nseg = n;
	c->nout = 0;
	for (int i = 0; i < n; i++) {
		const struct pipeline_segment *s = &c->seg[i];
		uint64_t rel = s->off - c->off;
		int ret;

		if (s->kind == PIPELINE_SEG_ZERO) {
			ret = convert_zero_vs_backing(cv, c, s);
			if (ret < 0)
				return ret;
			continue;
		}
		ret = convert_read_backing(cv, c->buf[1] + rel, s->off, s->len);
		if (ret < 0)
			return ret;
		for (uint64_t pos = s->off; pos < s->off + s->len;) {
			uint64_t next = (pos / g + 1) * g;
			uint64_t r = pos - c->off;
			bool same;

			if (next > s->off + s->len)
				next = s->off + s->len;
			same = memcmp(c->buf[0] + r, c->buf[1] + r,
				      next - pos) == 0;
			pipeline_segment_append(
				c->out, &c->nout, c->max_segments, pos,
				next - pos,
				same ? PIPELINE_SEG_SAME : PIPELINE_SEG_DATA);
			pos = next;
		}
	}
	return 0;
}

static int convert_produce(void *ctx, struct pipeline_chunk *c)
{
	struct convert *cv = ctx;
	int ret;

	ret = pipeline_read_segments(cv->src[c->source].img, c, 0);
	if (ret < 0)
		return pipeline_fail(c, cv->src[c->source].img, ret);
	pipeline_detect_zeroes(c, cv->fully_allocate ? 0 : cv->granularity,
			       cv->granularity);
	if (cv->backing) {
		ret = convert_diff_backing(cv, c);
		if (ret < 0)
			pipeline_fail(c, cv->backing, ret);
	}
	return ret;
}

/* Write explicit zeros (a fully allocated target). */
static int convert_write_zero_buffers(struct img *dst, uint64_t off,
				      uint64_t len)
{
	while (len) {
		size_t n = len < PIPELINE_ZERO_BUF_SIZE
				   ? len
				   : PIPELINE_ZERO_BUF_SIZE;
		int ret = img_pwrite(dst, pipeline_zero_buf, n, off);

		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

/* -n: zero the range where the target does not already read as zero. */
static int convert_zero_existing(struct convert *cv, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;

	while (off < end) {
		struct img_extent ext;
		uint64_t n;
		int ret = img_block_status(cv->dst, off, end - off, &ext);

		if (ret < 0)
			return ret;
		n = ext.length < end - off ? ext.length : end - off;
		if (!(ext.flags & IMG_EXTENT_ZERO)) {
			ret = img_write_zeroes(
				cv->dst, off, n,
				cv->fully_allocate ? 0 : IMG_ZERO_MAY_UNMAP);
			if (ret < 0)
				return ret;
		}
		off += n;
	}
	return 0;
}

static int convert_consume(void *ctx, struct pipeline_chunk *c)
{
	struct convert *cv = ctx;
	int ret = 0;

	for (int i = 0; i < c->nout && ret == 0; i++) {
		const struct pipeline_segment *s = &c->out[i];

		switch (s->kind) {
		case PIPELINE_SEG_DATA:
			ret = img_pwrite(cv->dst, c->buf[0] + (s->off - c->off),
					 s->len, s->off);
			break;
		case PIPELINE_SEG_ZERO:
			if (cv->existing)
				ret = convert_zero_existing(cv, s->off, s->len);
			else if (cv->backing)
				ret = img_write_zeroes(cv->dst, s->off, s->len,
						       0);
			else if (cv->fully_allocate)
				ret = convert_write_zero_buffers(
					cv->dst, s->off, s->len);
			/* else: a fresh target already reads zero */
			break;
		case PIPELINE_SEG_SAME:
			break;
		}
	}
	if (ret < 0)
		return pipeline_fail(c, cv->dst, ret);
	cv->done += c->len;
	cmdline_progress_update(&cv->progress, cv->done);
	return 0;
}

static void convert_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgtool convert [-f FMT] [-O FMT] [-o OPTS] [-c] [-p] [-q] [-n]\n"
		"                       [-S SIZE] [-B BACKING [-F BFMT]] [-m N] [-U] [-l SNAP]\n"
		"                       SRC... DST\n"
		"Copy the virtual disk of SRC (several SRCs are concatenated) into DST,\n"
		"flattening backing chains.  Unallocated and zero regions are not written.\n"
		"\n"
		"  -f FMT       source format (default: probed)\n"
		"  -O FMT       target format: raw, vdi, vhd (vpc), vhdx, vmdk, qcow2\n"
		"               (default raw)\n"
		"  -o OPTS      target create options, e.g. subformat=fixed,cluster_size=1M\n"
		"               (-o help lists them for -O FMT)\n"
		"  -l SNAPSHOT  read the source's internal snapshot SNAPSHOT (qcow2)\n"
		"  -c           compress (vmdk: subformat=streamOptimized; qcow2:\n"
		"               zlib-compressed clusters)\n"
		"  -n           write into the existing DST, do not create it\n"
		"  -S SIZE      zero runs of at least SIZE bytes are left sparse (default 4K;\n"
		"               0 writes every byte: a fully allocated target)\n"
		"  -B BACKING   make DST a differencing image over BACKING and write only\n"
		"               what differs from it (BACKING is relative to DST's dir)\n"
		"  -F BFMT      format of BACKING (default: probed)\n"
		"  -m N         reader threads (default: 2 per CPU, at most 8)\n"
		"  -t CACHE     target cache mode: none (default: bypass the host page\n"
		"               cache where the format can) or writeback\n"
		"  -T CACHE     source cache mode: writeback (default) or none\n"
		"  -p           show progress with throughput and ETA (on a terminal)\n"
		"  -q           quiet\n"
		"  -U           do not lock the sources (--force-share)\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

/* Creating the target truncates it: refuse when it is one of the files the
 * sources read (an image, a backing file, an extent). */
static bool convert_target_is_source(struct convert *cv, const char *dst)
{
	struct img_info *info;
	struct stat st;
	bool same = false;

	if (stat(dst, &st) < 0)
		return false;
	for (int i = 0; i < cv->nsrc && !same; i++) {
		for (struct img *l = cv->src[i].img; l && !same;
		     l = img_backing(l)) {
			same = chain_same_file(dst, img_filename(l));
			if (same || img_get_info(l, &info) < 0)
				continue;
			for (int f = 0; f < info->nfiles && !same; f++)
				same = chain_same_file(dst, info->files[f]);
			img_info_free(info);
		}
	}
	if (same)
		tool_error("%s: the target is also read as a source; "
			   "converting onto it would destroy it",
			   dst);
	return same;
}

static void convert_report(void *ctx, int err, const char *msg)
{
	struct convert *cv = ctx;

	cv->failure = err < 0 ? err : -EIO;
	snprintf(cv->failure_msg, sizeof(cv->failure_msg), "%s",
		 msg ? msg : "");
}

/* On failure, remove what a target this run created is stored in (files,
 * an RBD image; an NBD export is the server's and stays), and report the
 * failure (when one was kept) and what became of the target in one line;
 * a removal that fails is said in any case. */
static void convert_discard_target(struct convert *cv, const char *path)
{
	char errbuf[IMG_ERRMSG_MAX] = "", note[IMG_ERRMSG_MAX + 64];
	struct img_info *info = NULL;
	int ret = 0;

	if (cv->dst) {
		img_get_info(cv->dst, &info);
		img_close(cv->dst);
		cv->dst = NULL;
	}
	for (int i = 0; info && i < info->nfiles; i++)
		if (strcmp(info->files[i], path) != 0 && ret == 0)
			ret = img_remove(info->files[i], errbuf,
					 sizeof(errbuf));
	if (ret == 0 || ret == -ENOTSUP)
		ret = img_remove(path, errbuf, sizeof(errbuf));
	img_info_free(info);
	if (ret == -ENOTSUP)
		snprintf(note, sizeof(note),
			 "the incomplete target stays where it is (%s)",
			 errbuf);
	else if (ret < 0)
		snprintf(note, sizeof(note),
			 "the incomplete target could not be removed: %s",
			 errbuf);
	else
		snprintf(note, sizeof(note),
			 "the incomplete target was removed");
	if (cv->failure)
		cmdline_report_error_note(cv->failure_msg, cv->failure, note);
	else if (ret < 0)
		tool_error("%s: %s", path, note);
}

int cmd_convert(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "progress", no_argument, NULL, 'p' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	struct convert cv = { .granularity = 4096 };
	const char *src_format = NULL, *dst_format = "raw",
		   *compressed_subformat;
	const char *options = NULL, *backing = NULL, *backing_format = NULL;
	const char *dst_path, *canonical;
	char *create_options = NULL;
	bool progress = false, compress = false, created = false;
	const char *snapshot = NULL;
	bool format_given = false;
	unsigned src_flags = IMG_OPEN_RDONLY;
	/* Data written once and not read back: bypassing the page cache
	 * (where the format supports it) spares the final flush and keeps
	 * the writer out of the kernel's dirty-page throttling. */
	unsigned dst_flags = IMG_OPEN_DIRECT;
	int workers = 0;
	int opt, ret, status = TOOL_EXIT_FAILURE;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hf:O:o:cnpqS:B:F:b:m:UWt:T:l:",
				  longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			convert_usage(stdout);
			return 0;
		case 'f':
			src_format = optarg;
			break;
		case 'O':
			dst_format = optarg;
			format_given = true;
			break;
		case 'o':
			/* several -o accumulate, as with qemu-img */
			if (tool_append_option(&create_options, optarg) < 0)
				return TOOL_EXIT_FAILURE;
			options = create_options;
			break;
		case 'c':
			compress = true;
			break;
		case 'l':
			snapshot = optarg;
			break;
		case 'n':
			cv.existing = true;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			progress = false;
			break;
		case 'S':
			if (tool_parse_size(optarg, &cv.granularity) < 0)
				return TOOL_EXIT_USAGE;
			break;
		case 'B':
		case 'b':
			backing = optarg;
			break;
		case 'F':
			backing_format = optarg;
			break;
		case 'm':
			workers = atoi(optarg);
			if (workers < 1 || workers > 8)
				return tool_usage_error(
					"convert", "-m wants 1 to 8, not '%s'",
					optarg);
			break;
		case 'U':
			src_flags |= IMG_OPEN_NO_LOCK;
			break;
		case 't':
			/* qemu-img's cache modes: "none"/"directsync" bypass
			 * the host page cache (our default), the others
			 * ("writeback", "unsafe", ...) use it. */
			if (!strcmp(optarg, "none") ||
			    !strcmp(optarg, "directsync"))
				dst_flags |= IMG_OPEN_DIRECT;
			else
				dst_flags &= ~(unsigned)IMG_OPEN_DIRECT;
			break;
		case 'T':
			if (!strcmp(optarg, "none") ||
			    !strcmp(optarg, "directsync"))
				src_flags |= IMG_OPEN_DIRECT;
			break;
		case 'W':
			break; /* qemu-img compatibility; always ordered */
		default:
			return cmdline_bad_option("convert", argv);
		}
	}
	canonical = img_format_canonical(dst_format);
	if (!canonical) {
		tool_error("convert: unknown format '%s'", dst_format);
		return TOOL_EXIT_USAGE;
	}
	dst_format = canonical;
	if (tool_options_ask_help(options)) {
		tool_print_create_options(stdout, dst_format);
		free(create_options);
		return TOOL_EXIT_OK;
	}
	/* A format compresses as one of its subformats (VMDK's
	 * streamOptimized), or when asked at open (IMG_OPEN_COMPRESS), or
	 * refuses there. */
	compressed_subformat = img_format_compressed_subformat(dst_format);
	if (compress && !compressed_subformat) {
		dst_flags |= IMG_OPEN_COMPRESS;
		compress = false;
	}
	if (argc - optind < 2 || (backing && cv.existing)) {
		free(create_options);
		if (argc - optind < 2)
			return tool_usage_error("convert",
						"needs a source and a target");
		if (compress)
			return tool_usage_error(
				"convert", "format %s cannot compress (-c)",
				dst_format);
		return tool_usage_error("convert",
					"-B creates the target; not with -n");
	}
	if (compress) {
		char opt[64];

		snprintf(opt, sizeof(opt), "subformat=%s",
			 compressed_subformat);
		if (tool_append_option(&create_options, opt) < 0)
			return TOOL_EXIT_FAILURE;
		options = create_options;
	}
	cv.fully_allocate = cv.granularity == 0;
	if (cv.granularity && cv.granularity < IMG_SECTOR_SIZE)
		cv.granularity = IMG_SECTOR_SIZE;
	/* 8 MiB pieces: with O_DIRECT each write is synchronous, and the
	 * block layer splits a large one into requests that run at once
	 * (full 1 GiB vmdk->vdi 15-25 % faster than with 2 MiB pieces).
	 * Zero detection works in aligned blocks of at most a buffer. */
	cv.buf_size = 8u << 20;
	if (cv.granularity > cv.buf_size)
		cv.granularity = cv.buf_size;
	dst_path = argv[argc - 1];

	cv.nsrc = argc - optind - 1;
	cv.src = calloc(cv.nsrc, sizeof(*cv.src));
	if (!cv.src)
		goto out;
	for (int i = 0; i < cv.nsrc; i++) {
		struct convert_source *s = &cv.src[i];

		if (tool_open(&s->img, argv[optind + i], src_format,
			      src_flags) < 0)
			goto out;
		/* -l: read an internal snapshot of the (single) source. */
		if (snapshot && img_snapshot_load(s->img, snapshot) < 0) {
			tool_error("%s", img_errmsg(s->img));
			goto out;
		}
		s->size = img_size(s->img);
		s->start = cv.total;
		cv.total += s->size;
	}

	if (convert_target_is_source(&cv, dst_path))
		goto out;

	if (cv.existing) {
		if (tool_open(&cv.dst, dst_path,
			      format_given ? dst_format : NULL,
			      IMG_OPEN_RDWR) < 0)
			goto out;
		if (img_size(cv.dst) < cv.total) {
			tool_error(
				"%s: target is smaller (%llu bytes) than the source (%llu bytes)",
				dst_path, (unsigned long long)img_size(cv.dst),
				(unsigned long long)cv.total);
			goto out;
		}
	} else {
		struct img_create_options co = {
			.format = dst_format,
			.size = cv.total,
			.backing_file = backing,
			.backing_format = backing_format,
			.options = options,
		};
		char errbuf[IMG_ERRMSG_MAX] = "";
		unsigned flags = IMG_OPEN_RDWR | dst_flags;

		ret = img_create(dst_path, &co, errbuf, sizeof(errbuf));
		if (ret < 0) {
			tool_error("%s", errbuf[0] ? errbuf : strerror(-ret));
			goto out;
		}
		created = true;
		if (!backing)
			flags |= IMG_OPEN_SEQUENTIAL;
		if (tool_open(&cv.dst, dst_path, dst_format, flags) < 0)
			goto out;
		if (backing) {
			cv.backing = img_backing(cv.dst);
			if (!cv.backing) {
				tool_error("%s: backing file %s was not opened",
					   dst_path, backing);
				goto out;
			}
		}
	}

	{
		struct pipeline_config cfg = {
			.buf_size = cv.buf_size,
			.nbufs = cv.backing ? 2 : 1,
			.workers = workers,
		};
		static const struct pipeline_ops ops = {
			.claim = convert_claim,
			.produce = convert_produce,
			.consume = convert_consume,
			.report = convert_report,
		};

		cmdline_progress_start(&cv.progress, progress, cv.total);
		ret = pipeline_run(&cfg, &ops, &cv);
		cmdline_progress_end(&cv.progress, ret == 0);
		if (ret < 0) {
			if (!created) /* else with the target's removal */
				cmdline_report_error(cv.failure_msg,
						     cv.failure);
			goto out;
		}
	}
	ret = img_close(cv.dst);
	cv.dst = NULL;
	if (ret < 0) {
		cv.failure = ret;
		snprintf(cv.failure_msg, sizeof(cv.failure_msg),
			 "%s: flush failed: %s", dst_path, strerror(-ret));
		if (!created)
			tool_error("%s", cv.failure_msg);
		goto out;
	}
	status = TOOL_EXIT_OK;
out:
	if (created && status != TOOL_EXIT_OK)
		convert_discard_target(&cv, dst_path);
	else if (cv.dst)
		img_close(cv.dst);
	for (int i = 0; cv.src && i < cv.nsrc; i++)
		if (cv.src[i].img)
			img_close(cv.src[i].img);
	free(cv.src);
	free(create_options);
	return status;
}
