/* SPDX-License-Identifier: MIT */
/* imgtool resize: change the virtual size (shrinking only with --shrink). */
#include "tools/cmdline.h"

#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void resize_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgtool resize [-f FMT] [--shrink] [-q] FILE [+|-]SIZE\n"
		"Set the virtual size of FILE to SIZE, or grow (+) or shrink (-) it by\n"
		"SIZE.  Sizes take K, M, G, T suffixes (powers of 1024).\n"
		"\n"
		"  --shrink   allow the disk to get smaller (data past the new end is lost)\n"
		"  -f FMT     image format (default: probed)\n"
		"  -q         quiet\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

int cmd_resize(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "shrink", no_argument, NULL, 's' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	const char *format = NULL, *path, *text;
	bool shrink = false, quiet = false;
	struct img *img = NULL;
	uint64_t size, old_size, new_size;
	int sign = 0, opt, ret, status = TOOL_EXIT_FAILURE;
	char old_text[48], new_text[48];

	/* "-1G" is a size, not an option: stop getopt at the file name. */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+hf:q", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			resize_usage(stdout);
			return 0;
		case 'f':
			format = optarg;
			break;
		case 's':
			shrink = true;
			break;
		case 'q':
			quiet = true;
			break;
		default:
			return cmdline_bad_option("resize", argv);
		}
	}
	/* Options may also follow the file name. */
	for (int i = optind; i < argc; i++) {
		if (strcmp(argv[i], "--shrink") == 0) {
			shrink = true;
			memmove(&argv[i], &argv[i + 1],
				(size_t)(argc - i - 1) * sizeof(*argv));
			argc--;
			i--;
		}
	}
	if (argc - optind != 2)
		return tool_usage_error("resize", "needs FILE and SIZE");
	path = argv[optind];
	text = argv[optind + 1];
	if (text[0] == '+' || text[0] == '-') {
		sign = text[0] == '+' ? 1 : -1;
		text++;
	}
	if (tool_parse_size(text, &size) < 0)
		return TOOL_EXIT_USAGE;

	if (tool_open(&img, path, format, IMG_OPEN_RDWR) < 0)
		return TOOL_EXIT_FAILURE;
	old_size = img_size(img);
	if (sign > 0) {
		if (old_size + size < old_size) {
			tool_error("%s: the new size is too large", path);
			goto out;
		}
		new_size = old_size + size;
	} else if (sign < 0) {
		if (size > old_size) {
			tool_error("%s: cannot shrink %" PRIu64
				   " bytes by %" PRIu64 " bytes",
				   path, old_size, size);
			goto out;
		}
		new_size = old_size - size;
	} else {
		new_size = size;
	}
	if (new_size < old_size && !shrink) {
		tool_error("%s: the new size is smaller than the current one; "
			   "data past it would be lost (use --shrink)",
			   path);
		goto out;
	}
	ret = img_resize(img, new_size,
			 new_size < old_size ? IMG_RESIZE_SHRINK : 0);
	if (ret < 0) {
		cmdline_img_error(img, ret);
		goto out;
	}
	new_size = img_size(img); /* the format may round it */
	ret = img_close(img);
	img = NULL;
	if (ret < 0) {
		tool_error("%s: flush failed: %s", path, strerror(-ret));
		goto out;
	}
	if (!quiet)
		printf("Image resized from %s to %s.\n",
		       img_format_size(old_size, old_text, sizeof(old_text)),
		       img_format_size(new_size, new_text, sizeof(new_text)));
	status = TOOL_EXIT_OK;
out:
	if (img)
		img_close(img);
	return status;
}
