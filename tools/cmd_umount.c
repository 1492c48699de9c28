/* SPDX-License-Identifier: MIT */
/*
 * imgtool umount: unmount an `imgtool mount` (fusermount3 -u) and wait
 * until the serving process has flushed and closed the image, so the image
 * is complete and unlocked when this returns.
 */
#include "fuse/imgfs.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define UMOUNT_WAIT_SECONDS 300

static bool umount_process_alive(pid_t pid)
{
	char path[64], buf[256];
	FILE *f;
	bool alive;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return false;
	/* a zombie nobody reaps has finished all the same */
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	alive = true;
	if (fgets(buf, sizeof(buf), f)) {
		char *p = strrchr(buf, ')');
		if (p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
			alive = false;
	}
	fclose(f);
	return alive;
}

int cmd_umount(int argc, char **argv)
{
	char pidtext[24] = "";
	pid_t pid = 0, child;
	ssize_t n;
	int status;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(argc == 2 && !strcmp(argv[1], "--help") ? stdout
								: stderr,
			"usage: imgtool umount MOUNTPOINT\n");
		return argc == 2 && !strcmp(argv[1], "--help") ? 0 : 2;
	}
	n = getxattr(argv[1], IMGFS_PID_XATTR, pidtext, sizeof(pidtext) - 1);
	if (n > 0) {
		pidtext[n] = 0;
		pid = (pid_t)atoi(pidtext);
	}

	child = fork();
	if (child < 0) {
		perror("imgtool umount: fork");
		return 1;
	}
	if (child == 0) {
		execlp("fusermount3", "fusermount3", "-u", "--", argv[1],
		       (char *)NULL);
		fprintf(stderr, "imgtool umount: fusermount3: %s\n",
			strerror(errno));
		_exit(127);
	}
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR) {
			perror("imgtool umount: waitpid");
			return 1;
		}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return 1; /* fusermount3 said why */

	if (pid > 0) {
		struct timespec pause = { 0, 20 * 1000 * 1000 };
		for (int i = 0; i < UMOUNT_WAIT_SECONDS * 50; i++) {
			if (!umount_process_alive(pid))
				return 0;
			nanosleep(&pause, NULL);
		}
		fprintf(stderr,
			"imgtool umount: %s: unmounted, but process %d has not "
			"finished writing the image yet\n",
			argv[1], (int)pid);
		return 1;
	}
	return 0;
}
