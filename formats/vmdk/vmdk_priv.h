/* SPDX-License-Identifier: MIT */
/* VMDK driver state shared by vmdk.c, vmdk_create.c, vmdk_stream.c and
 * vmdk_check.c.  Not part of libimg's interface. */
#ifndef FORMATS_VMDK_PRIV_H
#define FORMATS_VMDK_PRIV_H

#include "vmdk_internal.h"

#include <pthread.h>

struct vmdk_extent {
	enum vmdk_extent_type type;
	enum vmdk_access access;
	uint64_t start;	      /* first virtual sector */
	uint64_t sectors;     /* as the descriptor says */
	uint64_t flat_offset; /* sectors into the file (flat extents) */
	char *path;	      /* resolved host path */
	struct img_file own_file;
	bool own_file_open;
	struct img_file *file; /* own_file, or the descriptor's file */
	uint64_t file_size;    /* bytes; grows as grains are appended */
	bool writable;
	bool needs_sync;

	/* Sparse ("KDMV") and COWD extents. */
	struct vmdk_sparse_header header; /* host order (footer's for streams) */
	bool sparse, cowd, compressed, markers, zero_grain;
	uint32_t grain_sectors;
	uint32_t gtes_per_gt;
	uint32_t gd_entries;
	uint64_t gd_offset;  /* sectors */
	uint64_t rgd_offset; /* sectors, 0: no redundant directory */
	uint32_t *gd;	     /* host order */
	uint32_t *rgd;
	/* Grain tables, loaded on first use; a published pointer is never
	 * changed while requests run.  Entries are read atomically; a new
	 * one is stored (under meta_lock) only once its grain is written. */
	uint32_t **gts;
	uint8_t *gt_dirty;
	bool gd_dirty;
	bool header_dirty_flag; /* uncleanShutdown written as 1 */
	uint64_t next_sector;	/* where the next grain is appended */
	/* Loading a grain table, appending grains and tables, next_sector,
	 * file_size, the dirty flags and the directories.  Recursive: an
	 * allocation under it loads grain tables too. */
	pthread_mutex_t meta_lock;
	bool meta_lock_init;
};

struct vmdk_stream_writer;

struct vmdk_state {
	struct vmdk_desc desc;
	struct img_file main_file; /* the file img_filename() names */
	bool main_open;
	bool has_desc;	      /* false: a bare extent opened directly */
	bool desc_embedded;   /* in main_file at desc_offset */
	uint64_t desc_offset; /* bytes */
	uint64_t desc_area;   /* bytes available for an embedded one */
	int nextents;
	struct vmdk_extent **extents;
	bool writable;
	bool stream;  /* streamOptimized: writes only through the writer */
	bool touched; /* first write done: CID changed, unclean flag set */
	/* Writes to flat extents run in parallel; the first one of them
	 * changes the CID and the headers once, under this lock. */
	pthread_mutex_t first_write_lock;
	bool first_write_lock_init;
	struct vmdk_stream_writer *writer;
};

/* vmdk.c */
/* Data went to e's file: the next flush syncs it (writes to flat extents
 * run in parallel, hence atomic). */
static inline void vmdk_note_data_written(struct vmdk_extent *e)
{
	__atomic_store_n(&e->needs_sync, true, __ATOMIC_RELEASE);
}

/* img_error with the cause appended: "...: No space left on device". */
int vmdk_io_error(struct img *img, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int vmdk_write_descriptor(struct img *img);
int vmdk_sparse_write_header(struct img *img, struct vmdk_extent *e);
int vmdk_gt_load(struct img *img, struct vmdk_extent *e, uint32_t t,
		 uint32_t **out);
int vmdk_read_compressed_grain(struct img *img, struct vmdk_extent *e,
			       uint32_t sector, uint64_t grain, uint8_t *out);
int vmdk_extent_flush(struct img *img, struct vmdk_extent *e);
/* Opens extent d (index i) whose start sector is known: files, headers,
 * directories.  The extent must be zeroed except start. */
int vmdk_extent_open(struct img *img, struct vmdk_extent *e,
		     const struct vmdk_desc_extent *d, int i);
int vmdk_sparse_grow(struct img *img, struct vmdk_extent *e,
		     uint64_t new_capacity);
char *vmdk_path_join(const char *dir, const char *name);

/* vmdk_stream.c */
int vmdk_stream_writer_open(struct img *img);
int vmdk_stream_write(struct img *img, uint64_t off, const struct iovec *iov,
		      int iovcnt, size_t len);
int vmdk_stream_skip(struct img *img, uint64_t off, uint64_t len);
int vmdk_stream_flush(struct img *img);
void vmdk_stream_writer_free(struct img *img);
/* Writes an empty stream tail (GD, footer, EOS) at sector pos. */
int vmdk_stream_write_tail(struct img_file *f,
			   const struct vmdk_sparse_header *h,
			   const uint32_t *gd, uint32_t gd_entries,
			   uint64_t pos, char *err, size_t errlen);

/* vmdk_create.c */
int vmdk_create(const struct img_create_args *args, char *errbuf,
		size_t errlen);
int vmdk_resize(struct img *img, uint64_t new_size, unsigned flags);
int vmdk_sparse_create_extent(struct img_file *f, uint64_t capacity,
			      uint32_t grain_sectors, const char *desc_text,
			      bool stream, bool zero_grain, char *err,
			      size_t errlen);

/* vmdk_check.c */
int vmdk_check(struct img *img, struct img_check_result *res, unsigned fix);

#endif
