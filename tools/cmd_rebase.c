/* SPDX-License-Identifier: MIT */
/*
 * imgtool rebase: give an image a new backing file.
 *
 * Safe mode (the default) keeps what the disk reads: every range the
 * image does not hold itself and where the old chain and the new parent
 * read differently is first written into the image.  -u only rewrites the
 * reference (for a parent that was moved or renamed).
 */
#include "tools/chain.h"
#include "tools/cmdline.h"

#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#define REBASE_BUF_SIZE (2u << 20)

static void rebase_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgtool rebase [-f FMT] [-u] [-p] [-q] -b NEWPARENT [-F FMT] FILE\n"
		"Make NEWPARENT the backing file of FILE.  NEWPARENT is recorded as\n"
		"given and, when relative, is relative to FILE's directory; -b \"\"\n"
		"makes FILE standalone.\n"
		"\n"
		"  -u        unsafe: only change the reference (the old parent may be\n"
		"            gone; the new one must have the same contents)\n"
		"  -F FMT    format of NEWPARENT (default: probed)\n"
		"  -f FMT    format of FILE (default: probed)\n"
		"  -p        show progress (on a terminal)\n"
		"  -q        quiet\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

/* Read [off, off+len) of img, zeros past its end (img may be NULL). */
static int rebase_read(struct img *img, uint8_t *buf, uint64_t off,
		       uint64_t len)
{
	uint64_t inside = 0;

	if (img && off < img_size(img))
		inside = img_size(img) - off < len ? img_size(img) - off : len;
	if (inside) {
		int ret = img_pread(img, buf, inside, off);

		if (ret < 0) {
			cmdline_img_error(img, ret);
			return ret;
		}
	}
	memset(buf + inside, 0, len - inside);
	return 0;
}

/* Write into img, within [off, off+len) where the image has nothing of its
 * own, every cluster where the old chain and new_parent differ. */
static int rebase_preserve(struct img *img, struct img *new_parent,
			   uint64_t off, uint64_t len, uint8_t *old_buf,
			   uint8_t *new_buf)
{
	uint64_t g = img_cluster_size(img) ? img_cluster_size(img) : 65536;
	int ret;

	while (len) {
		uint64_t n = len < REBASE_BUF_SIZE ? len : REBASE_BUF_SIZE;

		ret = img_pread(img, old_buf, n, off);
		if (ret < 0) {
			cmdline_img_error(img, ret);
			return ret;
		}
		ret = rebase_read(new_parent, new_buf, off, n);
		if (ret < 0)
			return ret;
		for (uint64_t pos = 0; pos < n;) {
			uint64_t next = ((off + pos) / g + 1) * g - off;

			if (next > n)
				next = n;
			if (memcmp(old_buf + pos, new_buf + pos, next - pos)) {
				ret = img_pwrite(img, old_buf + pos, next - pos,
						 off + pos);
				if (ret < 0) {
					cmdline_img_error(img, ret);
					return ret;
				}
			}
			pos = next;
		}
		off += n;
		len -= n;
	}
	return 0;
}

int cmd_rebase(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "progress", no_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	const char *format = NULL, *new_format = NULL, *new_ref = NULL, *path;
	struct img *img = NULL, *new_parent = NULL;
	uint8_t *old_buf = NULL, *new_buf = NULL;
	bool unsafe = false, quiet = false, progress = false;
	struct cmdline_progress bar;
	char *new_path = NULL;
	uint64_t size, pos = 0;
	unsigned flags = IMG_OPEN_RDWR;
	int opt, ret, status = TOOL_EXIT_FAILURE;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hf:F:b:upqt:T:", longopts,
				  NULL)) != -1) {
		switch (opt) {
		case 'h':
			rebase_usage(stdout);
			return 0;
		case 'f':
			format = optarg;
			break;
		case 'F':
			new_format = optarg;
			break;
		case 'b':
			new_ref = optarg;
			break;
		case 'u':
			unsafe = true;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 't':
		case 'T':
			break;
		default:
			return cmdline_bad_option("rebase", argv);
		}
	}
	if (argc - optind != 1)
		return tool_usage_error("rebase", "needs one image file");
	if (!new_ref)
		return tool_usage_error(
			"rebase", "-b NEWPARENT is required (\"\" for none)");
	path = argv[optind];
	if (unsafe)
		flags |= IMG_OPEN_NO_BACKING;

	if (new_ref[0]) {
		new_path = cmdline_path_relative_to(path, new_ref);
		if (!new_path) {
			tool_error("out of memory");
			return TOOL_EXIT_FAILURE;
		}
		if (tool_open(&new_parent, new_path, new_format,
			      IMG_OPEN_RDONLY) < 0)
			goto out;
	}
	if (tool_open(&img, path, format, flags) < 0)
		goto out;

	if (!unsafe) {
		if (posix_memalign((void **)&old_buf, 4096, REBASE_BUF_SIZE) ||
		    posix_memalign((void **)&new_buf, 4096, REBASE_BUF_SIZE)) {
			tool_error("out of memory");
			goto out;
		}
		size = img_size(img);
		cmdline_progress_start(&bar, progress && !quiet, size);
		while (pos < size) {
			struct img_extent ext;
			uint64_t len;

			ret = img_block_status_layer(img, pos, size - pos,
						     &ext);
			if (ret < 0) {
				cmdline_img_error(img, ret);
				goto out;
			}
			len = ext.length < size - pos ? ext.length : size - pos;
			if (!(ext.flags & IMG_EXTENT_ALLOCATED)) {
				ret = rebase_preserve(img, new_parent, pos, len,
						      old_buf, new_buf);
				if (ret < 0)
					goto out;
			}
			pos += len;
			cmdline_progress_update(&bar, pos);
		}
		cmdline_progress_end(&bar, true);
		ret = img_flush(img);
		if (ret < 0) {
			cmdline_img_error(img, ret);
			goto out;
		}
	}
	ret = img_set_backing(img, new_ref[0] ? new_ref : NULL,
			      new_parent ? img_format(new_parent) : NULL,
			      new_parent);
	if (ret < 0) {
		cmdline_img_error(img, ret);
		goto out;
	}
	ret = img_close(img);
	img = NULL;
	if (ret < 0) {
		tool_error("%s: flush failed: %s", path, strerror(-ret));
		goto out;
	}
	status = TOOL_EXIT_OK;
out:
	if (img)
		img_close(img);
	if (new_parent)
		img_close(new_parent);
	free(old_buf);
	free(new_buf);
	free(new_path);
	return status;
}
