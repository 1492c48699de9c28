/* SPDX-License-Identifier: MIT */
/* imgtool create [-f FMT] [-o OPTS] [-b BACKING [-F BFMT]] [-q] FILE [SIZE] */
#include "tools/common.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void create_usage(FILE *out)
{
	fputs("Usage: imgtool create [-f FMT] [-o OPTIONS] [-b BACKING [-F BACKING_FMT]] [-q] FILE [SIZE]\n\nCreate a new image FILE of SIZE bytes (K, M, G, T suffixes).\nWith -b, the image is an overlay of BACKING and SIZE defaults to its size.\n\n  -f FMT          format: raw (default), vdi, vhd, vhdx, vmdk, qcow2\n  -o OPTIONS      key=value,... (-o help lists them)\n  -b BACKING      backing file (relative to FILE's directory)\n  -F BACKING_FMT  backing file's format (default: probed)\n  -q              quiet\n",
	      out);
}

int cmd_create(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'f' },
		{ "options", required_argument, NULL, 'o' },
		{ "backing", required_argument, NULL, 'b' },
		{ "backing-format", required_argument, NULL, 'F' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	struct img_create_options co = { .format = "raw" };
	char err[IMG_ERRMSG_MAX];
	char *opts = NULL;
	bool quiet = false;
	const char *path;
	int c, rc = TOOL_EXIT_FAILURE;

	while ((c = getopt_long(argc, argv, "hf:o:b:F:q", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'h':
			create_usage(stdout);
			rc = TOOL_EXIT_OK;
			goto out;
		case 'f':
			co.format = optarg;
			break;
		case 'o':
			if (tool_append_option(&opts, optarg) < 0)
				goto out;
			break;
		case 'b':
			co.backing_file = optarg;
			break;
		case 'F':
			co.backing_format = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		default:
			rc = tool_usage_error("create", "bad option");
			goto out;
		}
	}
	if (tool_options_ask_help(opts)) {
		if (!img_format_canonical(co.format)) {
			tool_error("unknown format '%s'", co.format);
			goto out;
		}
		tool_print_create_options(stdout, co.format);
		rc = TOOL_EXIT_OK;
		goto out;
	}
	if (optind >= argc) {
		rc = tool_usage_error("create", "no image file given");
		goto out;
	}
	path = argv[optind++];
	if (optind < argc) {
		if (tool_parse_size(argv[optind++], &co.size) < 0) {
			rc = TOOL_EXIT_USAGE;
			goto out;
		}
	} else if (!co.backing_file && !(opts && strstr(opts, "size="))) {
		rc = tool_usage_error("create", "no size given for %s", path);
		goto out;
	}
	if (optind < argc) {
		rc = tool_usage_error("create", "unexpected argument '%s'",
				      argv[optind]);
		goto out;
	}
	co.options = opts;
	if (img_create(path, &co, err, sizeof(err)) < 0) {
		tool_error("%s", err);
		goto out;
	}
	if (!quiet) {
		printf("Formatting '%s', fmt=%s", path,
		       img_format_canonical(co.format));
		if (co.size)
			printf(" size=%" PRIu64, co.size);
		if (co.backing_file)
			printf(" backing_file=%s", co.backing_file);
		if (co.backing_format)
			printf(" backing_fmt=%s", co.backing_format);
		if (opts)
			printf(" %s", opts);
		putchar('\n');
	}
	rc = TOOL_EXIT_OK;
out:
	free(opts);
	return rc;
}
