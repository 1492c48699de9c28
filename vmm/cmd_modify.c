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
	json_object *options, *created;
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
	created = json_object_new_array();
	ret = vmdef_apply_args(options, argc - 2, argv + 2, name, dir, created,
			       err, sizeof(err));
	if (ret)
		fprintf(stderr, "imgvm: %s\n", err);
	else if (!(ret = vmdef_check_options(options)) &&
		 (ret = vmdef_save(name, options, err, sizeof(err))))
		fprintf(stderr, "imgvm: %s\n", err);
	if (ret)
		vmdef_remove_created(created);
	json_object_put(created);
	json_object_put(options);
	return ret ? EXIT_USAGE : 0;
}
