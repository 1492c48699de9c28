// SPDX-License-Identifier: MIT
/*
 * imgvm export NAME FILE.ova: the VM as an OVF 1.0 appliance (descriptor,
 * SHA256 manifest, streamOptimized VMDK disks in a tar) that VirtualBox's
 * "Import Appliance" and VMware's ovftool read.
 */
#include <limits.h>
#include <stdio.h>

#include "vmm/cmd.h"
#include "vmm/ova.h"
#include "vmm/vmdef.h"

int imgvm_cmd_export(int argc, char **argv)
{
	char dir[PATH_MAX], err[512] = "";
	json_object *options;
	int lock, ret;

	if (argc != 3) {
		fprintf(stderr, "imgvm: usage: imgvm export NAME FILE.ova\n");
		return EXIT_USAGE;
	}
	if (vmdef_dir(argv[1], dir, sizeof(dir), err, sizeof(err)) ||
	    vmdef_load(argv[1], &options, err, sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return EXIT_USAGE;
	}
	/* the disks must not change while they are copied */
	lock = vmdef_lock(dir, err, sizeof(err));
	if (lock < 0) {
		fprintf(stderr, "imgvm: %s: %s (export needs it stopped)\n",
			argv[1], err);
		json_object_put(options);
		return EXIT_USAGE;
	}
	ret = ova_export(argv[1], options, argv[2], err, sizeof(err));
	if (ret)
		fprintf(stderr, "imgvm: export: %s\n", err);
	else
		printf("exported VM '%s' to %s\n", argv[1], argv[2]);
	json_object_put(options);
	return ret ? EXIT_USAGE : 0;
}
