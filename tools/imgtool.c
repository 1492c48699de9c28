/* SPDX-License-Identifier: MIT */
/*
 * imgtool: the command dispatcher.  Each command lives in tools/cmd_<name>.c
 * as `int cmd_<name>(int argc, char **argv)` (argv[0] is the command name)
 * and returns the exit code.  The references are weak so that a build
 * without a command still links and says so.
 */
#include "tools/common.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

typedef int command_fn(int argc, char **argv);

#define DECLARE_COMMAND(name) extern command_fn cmd_##name __attribute__((weak))
DECLARE_COMMAND(create);
DECLARE_COMMAND(info);
DECLARE_COMMAND(check);
DECLARE_COMMAND(convert);
DECLARE_COMMAND(resize);
DECLARE_COMMAND(snapshot);
DECLARE_COMMAND(commit);
DECLARE_COMMAND(rebase);
DECLARE_COMMAND(compare);
DECLARE_COMMAND(map);
DECLARE_COMMAND(checksum);
DECLARE_COMMAND(measure);
DECLARE_COMMAND(compact);
DECLARE_COMMAND(serve);
DECLARE_COMMAND(mount);
DECLARE_COMMAND(umount);

struct command {
	const char *name;
	const char *summary;
	command_fn *fn;
};

static const struct command commands[] = {
	{ "create", "create a new image", cmd_create },
	{ "info", "show an image's format, sizes and backing file", cmd_info },
	{ "check", "check an image's metadata and optionally repair it",
	  cmd_check },
	{ "convert", "copy an image into another format", cmd_convert },
	{ "resize", "grow or shrink an image", cmd_resize },
	{ "snapshot", "create, list, apply or delete snapshots", cmd_snapshot },
	{ "commit", "write an overlay's changes into its backing file",
	  cmd_commit },
	{ "rebase", "change an image's backing file", cmd_rebase },
	{ "compare", "compare the contents of two images", cmd_compare },
	{ "map", "show which ranges are allocated, zero or in a parent",
	  cmd_map },
	{ "checksum", "hash an image's guest-visible contents", cmd_checksum },
	{ "measure", "estimate the size a conversion needs", cmd_measure },
	{ "compact", "give unused space back to the host", cmd_compact },
	{ "serve", "export an image over NBD", cmd_serve },
	{ "mount", "expose an image as a file through FUSE", cmd_mount },
	{ "umount", "undo a FUSE mount", cmd_umount },
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
	fputs("Usage: imgtool COMMAND [OPTIONS] ...\n       imgtool help COMMAND | imgtool COMMAND --help\n       imgtool --version\n\nDisk images in raw, VDI, VHD, VHDX, VMDK and qcow2 formats.\n\nCommands:\n",
	      out);
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(out, "  %-10s %s%s\n", commands[i].name,
			commands[i].summary,
			commands[i].fn ? "" : " (not in this build)");
	fputs("\nFormats:", out);
	for (const char *const *f = img_formats(); *f; f++)
		fprintf(out, " %s", *f);
	fputs("\n\nSizes take K, M, G, T, P suffixes (powers of 1024) or s (512-byte sectors).\nExit status: 0 success, 1 failure, 2 usage error.\n",
	      out);
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static int run_command(const struct command *cmd, int argc, char **argv)
{
	if (!cmd->fn) {
		tool_error("%s is not available in this build", cmd->name);
		return TOOL_EXIT_FAILURE;
	}
	optind = 0; /* each command parses its own options from scratch */
	return cmd->fn(argc, argv);
}

int main(int argc, char **argv)
{
	const struct command *cmd;

	if (argc < 2) {
		usage(stderr);
		return TOOL_EXIT_USAGE;
	}
	if (tool_is_help(argv[1]) ||
	    (strcmp(argv[1], "help") == 0 && argc == 2)) {
		usage(stdout);
		return TOOL_EXIT_OK;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("imgtool %s (libimg %s)\n", IMG_VERSION, img_version());
		return TOOL_EXIT_OK;
	}
	if (strcmp(argv[1], "help") == 0) {
		char help[] = "--help";
		char *args[] = { argv[2], help, NULL };

		cmd = find_command(argv[2]);
		if (!cmd)
			return tool_usage_error(NULL, "unknown command '%s'",
						argv[2]);
		return run_command(cmd, 2, args);
	}
	if (argv[1][0] == '-')
		return tool_usage_error(NULL, "unknown option '%s'", argv[1]);
	cmd = find_command(argv[1]);
	if (!cmd)
		return tool_usage_error(NULL, "unknown command '%s'", argv[1]);
	return run_command(cmd, argc - 1, argv + 1);
}
