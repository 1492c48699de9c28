/* SPDX-License-Identifier: MIT */
/*
 * imgtool check: verify an image's metadata and optionally repair it.  Exit
 * codes as qemu-img check: 0 clean, 1 the check could not run, 2
 * corruptions, 3 only leaks, 63 the format has no checks.
 */
#include "tools/cmdline.h"

#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

enum {
	CHECK_EXIT_CLEAN = 0,
	CHECK_EXIT_FAILED = 1,
	CHECK_EXIT_CORRUPT = 2,
	CHECK_EXIT_LEAKS = 3,
	CHECK_EXIT_NOT_SUPPORTED = 63,
};

static void check_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgtool check [-f FMT] [-r leaks|all] [--output=human|json] [-q] [-U]\n"
		"                     FILE\n"
		"Check the image's metadata (this layer only, not its backing files).\n"
		"\n"
		"  -r leaks         repair leaked clusters (space used by nothing)\n"
		"  -r all           repair leaks and corruptions\n"
		"  --output=json    print the result as JSON (see imgtool(1))\n"
		"  -f FMT           image format (default: probed)\n"
		"  -q               quiet: print nothing, only the exit status tells\n"
		"  -U               do not lock the image (--force-share; not with -r)\n"
		"Exit status: 0 no errors, 1 the check could not run, 2 corruptions,\n"
		"3 leaked clusters only, 63 the format has no checks (raw); 2 also for\n"
		"usage errors.\n");
}

static void check_print_json(const char *path, const char *format,
			     const struct img_check_result *r)
{
	printf("{\n");
	printf("    \"filename\": ");
	json_write_escaped(stdout, path);
	printf(",\n    \"format\": ");
	json_write_escaped(stdout, format);
	printf(",\n    \"check-errors\": %" PRIu64, r->check_errors);
	printf(",\n    \"corruptions\": %" PRIu64, r->corruptions);
	printf(",\n    \"leaks\": %" PRIu64, r->leaks);
	printf(",\n    \"corruptions-fixed\": %" PRIu64, r->corruptions_fixed);
	printf(",\n    \"leaks-fixed\": %" PRIu64, r->leaks_fixed);
	printf(",\n    \"allocated-clusters\": %" PRIu64,
	       r->allocated_clusters);
	printf(",\n    \"total-clusters\": %" PRIu64, r->total_clusters);
	printf(",\n    \"fragmented-clusters\": %" PRIu64,
	       r->fragmented_clusters);
	printf(",\n    \"image-end-offset\": %" PRIu64, r->image_end_offset);
	printf(",\n    \"messages\": [");
	for (int i = 0; i < r->nmessages; i++) {
		printf("%s\n        ", i ? "," : "");
		json_write_escaped(stdout, r->messages[i]);
	}
	printf("%s]\n}\n", r->nmessages ? "\n    " : "");
}

static void check_print_human(const struct img_check_result *r,
			      const struct img_check_result *fixed)
{
	bool repaired = fixed &&
			(fixed->corruptions_fixed || fixed->leaks_fixed);

	if (!repaired)
		for (int i = 0; i < r->nmessages; i++)
			printf("%s\n", r->messages[i]);
	if (fixed && (fixed->corruptions_fixed || fixed->leaks_fixed)) {
		for (int i = 0; i < fixed->nmessages; i++)
			printf("%s\n", fixed->messages[i]);
		printf("The following inconsistencies were found and repaired:\n");
		if (fixed->leaks_fixed)
			printf("    %" PRIu64 " leaked clusters\n",
			       fixed->leaks_fixed);
		if (fixed->corruptions_fixed)
			printf("    %" PRIu64 " corruptions\n",
			       fixed->corruptions_fixed);
		printf("Checked again after the repair:\n");
		for (int i = 0; i < r->nmessages; i++)
			printf("%s\n", r->messages[i]);
	}
	if (!r->corruptions && !r->leaks && !r->check_errors)
		printf("No errors were found on the image.\n");
	if (r->corruptions)
		printf("%" PRIu64 " errors were found on the image.\n"
		       "Data may be corrupted, or further writes to the image may corrupt it.\n",
		       r->corruptions);
	if (r->leaks)
		printf("%" PRIu64 " leaked clusters were found on the image.\n"
		       "This means waste of disk space, but no harm to data.\n",
		       r->leaks);
	if (r->check_errors)
		printf("%" PRIu64
		       " internal errors have occurred during the check.\n",
		       r->check_errors);
	if (r->total_clusters)
		printf("%" PRIu64 "/%" PRIu64
		       " = %.2f%% allocated, %.2f%% fragmented\n",
		       r->allocated_clusters, r->total_clusters,
		       100.0 * (double)r->allocated_clusters /
			       (double)r->total_clusters,
		       r->allocated_clusters
			       ? 100.0 * (double)r->fragmented_clusters /
					 (double)r->allocated_clusters
			       : 0.0);
	if (r->image_end_offset)
		printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
}

