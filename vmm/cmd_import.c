// SPDX-License-Identifier: MIT
/*
 * imgvm import FILE.ova [NAME] [--format FMT]: a new VM from an OVF
 * appliance (imgvm's, VirtualBox's, VMware's): its CPUs, memory and disks,
 * the disks converted to FMT (default vdi) in the VM's folder.  The
 * manifest's digests are checked first.
 */
#include <stdio.h>
#include <string.h>

#include "img.h"
#include "vmm/cmd.h"
#include "vmm/ova.h"

int imgvm_cmd_import(int argc, char **argv)
{
	const char *file = NULL, *name = NULL, *format = NULL;
	char err[512] = "";

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--format") && i + 1 < argc)
			format = argv[++i];
		else if (argv[i][0] == '-')
			file = NULL, i = argc, name = "";
		else if (!file)
			file = argv[i];
		else if (!name)
			name = argv[i];
		else
			file = NULL, i = argc;
	}
	if (!file || (name && !*name)) {
		fprintf(stderr, "imgvm: usage: imgvm import FILE.ova [NAME] "
				"[--format FMT]\n");
		return EXIT_USAGE;
	}
	if (format && !img_format_canonical(format)) {
		fprintf(stderr, "imgvm: import: unknown disk format '%s'\n",
			format);
		return EXIT_USAGE;
	}
	if (ova_import(file, name, format, err, sizeof(err))) {
		fprintf(stderr, "imgvm: import: %s\n", err);
		return EXIT_USAGE;
	}
	printf("imported %s\n", file);
	return 0;
}
