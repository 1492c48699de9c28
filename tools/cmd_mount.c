/* SPDX-License-Identifier: MIT */
/*
 * imgtool mount: show an image as files through FUSE (fuse/imgfs.c).
 * Detaches by default once the mount is up, so open and mount errors
 * still reach the terminal and the exit status.
 */
#include "fuse/imgfs.h"
#include "img.h"
#include "tools/common.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void mount_usage(FILE *out)
{
	fprintf(out,
		"usage: imgtool mount [-o ro|rw[,allow_other]] [--foreground] "
		"[--format FMT]\n                     "
		"FILE MOUNTPOINT\n"
		"Shows FILE as MOUNTPOINT/disk and MOUNTPOINT/partN; "
		"imgtool umount MOUNTPOINT ends it.\n");
}

/* -o takes a comma list: ro, rw, allow_other. */
static int mount_parse_options(const char *list, bool *read_only,
			       bool *allow_other)
{
	char *copy = strdup(list), *save = NULL, *tok;
	int r = 0;

	if (!copy)
		return -1;
	for (tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (!strcmp(tok, "ro"))
			*read_only = true;
		else if (!strcmp(tok, "rw"))
			*read_only = false;
		else if (!strcmp(tok, "allow_other"))
			*allow_other = true;
		else {
			fprintf(stderr, "imgtool mount: unknown option -o %s\n",
				tok);
			r = -1;
		}
	}
	free(copy);
	return r;
}

int cmd_mount(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "format", required_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool read_only = false, foreground = false, allow_other = false;
	const char *format = NULL;
	char errbuf[IMG_ERRMSG_MAX];
	char *file = NULL, *mountpoint = NULL;
	struct imgfs *fs = NULL;
	struct img *img = NULL;
	struct stat st;
	int c, r, status_fd = -1, ret = 1;

	optind = 0;
	while ((c = getopt_long(argc, argv, "o:frF:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (mount_parse_options(optarg, &read_only,
						&allow_other))
				return 2;
			break;
		case 'f':
			foreground = true;
			break;
		case 'r':
			read_only = true;
			break;
		case 'F':
			format = optarg;
			break;
		case 'h':
			mount_usage(stdout);
			return 0;
		default:
			mount_usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 2) {
		mount_usage(stderr);
		return 2;
	}
	/* The daemon runs in /, so both paths are made absolute first. */
	file = realpath(argv[optind], NULL);
	if (!file) {
		fprintf(stderr, "imgtool mount: %s: %s\n", argv[optind],
			strerror(errno));
		goto out;
	}
	mountpoint = realpath(argv[optind + 1], NULL);
	if (!mountpoint || stat(mountpoint, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "imgtool mount: %s: %s\n", argv[optind + 1],
			mountpoint ? "not a directory" : strerror(errno));
		goto out;
	}
	if (!foreground)
		status_fd = tool_daemon_start("mount");

	struct img_open_options oo = {
		.format = format,
		.flags = read_only ? IMG_OPEN_RDONLY : IMG_OPEN_RDWR,
	};
	r = img_open(&img, file, &oo, errbuf, sizeof(errbuf));
	if (r < 0) {
		fprintf(stderr, "imgtool: %s\n", errbuf);
		goto out;
	}
	r = imgfs_new(&fs, img, read_only, errbuf, sizeof(errbuf));
	if (r == 0)
		r = imgfs_mount(fs, mountpoint, file, allow_other, errbuf,
				sizeof(errbuf));
	if (r < 0) {
		fprintf(stderr, "imgtool mount: %s: %s\n", file, errbuf);
		goto out;
	}
	if (status_fd >= 0)
		tool_daemon_ready(status_fd);
	status_fd = -1;
	if (chdir("/")) {
		/* paths are absolute */
	}
	ret = imgfs_run(fs) < 0 ? 1 : 0;
out:
	imgfs_free(fs);
	if (img && tool_close(img) < 0)
		ret = 1;
	if (status_fd >= 0)
		tool_daemon_failed(status_fd);
	free(file);
	free(mountpoint);
	return ret;
}
