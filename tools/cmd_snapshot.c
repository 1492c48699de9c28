/* SPDX-License-Identifier: MIT */
/*
 * imgtool snapshot: named states of a disk whose path never changes, by
 * libimg's snapshot module (img_snapshots_* in img.h): inside the file for
 * formats with internal snapshots (qcow2), as read-only layers in
 * FILE.snapshots/ for the others.  This file parses and prints.
 */
#include "tools/chain.h"
#include "tools/cmdline.h"

#include "img.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SNAPSHOT_BACKEND_MAX 256

static void snapshot_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgtool snapshot create FILE NAME\n"
		"       imgtool snapshot list FILE\n"
		"       imgtool snapshot revert [--force] FILE NAME\n"
		"       imgtool snapshot delete FILE NAME\n"
		"Named states of the disk FILE (vdi, vhd, vhdx, vmdk); FILE's path never changes.\n"
		"Formats with internal snapshots (qcow2) keep them inside FILE.\n"
		"\n"
		"  create   keep the current contents as snapshot NAME (a read-only layer\n"
		"           FILE.snapshots/NAME.EXT); FILE becomes a fresh differencing\n"
		"           image over it\n"
		"  list     the chain, newest first: names, dates, sizes\n"
		"  revert   discard everything written since NAME (NAME is kept);\n"
		"           --force also discards snapshots newer than NAME\n"
		"  delete   remove snapshot NAME; what the disk reads does not change\n"
		"  -f FMT   format of FILE (default: probed)\n"
		"  -q       quiet\n"
		"An operation a crash interrupted is finished by the next one (or by\n"
		"imgtool check -r FILE); imgtool serve FILE@NAME exports a snapshot.\n"
		"Exit status: 0 success, 1 failure, 2 usage error.\n");
}

