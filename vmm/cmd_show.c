// SPDX-License-Identifier: MIT
/*
 * imgvm show NAME: the VM's definition (its vm.json) on stdout.
 */
#include <stdio.h>
#include <stdlib.h>

#include "vmm/cmd.h"
#include "vmm/vmdef.h"

int imgvm_cmd_show(int argc, char **argv)
{
	char err[512] = "";
	json_object *options;
	char *text;

	if (argc != 2) {
		fprintf(stderr, "imgvm: usage: imgvm show NAME\n");
		return EXIT_USAGE;
	}
	if (vmdef_load(argv[1], &options, err, sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return EXIT_USAGE;
	}
	text = vmdef_format(argv[1], options);
	json_object_put(options);
	if (!text) {
		fprintf(stderr, "imgvm: out of memory\n");
		return EXIT_USAGE;
	}
	fputs(text, stdout);
	free(text);
	return 0;
}
