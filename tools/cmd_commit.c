/* SPDX-License-Identifier: MIT */
/*
 * imgtool commit: merge a differencing image into its parent.
 *
 * The child is opened read-only without its chain and the parent
 * read-write on its own (two open file descriptions of one file would
 * conflict on the OFD lock).  After the copy the child is replaced by an
 * empty child of the same parent (unless -d), so it reads the same.
 */
#include "tools/chain.h"
#include "tools/cmdline.h"

#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void commit_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgtool commit [-f FMT] [-d] [-q] FILE\n"
		"Write what FILE (a differencing image) holds into its backing file.\n"
		"Afterwards FILE is an empty child of the same backing file, so the\n"
		"disk reads the same through it.\n"
		"\n"
		"  -d      keep FILE's contents (do not empty it)\n"
		"  -f FMT  format of FILE (default: probed)\n"
		"  -q      quiet\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

/* Replace path by a fresh, empty child of parent (same format, size). */
static int commit_empty_child(const char *path, const char *format,
			      uint64_t size, const char *parent,
			      const char *parent_format)
{
	struct img_create_options co = {
		.format = format,
		.size = size,
		.backing_format = parent_format,
	};
	char errbuf[IMG_ERRMSG_MAX] = "";
	char *ref = chain_parent_reference(path, parent);
	char *tmp = NULL;
	int ret = -ENOMEM;

	if (!ref || asprintf(&tmp, "%s.commit-tmp", path) < 0) {
		tool_error("%s: cannot name the parent %s", path, parent);
		goto out;
	}
	/* The child's directory is the same for tmp and path, so the
	 * relative reference holds after the rename. */
	co.backing_file = ref;
	ret = img_create(tmp, &co, errbuf, sizeof(errbuf));
	if (ret < 0) {
		tool_error("%s", errbuf[0] ? errbuf : strerror(-ret));
		goto out;
	}
	if (rename(tmp, path) < 0) {
		ret = -errno;
		tool_error("%s: %s", path, strerror(errno));
		unlink(tmp);
	}
out:
	free(ref);
	free(tmp);
	return ret;
}

int cmd_commit(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	const char *format = NULL, *path;
	char parent_path[PATH_MAX], parent_format[32], child_format[32];
	struct img *child = NULL, *parent = NULL;
	bool keep = false, quiet = false;
	uint64_t child_size;
	int opt, ret, status = TOOL_EXIT_FAILURE;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hf:dqt:b:", longopts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'h':
			commit_usage(stdout);
			return 0;
		case 'f':
			format = optarg;
			break;
		case 'd':
			keep = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 't':
			break; /* qemu-img compatibility */
		case 'b':
			return tool_usage_error(
				"commit",
				"-b is not supported: commit merges into the direct parent");
		default:
			return cmdline_bad_option("commit", argv);
		}
	}
	if (argc - optind != 1)
		return tool_usage_error("commit", "needs one image file");
	path = argv[optind];

	/* Find the parent through the normal chain lookup first. */
	if (tool_open(&child, path, format, IMG_OPEN_RDONLY) < 0)
		return TOOL_EXIT_FAILURE;
	if (!img_backing(child)) {
		tool_error("%s: has no backing file; nothing to commit", path);
		goto out;
	}
	snprintf(parent_path, sizeof(parent_path), "%s",
		 img_filename(img_backing(child)));
	snprintf(parent_format, sizeof(parent_format), "%s",
		 img_format(img_backing(child)));
	snprintf(child_format, sizeof(child_format), "%s", img_format(child));
	child_size = img_size(child);
	img_close(child);

	if (tool_open(&child, path, child_format,
		      IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING) < 0)
		goto out;
	if (tool_open(&parent, parent_path, parent_format, IMG_OPEN_RDWR) < 0)
		goto out;
	if (img_size(parent) < child_size) {
		ret = img_resize(parent, child_size, 0);
		if (ret < 0) {
			cmdline_img_error(parent, ret);
			goto out;
		}
	}
	if (chain_copy_layer(child, parent, false) < 0)
		goto out;
	ret = img_close(parent);
	parent = NULL;
	if (ret < 0) {
		tool_error("%s: flush failed: %s", parent_path, strerror(-ret));
		goto out;
	}
	img_close(child);
	child = NULL;
	if (!keep && commit_empty_child(path, child_format, child_size,
					parent_path, parent_format) < 0)
		goto out;
	/* The parent changed: a kept child must record it anew (VMDK CID). */
	if (keep && chain_refresh_child(path, child_format, parent_path,
					parent_format, NULL) < 0)
		goto out;
	if (!quiet)
		printf("Image committed.\n");
	status = TOOL_EXIT_OK;
out:
	if (parent)
		img_close(parent);
	if (child)
		img_close(child);
	return status;
}
