/* SPDX-License-Identifier: MIT */
/* libimg private: shared between the core's own files, not drivers. */
#ifndef LIBIMG_INTERNAL_H
#define LIBIMG_INTERNAL_H

#include "driver.h"

/* The last host I/O failure of this thread ("f.img: write at 4096:
 * No space left on device"), used when a driver returns an error without
 * leaving a message of its own. */
const char *img_file_last_error(void);
void img_file_clear_last_error(void);

/* Does the name select the local file backend (not nbd://, rbd:, http://)? */
bool img_name_is_local(const char *name);
/* img_file_open with explicit IMG_OPEN_* flags and the message (without
 * the name) in a buffer: probing, listing snapshots. */
int img_file_open_name(struct img_file *f, const char *name, bool writable,
		       unsigned flags, char *errbuf, size_t errlen);
/* Remove what a failed create left at name; -ENOTSUP when the backend
 * cannot. */
int img_file_remove_name(const char *name, char *errbuf, size_t errlen);
/* Bytes the store holds for the object a name stores (a file's blocks,
 * an RBD image's objects, an NBD export's allocated extents), asked
 * through an open handle of that name when there is one; -ENOTSUP when
 * the backend cannot tell. */
int img_file_allocated_name(const char *name, uint64_t *bytes);

/* 64 KiB of zeros, read-only, for writes that must store zeros. */
#define IMG_ZERO_BLOCK_SIZE (64 * 1024)
extern const char img_zero_block[IMG_ZERO_BLOCK_SIZE];
/* Write len zero bytes at off with pwritev (no fallocate tricks). */
int img_file_write_zero_buffers(struct img_file *f, uint64_t off, uint64_t len);

/* Tests only: treat the handle's driver as sector-aligned, so that the
 * core's read-modify-write path runs over a raw file. */
void img_test_force_sector_io(struct img *img);

/* The driver table plus, at index IMG_NDRIVERS, the test driver (if
 * any); NULL for absent entries. */
const struct img_driver *img_driver_at(int i);
/* Tests only: one extra driver, found by name and by probing (a tiny
 * copy-on-write format that exercises the backing-chain code). */
void img_test_set_extra_driver(const struct img_driver *drv);

/* ---- the handle, shared by core.c, open.c, io.c, create.c -------------*/

#define SECTOR IMG_SECTOR_SIZE
#define MAX_CHAIN_DEPTH 64
#define MAX_BACKING_CANDIDATES 16

struct backing_candidate {
	char *path; /* as recorded (relative to the image's directory) */
	char *format;
};

struct img {
	const struct img_driver *drv;
	void *state;
	char *path;
	char *dir;
	unsigned flags;
	uint64_t size;
	bool shared_reads; /* driver has IMG_DRV_CONCURRENT_READS */
	bool byte_aligned; /* driver has IMG_DRV_BYTE_ALIGNED */
	bool parallel_rw;  /* IMG_DRV_PARALLEL_RW or img_set_parallel_rw */
	struct img *backing;
	char *backing_full; /* where the parent was (or would be) opened */
	pthread_rwlock_t lock;

	int ncandidates;
	struct backing_candidate candidates[MAX_BACKING_CANDIDATES];
	char *identity_format;

	uint32_t cluster_size;
	bool cluster_size_known;

	pthread_mutex_t err_lock;
	unsigned err_seq; /* bumped by every message, see img_io_failed() */
	char errmsg[IMG_ERRMSG_MAX];
};

/* Ancestors of the layer being opened, for loop detection. */
struct chain_ctx {
	int depth;
	dev_t dev[MAX_CHAIN_DEPTH + 1];
	ino_t ino[MAX_CHAIN_DEPTH + 1];
	const char *const *search_dirs;
};

/* core.c */
struct img *img_handle_alloc(const char *path, unsigned flags);
void img_handle_free(struct img *img);
int img_io_failed(struct img *img, unsigned seq, int r, const char *what,
		  uint64_t off, uint64_t len);
void img_lock_exclusive(struct img *img);
void img_lock_for_write(struct img *img, bool aligned);
void img_lock_shared(struct img *img);
unsigned img_op_begin(struct img *img);
char *img_path_dirname(const char *path);
char *img_path_resolve(const char *dir, const char *path);
void img_set_errmsg(struct img *img, const char *msg);
void img_unlock(struct img *img);
/* io.c */
int img_check_writable(struct img *img);
int img_write_zeroes_locked(struct img *img, uint64_t off, uint64_t len,
			    unsigned flags);
/* open.c */
int img_unknown_format(char *errbuf, size_t errlen, const char *path,
		       const char *format);

#endif
