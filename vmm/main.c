// SPDX-License-Identifier: MIT
/*
 * imgvm: boot a disk image (or install from an ISO onto one) under KVM
 * with SeaBIOS, an AHCI SATA disk and CD-ROM, and a serial console.  One
 * file per subcommand (vmm/cmd_*.c); this one only dispatches.
 */
#include <stdio.h>
#include <string.h>

#include "img.h"
#include "vmm/cmd.h"

static const struct imgvm_command {
	const char *name;
	int (*run)(int argc, char **argv);
} commands[] = {
	{ "boot", imgvm_cmd_boot },
	{ "create", imgvm_cmd_create },
	{ "list", imgvm_cmd_list },
	{ "show", imgvm_cmd_show },
	{ "modify", imgvm_cmd_modify },
	{ "delete", imgvm_cmd_delete },
	{ "start", imgvm_cmd_start },
	{ "snapshot", imgvm_cmd_snapshot },
	{ "export", imgvm_cmd_export },
	{ "import", imgvm_cmd_import },
	{ "status", imgvm_cmd_control },
	{ "eject", imgvm_cmd_control },
	{ "insert", imgvm_cmd_control },
	{ "powerbutton", imgvm_cmd_control },
	{ "reset", imgvm_cmd_control },
	{ "pause", imgvm_cmd_control },
	{ "resume", imgvm_cmd_control },
	{ "stop", imgvm_cmd_control },
	{ "screenshot", imgvm_cmd_control },
	{ "sendkeys", imgvm_cmd_control },
};

int main(int argc, char **argv)
{
	if (argc < 2) {
		imgvm_usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		imgvm_usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("imgvm %s\n", IMG_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "imgvm: unknown command '%s' (see imgvm --help)\n",
		argv[1]);
	return EXIT_USAGE;
}
