/* SPDX-License-Identifier: MIT */
/*
 * libimg private: the snapshot module's handle and its folder
 * DISK.snapshots/ (the index, the pending operation, the chain's layers),
 * shared by snapshot.c (the API), snapshot_folder.c and snapshot_layers.c
 * (create, revert, delete of layers and their recovery).
 */
#ifndef LIBIMG_SNAPSHOT_FOLDER_H
#define LIBIMG_SNAPSHOT_FOLDER_H

#include "internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#define SNAPSHOT_MAX_LAYERS 64

struct snapshot_layer {
	char *path;
	char format[16];
	char *backing_recorded; /* the parent reference as stored */
	uint64_t virtual_size;
	uint64_t actual_size;
	int nfiles; /* further files of the layer (VMDK extents) */
	char **files;
	char name[IMG_SNAPSHOT_TAG_MAX + 1]; /* "" unless in the folder */
};

struct snapshot_index_entry {
	char name[IMG_SNAPSHOT_TAG_MAX + 1];
	int64_t created;
};

struct img_snapshots {
	char *path; /* the disk, its directory made absolute */
	char format[16];
	unsigned flags;
	enum img_snapshot_kind kind;
	struct img *img; /* internal snapshots: the disk itself */
	char *dir;	 /* DISK.snapshots */
	int dir_fd;	 /* the folder, flock()ed; -1 when there is none */
	bool made_dir;
	char ext[16];
	int nentries;
	struct snapshot_index_entry *entries;
	int nlayers; /* [0] is the disk itself */
	struct snapshot_layer *layers;
	char errmsg[IMG_ERRMSG_MAX];
};

/* The operation under way, as DISK.snapshots/pending names it. */
enum pending_op { PENDING_CREATE, PENDING_REVERT, PENDING_DELETE };
extern const char *const snap_pending_ops[];

/* Records the handle's message; returns err. */
int snap_fail(struct img_snapshots *s, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Every change to a directory passes the I/O hook (crash tests): HOOKED
 * runs call unless the hook fails it (then -1 with errno set). */
int snap_dir_change_hook(void);
#define HOOKED(call)                                           \
	({                                                     \
		int hook_r_ = snap_dir_change_hook();          \
		hook_r_ < 0 ? (errno = -hook_r_, -1) : (call); \
	})

bool snap_same_file(const char *a, const char *b);
/* Are a's and b's directories the same? */
bool snap_same_dir(const char *a, const char *b);
const char *snap_base_name(const char *path);
/* fsync a directory (after the hook), when fd >= 0. */
void snap_sync_dir(int fd);

/* DISK.snapshots/index: creation dates. */
void snap_index_load(struct img_snapshots *s);
int snap_index_save(struct img_snapshots *s);
struct snapshot_index_entry *snap_index_find(struct img_snapshots *s,
					     const char *name);
void snap_index_remove(struct img_snapshots *s, const char *name);
int snap_index_add(struct img_snapshots *s, const char *name);
/* Write text to DIR/name through a temporary file, fsync and rename(). */
int snap_write_file_atomic(struct img_snapshots *s, const char *name,
			   const char *text);

/* DISK.snapshots/pending: begin writes it, end removes it; read returns
 * the operation (tag gets its name), -ENOENT when none, -EINVAL when
 * unreadable. */
int snap_pending_begin(struct img_snapshots *s, enum pending_op op,
		       const char *tag);
void snap_pending_end(struct img_snapshots *s);
int snap_pending_read(const char *dir, char *tag, size_t taglen);

/* The disk's chain, [0] the disk itself: loaded (opened with
 * IMG_OPEN_RDONLY | extra_flags), freed; a snapshot's index in it (-1:
 * none); the path snapshot tag's layer has (malloc'ed). */
int snap_layers_load(struct img_snapshots *s, unsigned extra_flags);
void snap_layers_free(struct img_snapshots *s);
bool snap_layer_name_in_dir(struct img_snapshots *s, const char *path,
			    char *name);
int snap_layer_find(struct img_snapshots *s, const char *tag);
char *snap_layer_path(struct img_snapshots *s, const char *tag);

/* snapshot_layers.c: the operations on layers, and the recovery of one
 * that was interrupted (op as snap_pending_read returned it). */
int snap_layers_create(struct img_snapshots *s, const char *tag);
int snap_layers_revert(struct img_snapshots *s, const char *tag,
		       unsigned flags);
int snap_layers_delete(struct img_snapshots *s, const char *tag);
int snap_recover(struct img_snapshots *s, int op, const char *tag);

#endif