int cmd_check(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, 'o' },
		{ "repair", required_argument, NULL, 'r' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	struct img_check_result *res = NULL, *fixed = NULL;
	const char *format = NULL, *path;
	struct img *img = NULL;
	bool json = false, quiet = false;
	unsigned fix = 0, flags = IMG_OPEN_CHECK | IMG_OPEN_NO_BACKING;
	int opt, ret, status = CHECK_EXIT_FAILED;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hf:r:qU", longopts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'h':
			check_usage(stdout);
			return 0;
		case 'f':
			format = optarg;
			break;
		case 'r':
			if (strcmp(optarg, "leaks") == 0)
				fix = IMG_CHECK_FIX_LEAKS;
			else if (strcmp(optarg, "all") == 0)
				fix = IMG_CHECK_FIX_LEAKS |
				      IMG_CHECK_FIX_ERRORS;
			else
				return tool_usage_error(
					"check", "-r wants leaks or all");
			break;
		case 'o':
			if (tool_parse_output("check", optarg, &json))
				return TOOL_EXIT_USAGE;
			break;
		case 'q':
			quiet = true;
			break;
		case 'U':
			flags |= IMG_OPEN_NO_LOCK;
			break;
		default:
			return cmdline_bad_option("check", argv);
		}
	}
	if (argc - optind != 1)
		return tool_usage_error("check", "needs one image file");
	if (fix && (flags & IMG_OPEN_NO_LOCK))
		return tool_usage_error("check", "-r and -U do not mix");
	path = argv[optind];
	if (fix)
		flags |= IMG_OPEN_RDWR;
	res = calloc(1, sizeof(*res));
	fixed = calloc(1, sizeof(*fixed));
	if (!res || !fixed) {
		tool_error("check: out of memory");
		goto out;
	}
	/* An interrupted snapshot operation is finished (or undone) first:
	 * until then the disk's chain may not open. */
	if (fix) {
		char errbuf[IMG_ERRMSG_MAX];

		ret = img_snapshots_recover(path, format, errbuf,
					    sizeof(errbuf));
		if (ret < 0) {
			tool_error("%s", errbuf);
			goto out;
		}
		if (ret > 0 && !quiet && !json)
			printf("Finished an interrupted snapshot operation.\n");
	}
	if (tool_open(&img, path, format, flags) < 0)
		goto out;

	if (fix) {
		ret = img_check(img, fixed, fix);
		if (ret == 0)
			ret = img_flush(img);
	} else {
		ret = img_check(img, res, 0);
	}
	if (ret == -ENOTSUP || ret == -EOPNOTSUPP) {
		if (!quiet)
			tool_error("%s: format %s has no consistency checks",
				   path, img_format(img));
		status = CHECK_EXIT_NOT_SUPPORTED;
		goto out;
	}
	if (ret < 0) {
		cmdline_img_error(img, ret);
		goto out;
	}
	if (fix) {
		/* Report what is left after the repair, as a fresh check. */
		ret = img_check(img, res, 0);
		if (ret < 0) {
			cmdline_img_error(img, ret);
			goto out;
		}
		res->corruptions_fixed = fixed->corruptions_fixed;
		res->leaks_fixed = fixed->leaks_fixed;
	}
	if (!quiet) {
		if (json)
			check_print_json(path, img_format(img), res);
		else
			check_print_human(res, fix ? fixed : NULL);
	}
	if (res->check_errors)
		status = CHECK_EXIT_FAILED;
	else if (res->corruptions)
		status = CHECK_EXIT_CORRUPT;
	else if (res->leaks)
		status = CHECK_EXIT_LEAKS;
	else
		status = CHECK_EXIT_CLEAN;
out:
	if (img) {
		ret = img_close(img);
		if (ret < 0 && status == CHECK_EXIT_CLEAN) {
			tool_error("%s: flush failed: %s", path,
				   strerror(-ret));
			status = CHECK_EXIT_FAILED;
		}
	}
	free(res);
	free(fixed);
	return status;
}
