// SPDX-License-Identifier: MIT
/*
 * imgvm start NAME [--detach] [BOOT OPTIONS]: boot a defined VM, with its
 * control socket in its folder.  Options given here are added after the
 * stored ones for this run only (a later value wins; --disk adds a disk).
 * --detach runs it in the background with the console in the folder's
 * console.log and returns once the machine is set up.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmm/cmd.h"
#include "vmm/vmdef.h"

static bool has_option(json_object *options, int argc, char **argv,
		       const char *name)
{
	size_t len = strlen(name);

	if (json_object_object_get_ex(options, name, NULL))
		return true;
	for (int i = 0; i < argc; i++)
		if (!strncmp(argv[i], "--", 2) &&
		    !strncmp(argv[i] + 2, name, len) &&
		    (argv[i][2 + len] == 0 || argv[i][2 + len] == '='))
			return true;
	return false;
}

/* The child of --detach: a session of its own, stdio to the folder. */
static int detach_child(const char *dir)
{
	char log[PATH_MAX + 16];
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	int fd;

	snprintf(log, sizeof(log), "%s/" VMDEF_LOG, dir);
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (null < 0 || fd < 0 || dup2(null, STDIN_FILENO) < 0 ||
	    dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
		return -errno;
	close(null);
	close(fd);
	setsid();
	return 0;
}

int imgvm_cmd_start(int argc, char **argv)
{
	char dir[PATH_MAX], err[512] = "", control[PATH_MAX + 32];
	char serial[PATH_MAX + 32];
	json_object *options;
	struct boot_options opt;
	bool detach = false;
	char **def_argv, **full;
	int def_argc, nextra = 0, n = 0, lock, ready[2], status;
	const char *name;
	pid_t pid;

	if (argc < 2 || argv[1][0] == '-') {
		fprintf(stderr,
			"imgvm: usage: imgvm start NAME [--detach] [OPTIONS]\n");
		return EXIT_USAGE;
	}
	name = argv[1];
	if (vmdef_dir(name, dir, sizeof(dir), err, sizeof(err)) ||
	    vmdef_load(name, &options, err, sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return EXIT_USAGE;
	}
	if (vmdef_to_argv(options, &def_argc, &def_argv)) {
		fprintf(stderr, "imgvm: out of memory\n");
		return EXIT_USAGE;
	}
	full = calloc((size_t)(def_argc + argc + 6), sizeof(*full));
	if (!full) {
		fprintf(stderr, "imgvm: out of memory\n");
		return EXIT_USAGE;
	}
	for (int i = 0; i < def_argc; i++)
		full[n++] = def_argv[i];
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--detach"))
			detach = true;
		else
			argv[2 + nextra++] = argv[i];
	}
	for (int i = 0; i < nextra; i++)
		full[n++] = argv[2 + i];
	snprintf(control, sizeof(control), "%s/" VMDEF_CONTROL, dir);
	if (!has_option(options, nextra, argv + 2, "control")) {
		full[n++] = "--control";
		full[n++] = control;
	}
	snprintf(serial, sizeof(serial), "file:%s/" VMDEF_CONSOLE, dir);
	if (detach && !has_option(options, nextra, argv + 2, "serial")) {
		full[n++] = "--serial";
		full[n++] = serial;
	}
	status = boot_options_parse(n, full, &opt);
	opt.screen.name = name;
	if (status == BOOT_OPTIONS_HELP) {
		imgvm_usage(stdout);
		return 0;
	}
	if (status)
		return EXIT_USAGE;
	if (detach && !strcmp(opt.serial, "stdio")) {
		fprintf(stderr,
			"imgvm: --detach needs the console elsewhere than "
			"stdio (--serial file:PATH or unix:PATH)\n");
		return EXIT_USAGE;
	}
	lock = vmdef_lock(dir, err, sizeof(err));
	if (lock < 0) {
		fprintf(stderr, "imgvm: %s: %s\n", name, err);
		return EXIT_USAGE;
	}
	if (!detach)
		return imgvm_boot(&opt, -1);

	if (pipe2(ready, O_CLOEXEC)) {
		fprintf(stderr, "imgvm: %s\n", strerror(errno));
		return EXIT_USAGE;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "imgvm: fork: %s\n", strerror(errno));
		return EXIT_USAGE;
	}
	if (pid == 0) {
		/* the lock's open file is shared with the parent, which
		 * exits soon: the child holds it while the VM runs */
		close(ready[0]);
		if (detach_child(dir))
			_exit(EXIT_USAGE);
		_exit(imgvm_boot(&opt, ready[1]));
	}
	close(ready[1]);
	close(lock);
	{
		char byte;
		ssize_t r;

		do
			r = read(ready[0], &byte, 1);
		while (r < 0 && errno == EINTR);
		close(ready[0]);
		if (r == 1) {
			printf("started VM '%s' (pid %ld); console %s/" VMDEF_CONSOLE
			       ", control %s\n",
			       name, (long)pid, dir, opt.control);
			return 0;
		}
	}
	/* the child ended before the machine was set up: its reason */
	waitpid(pid, &status, 0);
	{
		char log[PATH_MAX + 16], line[512] = "";
		FILE *f;

		snprintf(log, sizeof(log), "%s/" VMDEF_LOG, dir);
		f = fopen(log, "r");
		while (f && fgets(line, sizeof(line), f)) {
		}
		if (f)
			fclose(f);
		fprintf(stderr, "%s",
			line[0] ? line : "imgvm: the VM did not start\n");
	}
	return WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status)
							: EXIT_USAGE;
}
