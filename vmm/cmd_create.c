// SPDX-License-Identifier: MIT
/*
 * imgvm create NAME [BOOT OPTIONS]: a new VM definition (and the disks
 * --disk new:FMT:SIZE asks for) in its own folder.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/cmd.h"
#include "vmm/vmdef.h"

int imgvm_cmd_create(int argc, char **argv)
{
	char dir[PATH_MAX], err[512] = "";
	json_object *options;
	const char *name;
	int ret;

	if (argc < 2 || argv[1][0] == '-') {
		fprintf(stderr, "imgvm: usage: imgvm create NAME [OPTIONS]\n");
		return EXIT_USAGE;
	}
	name = argv[1];
	if (vmdef_dir(name, dir, sizeof(dir), err, sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return EXIT_USAGE;
	}
	{
		char home[PATH_MAX];

		snprintf(home, sizeof(home), "%s", dir);
		*strrchr(home, '/') = 0;
		if ((ret = vmdef_mkdirs(home))) {
			fprintf(stderr, "imgvm: %s: %s\n", home,
				strerror(-ret));
			return EXIT_USAGE;
		}
	}
	if (mkdir(dir, 0700)) {
		if (errno == EEXIST)
			fprintf(stderr, "imgvm: a VM named '%s' exists\n",
				name);
		else
			fprintf(stderr, "imgvm: %s: %s\n", dir,
				strerror(errno));
		return EXIT_USAGE;
	}
	options = json_object_new_object();
	ret = vmdef_update(options, argc - 2, argv + 2, name, dir);
	if (ret)
		rmdir(dir);
	else
		printf("created VM '%s' in %s\n", name, dir);
	json_object_put(options);
	return ret ? EXIT_USAGE : 0;
}
