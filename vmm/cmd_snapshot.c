// SPDX-License-Identifier: MIT
/*
 * imgvm snapshot NAME create|revert|delete TAG, imgvm snapshot NAME list:
 * snapshots of a stopped VM, over every writable disk at once, made by
 * imgtool snapshot (a disk's path never changes; its states are layers in
 * DISK.snapshots/).  All disks or none: a create that fails on one disk is
 * undone on the disks already done; revert and delete first check that
 * every disk has the tag.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/cmd.h"
#include "vmm/vmdef.h"

/* imgtool snapshot -q ACTION DISK [TAG]; quiet: its output to /dev/null */
static int run_imgtool(const char *action, const char *disk, const char *tag,
		       bool quiet)
{
	const char *args[] = { "imgtool", "snapshot", "-q", action,
			       disk,	  tag,	      NULL };

	return imgtool_run(args, quiet);
}

/* Whether imgtool snapshot list DISK names tag (a line starting with it). */
static bool disk_has_tag(const char *disk, const char *tag)
{
	char tool[PATH_MAX + 16], *cmd, line[512];
	size_t tlen = strlen(tag);
	bool found = false;
	FILE *p;

	imgtool_path(tool, sizeof(tool));
	/* the names are checked (vmdef names, imgtool's tag rules) and the
	 * disk paths are quoted */
	if (asprintf(&cmd, "'%s' snapshot list '%s' 2>/dev/null", tool, disk) <
	    0)
		return false;
	p = popen(cmd, "r");
	free(cmd);
	while (p && fgets(line, sizeof(line), p))
		if (!strncmp(line, tag, tlen) &&
		    (line[tlen] == ' ' || line[tlen] == '\t' ||
		     line[tlen] == '\n'))
			found = true;
	if (p)
		pclose(p);
	return found;
}

static bool tag_valid(const char *tag)
{
	size_t len = strlen(tag);

	if (!len || len > 64)
		return false;
	for (const char *c = tag; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || strchr("._-+@", *c)))
			return false;
	return true;
}

int imgvm_cmd_snapshot(int argc, char **argv)
{
	char dir[PATH_MAX], err[512] = "";
	const char *name, *action, *tag = NULL;
	json_object *options;
	const char **disks;
	char **files;
	size_t n;
	int lock, status = 0;

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
	if (argc == 4)
		tag = argv[3];
	if (strcmp(action, "list") && strcmp(action, "create") &&
	    strcmp(action, "revert") && strcmp(action, "delete")) {
		fprintf(stderr, "imgvm: snapshot: unknown action '%s'\n",
			action);
		return EXIT_USAGE;
	}
	if (tag && !tag_valid(tag)) {
		fprintf(stderr,
			"imgvm: snapshot: invalid tag '%s' (letters, digits, "
			". _ - + @; at most 64)\n",
			tag);
		return EXIT_USAGE;
	}
	if (vmdef_dir(name, dir, sizeof(dir), err, sizeof(err)) ||
	    vmdef_load(name, &options, err, sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return EXIT_USAGE;
	}
	disks = vmdef_disks(options, &n, true);
	files = calloc(n ? n : 1, sizeof(*files));
	for (size_t i = 0; files && i < n; i++) {
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
	if (!strcmp(action, "list")) {
		for (size_t i = 0; i < n; i++) {
			printf("%s:\n", files[i]);
			if (run_imgtool("list", files[i], NULL, false))
				status = EXIT_USAGE;
		}
	} else if (!strcmp(action, "create")) {
		for (size_t i = 0; i < n; i++) {
			if (disk_has_tag(files[i], tag)) {
				fprintf(stderr,
					"imgvm: %s already has a snapshot "
					"'%s'\n",
					files[i], tag);
				status = EXIT_USAGE;
				break;
			}
		}
		for (size_t i = 0; !status && i < n; i++) {
			if (run_imgtool("create", files[i], tag, true) == 0)
				continue;
			fprintf(stderr,
				"imgvm: snapshot of %s failed: undoing it on "
				"the %zu disk(s) done\n",
				files[i], i);
			while (i--)
				run_imgtool("delete", files[i], tag, true);
			status = EXIT_USAGE;
		}
		if (!status)
			printf("Snapshot '%s' of %s created (%zu disk%s).\n",
			       tag, name, n, n == 1 ? "" : "s");
	} else {
		for (size_t i = 0; i < n; i++) {
			if (!disk_has_tag(files[i], tag)) {
				fprintf(stderr,
					"imgvm: %s has no snapshot '%s': "
					"nothing changed\n",
					files[i], tag);
				status = EXIT_USAGE;
				break;
			}
		}
		for (size_t i = 0; !status && i < n; i++)
			if (run_imgtool(action, files[i], tag, true))
				status = EXIT_USAGE;
		if (!status)
			printf("Snapshot '%s' of %s %s.\n", tag, name,
			       !strcmp(action, "revert") ? "reverted to"
							 : "deleted");
	}
	close(lock);
out:
	for (size_t i = 0; files && i < n; i++)
		free(files[i]);
	free(files);
	free(disks);
	json_object_put(options);
	return status;
}
