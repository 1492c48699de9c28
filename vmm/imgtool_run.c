// SPDX-License-Identifier: MIT
/*
 * Running imgtool from imgvm (OVA disk conversion): the imgtool
 * next to this imgvm (build/bin/, an install's bin/), else the one in PATH.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmm/cmd.h"

void imgtool_path(char *out, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		char *slash;

		self[n] = 0;
		slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			snprintf(out, len, "%s/imgtool", self);
			if (access(out, X_OK) == 0)
				return;
		}
	}
	snprintf(out, len, "imgtool");
}

int imgtool_run(const char *const args[], bool quiet)
{
	char tool[PATH_MAX + 16];
	pid_t pid;
	int status;

	imgtool_path(tool, sizeof(tool));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (quiet && !freopen("/dev/null", "w", stdout))
			_exit(127);
		execvp(tool, (char *const *)args);
		fprintf(stderr, "imgvm: cannot run %s: %s\n", tool,
			strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
