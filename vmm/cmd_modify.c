// SPDX-License-Identifier: MIT
/*
 * imgvm modify NAME [BOOT OPTIONS] [--unset OPTION]: change a VM
 * definition ("--cdrom none" empties the drive, a repeatable option given
 * replaces the stored list).  A running VM sees the change at its next
 * start.
 */
#include <limits.h>
#include <stdio.h>

#include "vmm/cmd.h"
#include "vmm/vmdef.h"

int imgvm_cmd_modify(int argc, char **argv)
{
	char dir[PATH_MAX], err[512] = "";
	json_object *options;
	const char *name;
	int ret;

	if (argc < 2 || argv[1][0] == '-') {
		fprintf(stderr, "imgvm: usage: imgvm modify NAME [OPTIONS]\n");
		return EXIT_USAGE;
	}
	name = argv[1];
	if (vmdef_dir(name, dir, sizeof(dir), err, sizeof(err)) ||
	    vmdef_load(name, &options, err, sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return EXIT_USAGE;
	}
	ret = vmdef_update(options, argc - 2, argv + 2, name, dir);
	json_object_put(options);
	return ret ? EXIT_USAGE : 0;
}
