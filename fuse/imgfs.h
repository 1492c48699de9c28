/* SPDX-License-Identifier: MIT */
/*
 * imgfs: a FUSE file system showing one image as `disk` (the whole virtual
 * disk) and `part1`, `part2`, ... (its MBR or GPT partitions, each the
 * exact byte range).
 */
#ifndef FUSE_IMGFS_H
#define FUSE_IMGFS_H

#include <stdbool.h>
#include <stddef.h>

struct img;
struct imgfs;

/* Extended attribute of the mount's root that holds the serving process's
 * id (imgtool umount waits for it to finish flushing). */
#define IMGFS_PID_XATTR "user.imgtool.pid"

/* The image stays owned by the caller (imgfs flushes it at unmount but
 * does not close it). */
int imgfs_new(struct imgfs **out, struct img *img, bool read_only, char *errbuf,
	      size_t errlen);
/* fsname: shown as the mount's source (the image path).  allow_other:
 * let other users in (root, or user_allow_other in /etc/fuse.conf). */
int imgfs_mount(struct imgfs *fs, const char *mountpoint, const char *fsname,
		bool allow_other, char *errbuf, size_t errlen);
/* Serves requests (several threads) until unmounted or signalled. */
int imgfs_run(struct imgfs *fs);
/* Unmounts if still mounted and frees. */
void imgfs_free(struct imgfs *fs);

#endif
