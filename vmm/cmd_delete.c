// SPDX-License-Identifier: MIT
/*
 * imgvm delete NAME [--delete-disks]: remove a stopped VM's definition and
 * the files imgvm keeps in its folder; with --delete-disks also every
 * writable disk it names, with its snapshots.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "img.h"
#include "vmm/cmd.h"
#include "vmm/vmdef.h"

int imgvm_cmd_delete(int argc, char **argv)
{
	static const char *const own_files[] = {
		VMDEF_FILE, VMDEF_CONSOLE, VMDEF_LOG, VMDEF_CONTROL, VMDEF_LOCK,
	};
	char dir[PATH_MAX], path[PATH_MAX + 32], err[512] = "";
	bool delete_disks = false;
	json_object *options;
	const char *name = NULL;
	int lock, status = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--delete-disks"))
			delete_disks = true;
		else if (!name && argv[i][0] != '-')
			name = argv[i];
		else
			name = NULL, i = argc;
	}
	if (!name) {
		fprintf(stderr,
			"imgvm: usage: imgvm delete NAME [--delete-disks]\n");
		return EXIT_USAGE;
	}
	if (vmdef_dir(name, dir, sizeof(dir), err, sizeof(err)) ||
	    vmdef_load(name, &options, err, sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return EXIT_USAGE;
	}
	lock = vmdef_lock(dir, err, sizeof(err));
	if (lock < 0) {
		fprintf(stderr, "imgvm: %s: %s\n", name, err);
		json_object_put(options);
		return EXIT_USAGE;
	}
	if (delete_disks) {
		size_t n;
		const char **disks = vmdef_disks(options, &n, true);

		for (size_t i = 0; i < n; i++) {
			char *file = strdup(disks[i]), *comma;
			int r;

			if (!file)
				continue;
			if ((comma = strchr(file, ',')))
				*comma = 0;
			/* the disk (a file, an RBD image) and its layers */
			r = img_remove(file, err, sizeof(err));
			if ((r && r != -ENOENT) ||
			    img_snapshots_remove_all(file, err, sizeof(err))) {
				fprintf(stderr, "imgvm: %s\n", err);
				status = EXIT_USAGE;
			}
			free(file);
		}
		free(disks);
	}
	for (size_t i = 0; i < sizeof(own_files) / sizeof(own_files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, own_files[i]);
		unlink(path);
	}
	close(lock);
	if (rmdir(dir))
		fprintf(stderr,
			"imgvm: %s: %s (left in place with what else is in "
			"it)\n",
			dir, strerror(errno));
	json_object_put(options);
	return status;
}
