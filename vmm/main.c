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
	{ "boot", cmd_boot },		{ "create", cmd_create },
	{ "list", cmd_list },		{ "show", cmd_show },
	{ "modify", cmd_modify },	{ "delete", cmd_delete },
	{ "start", cmd_start },		{ "status", cmd_control },
	{ "eject", cmd_control },	{ "insert", cmd_control },
	{ "powerbutton", cmd_control }, { "reset", cmd_control },
	{ "pause", cmd_control },	{ "resume", cmd_control },
	{ "stop", cmd_control },	{ "screenshot", cmd_control },
	{ "sendkeys", cmd_control },
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
