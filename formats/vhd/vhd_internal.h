/* SPDX-License-Identifier: MIT */
/* Shared by the files of the VHD driver: its state and its metadata
 * helpers. */
#ifndef FORMATS_VHD_INTERNAL_H
#define FORMATS_VHD_INTERNAL_H

#include "vhd_ondisk.h"

#include "driver.h"

#include <limits.h>
#include <pthread.h>

#define VHD_MAX_PENDING 64
#define VHD_RUN_IOV 1024
#define VHD_MAX_LOCATOR_DATA (64u * 1024)
#define VHD_MAX_CANDIDATES 16
#define VHD_MIN_BLOCK_SIZE 4096u
#define VHD_MAX_BLOCK_SIZE (256u * 1024 * 1024)
/* qemu decides between CHS and current_size by the creator application;
 * "qem2" is the tag it reads as "current_size is the size", so writing it
 * makes qemu see the exact size we store.  Readers other than qemu ignore
 * the field. */
#define VHD_CREATOR_APP "qem2"
#define VHD_CREATOR_VERSION 0x00000001u

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static inline uint64_t round_up(uint64_t v, uint64_t align)
{
	return (v + align - 1) / align * align;
}

struct vhd_state {
	struct img_file file;
	bool file_open;
	bool read_only; /* opened read-only, or forced past a bad checksum */
	bool footer_checksum_ok;
	bool header_checksum_ok;
	bool head_footer_ok;	/* dynamic: the copy at offset 0 is valid */
	bool head_footer_stale; /* valid, but older than the trailing one */
	bool tail_footer_ok;	/* the footer at the end of the file is valid */
	struct vhd_footer footer;
	uint64_t size;
	uint64_t file_size; /* at open */

	/* dynamic and differencing */
	struct vhd_header header;
	uint32_t block_size;
	uint32_t block_sectors;
	uint32_t bitmap_size; /* bytes, a multiple of 512 */
	uint32_t entries;     /* BAT entries in use: ceil(size / block_size) */
	/* Host order, entries long.  Parallel requests read entries with
	 * vhd_bat_get; a new one is stored (vhd_bat_publish, under meta_lock)
	 * only once its block's bitmap and data are written. */
	uint32_t *bat;
	uint64_t *full_bits; /* per block: its bitmap is known to be all ones */
	uint64_t alloc_offset; /* the next block (and the trailing footer) go here */
	uint32_t pending[VHD_MAX_PENDING];
	int npending;
	/* Bitmaps of committed blocks with bits set since the last flush:
	 * they reach the disk after the data (at the next flush). */
	struct vhd_dirty_bitmap {
		uint32_t blk;
		uint8_t *bits;
	} dirty[VHD_MAX_PENDING];
	int ndirty;
	uint8_t *bitmap_ones;  /* bitmap_size bytes of 0xff */
	uint8_t *write_bitmap; /* scratch for allocation, under meta_lock */
	uint8_t *gap_sink; /* coalesced reads drop bitmaps between blocks here */
	char backing_name[4096]; /* the parent as recorded, for info */
	/* Writes to allocated blocks run in parallel (sparse images too);
	 * allocation, alloc_offset, the trailing footer, the pending and
	 * dirty lists and every sector-bitmap read-modify-write hold this. */
	pthread_mutex_t meta_lock;
	bool meta_lock_init;
};

static inline bool vhd_is_sparse(const struct vhd_state *s)
{
	return s->footer.disk_type != VHD_TYPE_FIXED;
}

static inline bool vhd_block_full(const struct vhd_state *s, uint32_t blk)
{
	return __atomic_load_n(&s->full_bits[blk / 64], __ATOMIC_RELAXED) &
	       (1ull << (blk % 64));
}

static inline void vhd_block_set_full(struct vhd_state *s, uint32_t blk,
				      bool full)
{
	uint64_t bit = 1ull << (blk % 64);

	if (full)
		__atomic_fetch_or(&s->full_bits[blk / 64], bit,
				  __ATOMIC_RELAXED);
	else
		__atomic_fetch_and(&s->full_bits[blk / 64], ~bit,
				   __ATOMIC_RELAXED);
}

static inline uint32_t vhd_bat_get(const struct vhd_state *s, uint32_t blk)
{
	return __atomic_load_n(&s->bat[blk], __ATOMIC_ACQUIRE);
}

static inline void vhd_bat_publish(struct vhd_state *s, uint32_t blk,
				   uint32_t entry)
{
	__atomic_store_n(&s->bat[blk], entry, __ATOMIC_RELEASE);
}

static inline uint64_t vhd_block_host(const struct vhd_state *s, uint32_t blk)
{
	return (uint64_t)vhd_bat_get(s, blk) * VHD_SECTOR;
}

static inline uint64_t vhd_block_span(const struct vhd_state *s)
{
	return (uint64_t)s->bitmap_size + s->block_size;
}

static inline uint32_t vhd_bitmap_size_for(uint32_t block_size)
{
	return (uint32_t)round_up(block_size / VHD_SECTOR / 8, VHD_SECTOR);
}

static inline uint64_t vhd_bat_bytes(uint32_t entries)
{
	return round_up((uint64_t)entries * 4, VHD_SECTOR);
}

struct vhd_locator_data {
	uint32_t code;
	uint32_t length;
	uint8_t data[2 * PATH_MAX + 16];
};

/* vhd.c */
int vhd_block_deallocate(struct vhd_state *s, uint32_t blk);
int vhd_check_writable(struct img *img, struct vhd_state *s);

/* vhd_chain.c */
int vhd_backing_matches(struct img *img, struct img *parent);
int vhd_build_locators(const char *child_path, const char *backing_file,
		       struct vhd_locator_data *loc, uint8_t parent_name[512]);
int vhd_declare_parent(struct img *img, struct vhd_state *s);
int vhd_locator_read(struct img *img, struct vhd_state *s,
		     const struct vhd_locator *l, char *out, size_t out_max,
		     bool *usable);
void vhd_parent_identity(struct img *parent, uint8_t uuid[16],
			 uint32_t *timestamp);
int vhd_set_backing(struct img *img, const char *backing_file,
		    const char *backing_format, struct img *parent);

/* vhd_check.c */
int vhd_check(struct img *img, struct img_check_result *res, unsigned fix);

/* vhd_create.c */
int vhd_create(const struct img_create_args *args, char *errbuf, size_t errlen);
int vhd_resize(struct img *img, uint64_t new_size, unsigned flags);

/* vhd_meta.c */
int vhd_commit_pending(struct vhd_state *s);
void vhd_dirty_drop(struct vhd_state *s, uint32_t blk);
struct vhd_dirty_bitmap *vhd_dirty_find(struct vhd_state *s, uint32_t blk);
void vhd_drop_pending(struct vhd_state *s, uint32_t blk);
bool vhd_is_pending(const struct vhd_state *s, uint32_t blk);
int vhd_write_bat_range(struct vhd_state *s, uint32_t first, uint32_t last);
int vhd_write_footer_at(struct vhd_state *s, uint64_t off);
int vhd_write_footers(struct vhd_state *s);
int vhd_write_header(struct vhd_state *s);

#endif