static void snapshot_format_date(int64_t when, char *out, size_t len)
{
	time_t t = (time_t)when;
	struct tm tm;

	snprintf(out, len, "-");
	if (t && localtime_r(&t, &tm))
		strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* The snapshots the storage keeps of FILE itself (RBD), listed after the
 * chain's layers, each readable as the name with @SNAPSHOT. */
static void snapshot_list_backend(const char *file)
{
	struct img_backend_snapshot snaps[SNAPSHOT_BACKEND_MAX];
	char errbuf[IMG_ERRMSG_MAX];
	const char *opts = strlen(file) > 4 ? strchr(file + 4, ':') : NULL;
	int n = img_backend_snapshots(file, snaps, SNAPSHOT_BACKEND_MAX, errbuf,
				      sizeof(errbuf));

	if (n == -ENOTSUP)
		return;
	if (n < 0) {
		tool_error("%s", errbuf);
		return;
	}
	for (int i = 0; i < n && i < SNAPSHOT_BACKEND_MAX; i++) {
		char created[32], vsize[32];

		snapshot_format_date(snaps[i].created, created,
				     sizeof(created));
		img_format_size(snaps[i].size, vsize, sizeof(vsize));
		/* rbd:pool/image@snap:options */
		printf("%-20s %-19s %12s %12s  %.*s@%s%s\n", snaps[i].name,
		       created, vsize, "-",
		       (int)(opts ? (size_t)(opts - file) : strlen(file)), file,
		       snaps[i].name, opts ? opts : "");
	}
}

static int snapshot_list_internal(const struct img_snapshot_entry *list,
				  int count)
{
	printf("%-6s %-20s %-19s %12s\n", "ID", "NAME", "CREATED", "VIRTUAL");
	for (int i = 0; i < count; i++) {
		char created[32], vsize[32];

		snapshot_format_date(list[i].created, created, sizeof(created));
		img_format_size(list[i].virtual_size, vsize, sizeof(vsize));
		printf("%-6s %-20s %-19s %12s\n", list[i].id, list[i].name,
		       created, vsize);
	}
	return 0;
}

/* The whole chain, top first: the disk, its snapshots, the backing files
 * it had before them. */
static int snapshot_list_chain(const char *file, const char *format,
			       const struct img_snapshot_entry *list, int count)
{
	struct img_info *info = NULL;
	struct img *img;
	int ret;

	printf("%-20s %-19s %12s %12s  %s\n", "NAME", "CREATED", "VIRTUAL",
	       "ON DISK", "FILE");
	ret = tool_open(&img, file, format, IMG_OPEN_RDONLY);
	if (ret < 0)
		return ret;
	for (struct img *l = img; l; l = img_backing(l)) {
		const struct img_snapshot_entry *e = NULL;
		char created[32] = "-", vsize[32], asize[32];
		const char *name = "(backing file)";

		img_info_free(info);
		ret = img_get_info(l, &info);
		if (ret < 0) {
			cmdline_img_error(l, ret);
			break;
		}
		for (int i = 0; l != img && i < count && !e; i++)
			if (chain_same_file(list[i].path, img_filename(l)))
				e = &list[i];
		if (l == img)
			name = "(current)";
		if (e) {
			name = e->name;
			snapshot_format_date(e->created, created,
					     sizeof(created));
		}
		img_format_size(img_size(l), vsize, sizeof(vsize));
		img_format_size(info->actual_size, asize, sizeof(asize));
		printf("%-20s %-19s %12s %12s  %s\n", name, created, vsize,
		       asize, img_filename(l));
	}
	img_info_free(info);
	img_close(img);
	snapshot_list_backend(file);
	return ret;
}

static int snapshot_run(struct img_snapshots *snaps, const char *file,
			const char *format, const char *action,
			const char *name, bool force)
{
	struct img_snapshot_entry *list;
	int count, ret;

	if (strcmp(action, "list") == 0) {
		ret = img_snapshots_list(snaps, &list, &count);
		if (ret < 0)
			return ret;
		ret = img_snapshots_kind(snaps) == IMG_SNAPSHOT_INTERNAL
			      ? snapshot_list_internal(list, count)
			      : snapshot_list_chain(file, format, list, count);
		free(list);
		return ret == 0 ? 0 : 1;
	}
	if (strcmp(action, "create") == 0)
		return img_snapshots_create(snaps, name);
	if (strcmp(action, "revert") == 0)
		return img_snapshots_revert(
			snaps, name,
			force ? IMG_SNAPSHOT_REVERT_DISCARD_NEWER : 0);
	return img_snapshots_delete(snaps, name);
}

int cmd_snapshot(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force", no_argument, NULL, 'F' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	const char *format = NULL, *action, *name = NULL, *file;
	struct img_snapshots *snaps;
	char errbuf[IMG_ERRMSG_MAX];
	bool force = false, quiet = false, list;
	int opt, ret;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hf:q", longopts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			snapshot_usage(stdout);
			return 0;
		case 'f':
			format = optarg;
			break;
		case 'F':
			force = true;
			break;
		case 'q':
			quiet = true;
			break;
		default:
			return cmdline_bad_option("snapshot", argv);
		}
	}
	if (argc - optind < 2)
		return tool_usage_error("snapshot", "needs an action and FILE");
	action = argv[optind];
	file = argv[optind + 1];
	if (argc - optind > 2)
		name = argv[optind + 2];
	list = strcmp(action, "list") == 0;
	if (list) {
		if (name)
			return tool_usage_error("snapshot",
						"list takes only FILE");
	} else if (!strcmp(action, "create") || !strcmp(action, "revert") ||
		   !strcmp(action, "delete")) {
		if (!name || argc - optind != 3)
			return tool_usage_error(
				"snapshot", "%s needs FILE and NAME", action);
		if (!img_snapshot_tag_valid(name) && !strcmp(action, "create"))
			return tool_usage_error(
				"snapshot",
				"invalid name '%s' (letters, digits, . _ - + @; at most %d)",
				name, IMG_SNAPSHOT_TAG_MAX);
	} else {
		return tool_usage_error("snapshot", "unknown action '%s'",
					action);
	}

	ret = img_snapshots_open(&snaps, file, format,
				 list ? IMG_OPEN_RDONLY : IMG_OPEN_RDWR, errbuf,
				 sizeof(errbuf));
	if (ret < 0) {
		tool_error("%s", errbuf);
		return TOOL_EXIT_FAILURE;
	}
	ret = snapshot_run(snaps, file, format, action, name, force);
	if (ret < 0)
		tool_error("%s%s", img_snapshots_errmsg(snaps),
			   ret == -ENOTEMPTY
				   ? " (use --force, or delete it first)"
				   : "");
	if (img_snapshots_close(snaps) < 0 && ret == 0) {
		tool_error("%s: flush failed", file);
		ret = -EIO;
	}
	if (ret == 0 && !quiet && !list)
		printf("Snapshot '%s' %s.\n", name,
		       !strcmp(action, "create")   ? "created"
		       : !strcmp(action, "revert") ? "restored"
						   : "deleted");
	return ret == 0 ? TOOL_EXIT_OK : TOOL_EXIT_FAILURE;
}
