/* SPDX-License-Identifier: MIT */
/*
 * imgtool compact: give back to the host the clusters that only hold zeros
 * (VBoxManage modifymedium --compact).  Whole zero clusters allocated in
 * this layer are discarded; in a differencing image only where the parent
 * reads zero too, so that the disk reads the same afterwards.
 */
#include "tools/cmdline.h"
#include "tools/pipeline.h"

#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define COMPACT_BUF_SIZE (4u << 20)

struct compact {
	struct img *img;
	uint64_t cluster;
	uint64_t discarded;
	uint8_t *buf;
};

/* Host bytes allocated by the image's files. */
static uint64_t compact_host_usage(const struct img_info *info,
				   const char *path)
{
	uint64_t total = 0;
	struct stat st;

	if (info->nfiles == 0)
		return stat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
	for (int i = 0; i < info->nfiles; i++)
		if (stat(info->files[i], &st) == 0)
			total += (uint64_t)st.st_blocks * 512;
	return total;
}

/* Does the parent chain read [off, off+len) as zero (or is there none)? */
static int compact_parent_is_zero(struct compact *c, uint64_t off, uint64_t len,
				  bool *zero)
{
	struct img *parent = img_backing(c->img);
	uint64_t end = off + len;

	*zero = true;
	if (!parent)
		return 0;
	while (off < end && off < img_size(parent)) {
		struct img_extent ext;
		int ret = img_block_status(parent, off, end - off, &ext);

		if (ret < 0) {
			cmdline_img_error(parent, ret);
			return ret;
		}
		if (!(ext.flags & IMG_EXTENT_ZERO)) {
			*zero = false;
			return 0;
		}
		off += ext.length;
	}
	return 0;
}

static int compact_discard(struct compact *c, uint64_t off, uint64_t len)
{
	bool zero;
	int ret = compact_parent_is_zero(c, off, len, &zero);

	if (ret < 0 || !zero || len == 0)
		return ret;
	ret = img_discard(c->img, off, len);
	if (ret < 0) {
		cmdline_img_error(c->img, ret);
		return ret;
	}
	c->discarded += len;
	return 0;
}

/* Discard the zero clusters of an allocated range (cluster-aligned part). */
static int compact_range(struct compact *c, uint64_t start, uint64_t end,
			 bool known_zero)
{
	uint64_t g = c->cluster;
	uint64_t pos = (start + g - 1) / g * g;
	uint64_t stop = end / g * g;

	if (known_zero)
		return pos < stop ? compact_discard(c, pos, stop - pos) : 0;
	while (pos < stop) {
		uint64_t n = stop - pos < COMPACT_BUF_SIZE ? stop - pos
							   : COMPACT_BUF_SIZE;
		uint64_t run_start = 0, run_len = 0;
		int ret = img_pread(c->img, c->buf, n, pos);

		if (ret < 0) {
			cmdline_img_error(c->img, ret);
			return ret;
		}
		for (uint64_t i = 0; i < n; i += g) {
			if (pipeline_buf_is_zero(c->buf + i, g)) {
				if (!run_len)
					run_start = pos + i;
				run_len += g;
				continue;
			}
			ret = compact_discard(c, run_start, run_len);
			if (ret < 0)
				return ret;
			run_len = 0;
		}
		ret = compact_discard(c, run_start, run_len);
		if (ret < 0)
			return ret;
		pos += n;
	}
	return 0;
}

static void compact_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgtool compact [-f FMT] [-q] FILE\n"
		"Drop the clusters (blocks, grains) of FILE that read as zero, so the\n"
		"host file gets smaller or sparser.  What the disk reads does not change.\n"
		"In a differencing image only clusters whose parent reads zero are dropped.\n"
		"\n"
		"  -f FMT   image format (default: probed)\n"
		"  -q       quiet\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

int cmd_compact(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	struct compact c = { 0 };
	struct img_info *info = NULL;
	const char *format = NULL, *path;
	bool quiet = false;
	uint64_t size, pos = 0, before, after;
	int opt, ret, status = TOOL_EXIT_FAILURE;
	char before_text[32], after_text[32], freed_text[32];

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hf:q", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			compact_usage(stdout);
			return 0;
		case 'f':
			format = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		default:
			return cmdline_bad_option("compact", argv);
		}
	}
	if (argc - optind != 1)
		return tool_usage_error("compact", "needs one image file");
	path = argv[optind];
	if (posix_memalign((void **)&c.buf, 4096, COMPACT_BUF_SIZE)) {
		tool_error("out of memory");
		goto out;
	}
	if (tool_open(&c.img, path, format, IMG_OPEN_RDWR) < 0)
		goto out;
	ret = img_get_info(c.img, &info);
	if (ret < 0) {
		cmdline_img_error(c.img, ret);
		goto out;
	}
	before = compact_host_usage(info, path);
	c.cluster = img_cluster_size(c.img) ? img_cluster_size(c.img) : 4096;
	size = img_size(c.img);
	while (pos < size) {
		struct img_extent ext;
		uint64_t len;

		ret = img_block_status_layer(c.img, pos, size - pos, &ext);
		if (ret < 0) {
			cmdline_img_error(c.img, ret);
			goto out;
		}
		len = ext.length < size - pos ? ext.length : size - pos;
		if (ext.flags & IMG_EXTENT_ALLOCATED) {
			ret = compact_range(&c, pos, pos + len,
					    (ext.flags & IMG_EXTENT_ZERO) != 0);
			if (ret < 0)
				goto out;
		}
		pos += len;
	}
	ret = img_close(c.img);
	c.img = NULL;
	if (ret < 0) {
		tool_error("%s: flush failed: %s", path, strerror(-ret));
		goto out;
	}
	after = compact_host_usage(info, path);
	if (!quiet)
		printf("%s: %s of zero clusters dropped; host usage %s -> %s\n",
		       path,
		       img_format_size(c.discarded, freed_text,
				       sizeof(freed_text)),
		       img_format_size(before, before_text,
				       sizeof(before_text)),
		       img_format_size(after, after_text, sizeof(after_text)));
	status = TOOL_EXIT_OK;
out:
	if (c.img)
		img_close(c.img);
	free(c.buf);
	img_info_free(info);
	return status;
}
