/* SPDX-License-Identifier: MIT */
/* VHDX driver: the state shared by the driver's files. */
#ifndef FORMATS_VHDX_INTERNAL_H
#define FORMATS_VHDX_INTERNAL_H

#include "vhdx_ondisk.h"

#include "driver.h"

#include <pthread.h>

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* A log sector replayed into memory (read-only open of an image whose
 * log was not replayed): reads of the file see it instead of the disk.
 * data NULL: a zero range. */
struct vhdx_overlay {
	uint64_t offset, length;
	uint8_t *data;
};

/* A 4 KiB metadata sector to be written through the log. */
struct vhdx_log_write {
	uint64_t offset;
	const uint8_t *data;
};

struct vhdx_state {
	struct img_file file;
	bool file_open;
	bool read_only;
	uint64_t file_size; /* at open, then as extended */

	struct vhdx_header header; /* the current one */
	int header_slot;	   /* 0: at 64 KiB, 1: at 128 KiB */
	uint64_t bat_offset;
	uint32_t bat_length;
	uint64_t meta_offset;
	uint32_t meta_length;
	uint8_t *meta_table; /* VHDX_METADATA_TABLE_SIZE */

	uint32_t block_size;
	uint32_t logical_sector;
	uint32_t physical_sector;
	bool has_parent;
	bool leave_allocated;
	uint64_t size;
	struct vhdx_guid page83;
	uint64_t vsize_item_offset; /* file offset of the disk size item */
	struct vhdx_bat_geometry geo;
	/* Host order, geo.entries.  Parallel requests read entries with
	 * vhdx_bat_get; an entry that makes a block present is stored only
	 * once the block's data is written (vhdx_bat_set, under meta_lock). */
	uint64_t *bat;
	uint8_t *bat_dirty; /* one flag per 4 KiB sector of the BAT */
	uint32_t dirty_count;
	uint64_t alloc_offset; /* where the next block goes (1 MiB aligned) */

	/* The parent locator (differencing). */
	bool has_linkage;
	struct vhdx_guid parent_linkage, parent_linkage2;
	bool has_linkage2;
	char parent_relative[4096];
	char parent_absolute[4096];
	char parent_volume[4096];

	/* Session: set at the first write (new file and data write GUIDs,
	 * a log GUID), cleared at close. */
	bool session_open;
	bool data_changed; /* the data write GUID is new */
	uint64_t log_sequence;
	bool log_replayed;  /* at this open, on disk */
	bool log_in_memory; /* read-only: replayed into the overlay */
	struct vhdx_overlay *overlay;
	int noverlay;
	/* Writes to present blocks run in parallel; allocation, alloc_offset,
	 * the dirty BAT sectors, the log and the session's header updates
	 * hold this. */
	pthread_mutex_t meta_lock;
	bool meta_lock_init;
};

static inline uint64_t vhdx_bat_get(const struct vhdx_state *s, uint64_t i)
{
	return __atomic_load_n(&s->bat[i], __ATOMIC_ACQUIRE);
}

static inline void vhdx_bat_set(struct vhdx_state *s, uint64_t i, uint64_t e)
{
	__atomic_store_n(&s->bat[i], e, __ATOMIC_RELEASE);
}

static inline uint64_t vhdx_round_up(uint64_t v, uint64_t align)
{
	return (v + align - 1) / align * align;
}

/* BAT index of payload block b and of the sector bitmap of chunk c. */
static inline uint64_t vhdx_payload_index(const struct vhdx_state *s,
					  uint64_t b)
{
	return b + b / s->geo.chunk_ratio;
}

static inline uint64_t vhdx_bitmap_index(const struct vhdx_state *s, uint64_t c)
{
	return c * (s->geo.chunk_ratio + 1ull) + s->geo.chunk_ratio;
}

/* What BAT entry i says, and what is wrong with it. */
enum vhdx_bat_fault {
	VHDX_BAT_SOUND,
	VHDX_BAT_BAD_STATE,
	VHDX_BAT_IN_HEADER, /* present, inside the header section */
	VHDX_BAT_PAST_END,  /* present, past the end of the file */
};

struct vhdx_bat_view {
	bool bitmap; /* a sector bitmap block's entry, else a payload block's */
	bool present; /* has space in the file: [off, off + span) */
	unsigned state;
	uint64_t off, span;
};

/* vhdx.c */
enum vhdx_bat_fault vhdx_bat_inspect(const struct vhdx_state *s, uint64_t i,
				     uint64_t e, struct vhdx_bat_view *v);
int vhdx_read_file(struct vhdx_state *s, void *buf, size_t len, uint64_t off);
int vhdx_header_write(struct vhdx_state *s);
/* Takes meta_lock (the caller must not hold it). */
int vhdx_session_begin(struct img *img, struct vhdx_state *s, bool data);
void vhdx_bat_mark_dirty(struct vhdx_state *s, uint64_t index);
/* meta_lock held, or no request running in parallel. */
int vhdx_commit(struct img *img, struct vhdx_state *s);

/* vhdx_log.c */
/* Finds the active log sequence; with apply, writes it into the file
 * (then the caller clears the log GUID); without, loads it into the
 * overlay.  *found tells whether there was anything to replay. */
int vhdx_log_replay(struct img *img, struct vhdx_state *s, bool apply,
		    bool *found);
/* Writes one log entry holding these sectors and flushes it; the caller
 * then writes them in place. */
int vhdx_log_write(struct img *img, struct vhdx_state *s,
		   const struct vhdx_log_write *w, uint32_t n);
/* Sectors one entry can hold in this image's log. */
uint32_t vhdx_log_capacity(const struct vhdx_state *s);

/* vhdx_create.c */
int vhdx_create(const struct img_create_args *args, char *errbuf,
		size_t errlen);
int vhdx_resize(struct img *img, uint64_t new_size, unsigned flags);
int vhdx_set_backing(struct img *img, const char *backing_file,
		     const char *backing_format, struct img *parent);

/* vhdx_check.c */
int vhdx_check(struct img *img, struct img_check_result *res, unsigned fix);

#endif
