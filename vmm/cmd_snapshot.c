// SPDX-License-Identifier: MIT
/*
 * imgvm snapshot NAME create|revert|delete TAG, imgvm snapshot NAME list:
 * snapshots of a stopped VM, over every writable disk at once, through
 * libimg's snapshot module (img_snapshots_* in img.h: inside a qcow2, as
 * layers in DISK.snapshots/ otherwise; a disk's path never changes).
 * All disks or none: every disk's snapshots are opened (and locked)
 * before any changes; create checks that no disk has the tag, revert and
 * delete that every disk has it; a create that fails on one disk is
 * deleted again on the disks already done.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libimg/img.h"
#include "vmm/cmd.h"
#include "vmm/vmdef.h"

static void snapshot_print_list(struct img_snapshots *snaps, const char *disk)
{
	struct img_snapshot_entry *list;
	int count;

	printf("%s:\n", disk);
	if (img_snapshots_list(snaps, &list, &count) < 0) {
		fprintf(stderr, "imgvm: %s\n", img_snapshots_errmsg(snaps));
		return;
	}
	for (int i = 0; i < count; i++) {
		char created[32] = "-", vsize[32];
		time_t t = (time_t)list[i].created;
		struct tm tm;

		if (t && localtime_r(&t, &tm))
			strftime(created, sizeof(created), "%Y-%m-%d %H:%M:%S",
				 &tm);
		img_format_size(list[i].virtual_size, vsize, sizeof(vsize));
		printf("%-20s %-19s %12s\n", list[i].name, created, vsize);
	}
	free(list);
}

/* Apply action to every disk; a create failing on one is undone on the
 * disks done before it.  Returns 0 or EXIT_USAGE. */
static int snapshot_apply_all(struct img_snapshots **snaps, char **files,
			      size_t n, const char *action, const char *tag)
{
	for (size_t i = 0; i < n; i++) {
		int r;

		if (!strcmp(action, "create"))
			r = img_snapshots_create(snaps[i], tag);
		else if (!strcmp(action, "revert"))
			r = img_snapshots_revert(snaps[i], tag, 0);
		else
			r = img_snapshots_delete(snaps[i], tag);
		if (r == 0)
			continue;
		fprintf(stderr, "imgvm: %s\n", img_snapshots_errmsg(snaps[i]));
		if (strcmp(action, "create")) {
			fprintf(stderr,
				"imgvm: snapshot %s of %s failed after %zu "
				"disk(s) were done\n",
				action, files[i], i);
			return EXIT_USAGE;
		}
		fprintf(stderr,
			"imgvm: snapshot of %s failed: undoing it on the %zu "
			"disk(s) done\n",
			files[i], i);
		while (i--)
			if (img_snapshots_delete(snaps[i], tag) < 0)
				fprintf(stderr, "imgvm: %s\n",
					img_snapshots_errmsg(snaps[i]));
		return EXIT_USAGE;
	}
	return 0;
}

int imgvm_cmd_snapshot(int argc, char **argv)
{
	char dir[PATH_MAX], err[IMG_ERRMSG_MAX] = "";
	const char *name, *action, *tag = NULL;
	struct img_snapshots **snaps = NULL;
	json_object *options;
	const char **disks;
	char **files;
	size_t n;
	int lock, status = 0;
	bool list;

	if (argc < 3 || (strcmp(argv[2], "list") && argc != 4) ||
	    (!strcmp(argv[2], "list") && argc != 3)) {
		fprintf(stderr,
			"imgvm: usage: imgvm snapshot NAME "
			"create|revert|delete TAG | imgvm snapshot NAME "
			"list\n");
		return EXIT_USAGE;
	}
	name = argv[1];
	action = argv[2];
	list = !strcmp(action, "list");
	if (argc == 4)
		tag = argv[3];
	if (!list && strcmp(action, "create") && strcmp(action, "revert") &&
	    strcmp(action, "delete")) {
		fprintf(stderr, "imgvm: snapshot: unknown action '%s'\n",
			action);
		return EXIT_USAGE;
	}
	if (tag && !img_snapshot_tag_valid(tag)) {
		fprintf(stderr,
			"imgvm: snapshot: invalid tag '%s' (letters, digits, "
			". _ - + @; at most %d)\n",
			tag, IMG_SNAPSHOT_TAG_MAX);
		return EXIT_USAGE;
	}
	if (vmdef_dir(name, dir, sizeof(dir), err, sizeof(err)) ||
	    vmdef_load(name, &options, err, sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return EXIT_USAGE;
	}
	disks = vmdef_disks(options, &n, true);
	files = calloc(n ? n : 1, sizeof(*files));
	snaps = calloc(n ? n : 1, sizeof(*snaps));
	if (!files || !snaps) {
		fprintf(stderr, "imgvm: out of memory\n");
		status = EXIT_USAGE;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		char *comma;

		files[i] = strdup(disks[i]);
		if (files[i] && (comma = strchr(files[i], ',')))
			*comma = 0;
	}
	if (!n) {
		fprintf(stderr, "imgvm: %s has no writable disk\n", name);
		status = EXIT_USAGE;
		goto out;
	}
	/* a running VM's disks are open: only a stopped VM is snapshot */
	lock = vmdef_lock(dir, err, sizeof(err));
	if (lock < 0) {
		fprintf(stderr, "imgvm: %s: %s (snapshots need it stopped)\n",
			name, err);
		status = EXIT_USAGE;
		goto out;
	}
	for (size_t i = 0; i < n && !status; i++) {
		if (!files[i] ||
		    img_snapshots_open(&snaps[i], files[i], NULL,
				       list ? IMG_OPEN_RDONLY : IMG_OPEN_RDWR,
				       err, sizeof(err)) < 0) {
			fprintf(stderr, "imgvm: %s: nothing changed\n",
				files[i] ? err : "out of memory");
			status = EXIT_USAGE;
		}
	}
	for (size_t i = 0; i < n && !status && !list; i++) {
		bool has = img_snapshots_find(snaps[i], tag) == 0;

		if (has && !strcmp(action, "create")) {
			fprintf(stderr,
				"imgvm: %s already has a snapshot '%s'\n",
				files[i], tag);
			status = EXIT_USAGE;
		} else if (!has && strcmp(action, "create")) {
			fprintf(stderr,
				"imgvm: %s has no snapshot '%s': nothing "
				"changed\n",
				files[i], tag);
			status = EXIT_USAGE;
		}
	}
	if (!status && list) {
		for (size_t i = 0; i < n; i++)
			snapshot_print_list(snaps[i], files[i]);
	} else if (!status) {
		status = snapshot_apply_all(snaps, files, n, action, tag);
		if (!status)
			printf("Snapshot '%s' of %s %s (%zu disk%s).\n", tag,
			       name,
			       !strcmp(action, "create")   ? "created"
			       : !strcmp(action, "revert") ? "reverted to"
							   : "deleted",
			       n, n == 1 ? "" : "s");
	}
	for (size_t i = 0; i < n; i++)
		if (snaps[i] && img_snapshots_close(snaps[i]) < 0 && !status) {
			fprintf(stderr, "imgvm: %s: flush failed\n", files[i]);
			status = EXIT_USAGE;
		}
	close(lock);
out:
	for (size_t i = 0; files && i < n; i++)
		free(files[i]);
	free(files);
	free(snaps);
	free(disks);
	json_object_put(options);
	return status;
}
