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

#endif
