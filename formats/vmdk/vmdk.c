/* SPDX-License-Identifier: MIT */
/*
 * VMDK driver (VMware "Virtual Disk Format 1.1"): the descriptor, sparse
 * ("KDMV") extents with or without compression and markers, flat/VMFS
 * extents, ZERO extents, ESX "COWD" sparse extents (read-only) and parent
 * chains by parentFileNameHint + parentCID.
 *
 * Write ordering (crash safety):
 *  - A new grain is appended at the end of its extent file and written in
 *    full (the rest of the grain from the parent or zeros) before anything
 *    points to it.  Its grain-table entry changes only in memory.
 *  - img_flush: fdatasync the extent (the grains are durable), then write
 *    the dirty grain tables (primary, then redundant copy) and, when new
 *    grain tables were appended, both grain directories, then fdatasync
 *    again.  So metadata on disk never points at data that is not on
 *    disk; a crash before a flush loses only unflushed writes and leaves
 *    at worst leaked grains at the end of the file, which check repairs.
 *  - New grain tables are appended as zeros at allocation time, so by the
 *    first fdatasync of a flush they read as empty tables.
 *  - First write after open: new CID in the descriptor (children made
 *    from the old state no longer match) and uncleanShutdown = 1 in each
 *    sparse header; close clears the flag after the final flush.
 *  - Overwrites of allocated grains go in place.
 *  - streamOptimized: see vmdk_stream.c (append-only, tail rewritten at
 *    each flush).
 *
 * Parallel requests (img_set_parallel_rw, every subformat but
 * streamOptimized): reads, and writes into allocated grains, go to the
 * file at once.  A write to an unallocated or zero grain takes its
 * extent's meta_lock, looks the grain up again (a parallel write may have
 * appended it meanwhile) and appends it; its grain-table entry is stored
 * only after the grain is written, so a parallel reader sees the old
 * contents or the new.  A flush syncs the data and writes the tables
 * under meta_lock, and runs its last fdatasync without it.
 * streamOptimized stays serial: its grains are appended compressed, in
 * virtual order, through the one stream writer, so there is nothing to
 * overwrite in place.
 */
#include "vmdk_priv.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define GRAIN_BYTES(e) ((uint64_t)(e)->grain_sectors * VMDK_SECTOR)

char *vmdk_path_join(const char *dir, const char *name)
{
	char *p;

	if (name[0] == '/' || !dir || !*dir)
		return strdup(name);
	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

int vmdk_io_error(struct img *img, int err, const char *fmt, ...)
{
	char msg[IMG_ERRMSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return img_error(img, err, "%s: %s", msg, strerror(-err));
}

/* ---- descriptor -------------------------------------------------------*/

int vmdk_write_descriptor(struct img *img)
{
	struct vmdk_state *s = img_state(img);
	char *text = NULL, *buf = NULL;
	size_t len;
	int ret;

	if (!s->has_desc)
		return 0;
	ret = vmdk_desc_format(&s->desc, &text, &len);
	if (ret)
		return img_error(img, ret, "cannot format the descriptor");
	if (s->desc_embedded) {
		if (len > s->desc_area) {
			ret = img_error(img, -ENOSPC,
					"descriptor (%zu bytes) no longer fits "
					"its embedded area of %" PRIu64
					" bytes",
					len, s->desc_area);
			goto out;
		}
		buf = calloc(1, s->desc_area);
		if (!buf) {
			ret = -ENOMEM;
			goto out;
		}
		memcpy(buf, text, len);
		ret = img_file_pwrite(&s->main_file, buf, s->desc_area,
				      s->desc_offset);
	} else {
		ret = img_file_pwrite(&s->main_file, text, len, 0);
		if (!ret)
			ret = img_file_truncate(&s->main_file, len);
	}
	if (ret)
		vmdk_io_error(img, ret, "cannot write the descriptor");
out:
	free(buf);
	free(text);
	return ret;
}

int vmdk_sparse_write_header(struct img *img, struct vmdk_extent *e)
{
	struct vmdk_sparse_header h = e->header;
	int ret;

	vmdk_sparse_header_to_disk(&h);
	ret = img_file_pwrite(e->file, &h, sizeof(h), 0);
	if (ret)
		return vmdk_io_error(img, ret,
				     "%s: cannot write the sparse header",
				     e->path);
	return 0;
}

/* ---- grain tables -----------------------------------------------------*/

int vmdk_gt_load(struct img *img, struct vmdk_extent *e, uint32_t t,
		 uint32_t **out)
{
	uint32_t *gt;
	uint64_t bytes = (uint64_t)e->gtes_per_gt * 4;
	uint32_t i;
	int ret = 0;

	*out = __atomic_load_n(&e->gts[t], __ATOMIC_ACQUIRE);
	if (*out || !__atomic_load_n(&e->gd[t], __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&e->meta_lock);
	gt = e->gts[t];
	if (gt)
		goto done;
	if ((uint64_t)e->gd[t] * VMDK_SECTOR + bytes > e->file_size) {
		ret = img_error(img, -EIO,
				"%s: grain table %u (sector %u) points past "
				"the end of the file",
				e->path, t, e->gd[t]);
		goto done;
	}
	gt = malloc(bytes);
	if (!gt) {
		ret = -ENOMEM;
		goto done;
	}
	ret = img_file_pread(e->file, gt, bytes,
			     (uint64_t)e->gd[t] * VMDK_SECTOR);
	if (ret) {
		free(gt);
		gt = NULL;
		vmdk_io_error(img, ret, "%s: cannot read grain table %u",
			      e->path, t);
		goto done;
	}
	for (i = 0; i < e->gtes_per_gt; i++)
		gt[i] = IMG_LE32(gt[i]);
	__atomic_store_n(&e->gts[t], gt, __ATOMIC_RELEASE);
done:
	pthread_mutex_unlock(&e->meta_lock);
	*out = gt;
	return ret;
}

/* Grain-table entry of grain g (extent-relative): 0 unallocated, 1 zero
 * (when allowed), else the grain's sector. */
static int gte_get(struct img *img, struct vmdk_extent *e, uint64_t g,
		   uint32_t *gte)
{
	uint32_t *gt;
	uint64_t t = g / e->gtes_per_gt;
	int ret;

	*gte = 0;
	if (t >= e->gd_entries)
		return 0;
	ret = vmdk_gt_load(img, e, (uint32_t)t, &gt);
	if (ret)
		return ret;
	if (gt)
		*gte = __atomic_load_n(&gt[g % e->gtes_per_gt],
				       __ATOMIC_ACQUIRE);
	if (*gte == VMDK_GTE_ZERO && !e->zero_grain && !e->cowd)
		return img_error(img, -EIO,
				 "%s: grain %" PRIu64 " has entry 1 but zero "
				 "grains are not enabled",
				 e->path, g);
	return 0;
}

/* Appends a zeroed grain table (and its redundant copy) for directory
 * entry t; the directories are written at the next flush. */
static int gt_allocate(struct img *img, struct vmdk_extent *e, uint32_t t)
{
	uint64_t gt_sectors = vmdk_gt_sectors(e->gtes_per_gt);
	uint64_t bytes = gt_sectors * VMDK_SECTOR;
	uint64_t at = e->next_sector;
	int copies = e->rgd_offset ? 2 : 1, ret;
	uint32_t *gt;

	if (at + gt_sectors * 2 > UINT32_MAX)
		return img_error(img, -EFBIG,
				 "%s: extent file is full (grain offsets are "
				 "32-bit)",
				 e->path);
	gt = calloc(1, bytes * (size_t)copies);
	if (!gt)
		return -ENOMEM;
	/* Both copies at once; nothing points at them until both exist. */
	ret = img_file_pwrite(e->file, gt, bytes * (size_t)copies,
			      at * VMDK_SECTOR);
	if (ret) {
		free(gt);
		return vmdk_io_error(
			img, ret, "%s: cannot append a grain table", e->path);
	}
	if (copies == 2)
		e->rgd[t] = (uint32_t)(at + gt_sectors);
	e->next_sector = at + gt_sectors * (uint64_t)copies;
	__atomic_store_n(&e->file_size, e->next_sector * VMDK_SECTOR,
			 __ATOMIC_RELEASE);
	e->gd_dirty = true;
	vmdk_note_data_written(e);
	free(e->gts[t]);
	__atomic_store_n(&e->gts[t], gt, __ATOMIC_RELEASE);
	__atomic_store_n(&e->gd[t], (uint32_t)at, __ATOMIC_RELEASE);
	return 0;
}

static int gte_set(struct img *img, struct vmdk_extent *e, uint64_t g,
		   uint32_t value)
{
	uint64_t t = g / e->gtes_per_gt;
	uint32_t *gt;
	int ret;

	if (t >= e->gd_entries)
		return img_error(img, -EIO,
				 "%s: grain %" PRIu64 " lies beyond the grain "
				 "directory",
				 e->path, g);
	ret = vmdk_gt_load(img, e, (uint32_t)t, &gt);
	if (ret)
		return ret;
	if (!gt) {
		ret = gt_allocate(img, e, (uint32_t)t);
		if (ret)
			return ret;
		gt = e->gts[t];
	}
	__atomic_store_n(&gt[g % e->gtes_per_gt], value, __ATOMIC_RELEASE);
	e->gt_dirty[t] = 1;
	return 0;
}

static int write_gt(struct img *img, struct vmdk_extent *e, uint32_t t)
{
	uint64_t bytes = (uint64_t)e->gtes_per_gt * 4;
	uint32_t *disk = malloc(bytes), i;
	int ret = 0;

	if (!disk)
		return -ENOMEM;
	for (i = 0; i < e->gtes_per_gt; i++)
		disk[i] = IMG_LE32(e->gts[t][i]);
	ret = img_file_pwrite(e->file, disk, bytes,
			      (uint64_t)e->gd[t] * VMDK_SECTOR);
	if (!ret && e->rgd_offset && e->rgd[t])
		ret = img_file_pwrite(e->file, disk, bytes,
				      (uint64_t)e->rgd[t] * VMDK_SECTOR);
	free(disk);
	if (ret)
		return vmdk_io_error(img, ret,
				     "%s: cannot write grain table %u", e->path,
				     t);
	return 0;
}

static int write_gd(struct img *img, struct vmdk_extent *e, const uint32_t *gd,
		    uint64_t sector)
{
	uint64_t bytes = (uint64_t)e->gd_entries * 4;
	uint32_t *disk = malloc(bytes), i;
	int ret;

	if (!disk)
		return -ENOMEM;
	for (i = 0; i < e->gd_entries; i++)
		disk[i] = IMG_LE32(gd[i]);
	ret = img_file_pwrite(e->file, disk, bytes, sector * VMDK_SECTOR);
	free(disk);
	if (ret)
		return vmdk_io_error(img, ret,
				     "%s: cannot write the grain directory",
				     e->path);
	return 0;
}

/* The grains first, then the tables that point at them (meta_lock held). */
static int extent_write_tables(struct img *img, struct vmdk_extent *e)
{
	uint32_t t;
	int ret = img_file_sync(e->file);

	if (ret)
		return vmdk_io_error(img, ret, "%s: fdatasync failed", e->path);
	for (t = 0; t < e->gd_entries; t++) {
		if (!e->gt_dirty[t])
			continue;
		ret = write_gt(img, e, t);
		if (ret)
			return ret;
		e->gt_dirty[t] = 0;
	}
	if (e->gd_dirty) {
		ret = write_gd(img, e, e->gd, e->gd_offset);
		if (!ret && e->rgd_offset)
			ret = write_gd(img, e, e->rgd, e->rgd_offset);
		if (ret)
			return ret;
		e->gd_dirty = false;
	}
	return 0;
}

int vmdk_extent_flush(struct img *img, struct vmdk_extent *e)
{
	bool meta, data;
	uint32_t t;
	int ret = 0;

	if (!e->writable)
		return 0;
	pthread_mutex_lock(&e->meta_lock);
	meta = e->gd_dirty;
	for (t = 0; t < e->gd_entries && !meta && e->gt_dirty; t++)
		meta = e->gt_dirty[t];
	/* Cleared before the sync: a parallel write that lands during it
	 * sets it again for the next flush. */
	data = __atomic_exchange_n(&e->needs_sync, false, __ATOMIC_ACQ_REL);
	if (meta)
		ret = extent_write_tables(img, e);
	pthread_mutex_unlock(&e->meta_lock);
	if (ret) {
		vmdk_note_data_written(e);
		return ret;
	}
	if (!meta && !data)
		return 0;
	ret = img_file_sync(e->file);
	if (ret) {
		vmdk_note_data_written(e);
		return vmdk_io_error(img, ret, "%s: fdatasync failed", e->path);
	}
	return 0;
}

/* Grows a sparse extent's capacity: more directory entries with fresh
 * grain tables; the directories move to the end of the file when their
 * area is too small.  Ordered: tables and directories first, synced, then
 * the header that makes them reachable. */
int vmdk_sparse_grow(struct img *img, struct vmdk_extent *e,
		     uint64_t new_capacity)
{
	uint32_t n = vmdk_gd_entries_for(new_capacity, e->grain_sectors,
					 e->gtes_per_gt);
	uint32_t old = e->gd_entries, t;
	uint64_t room = vmdk_gd_sectors(old) * VMDK_SECTOR / 4;
	void *p;
	int ret;

	if (e->compressed || e->cowd)
		return img_error(img, -ENOTSUP,
				 "%s: compressed and COWD extents cannot grow",
				 e->path);
	ret = vmdk_extent_flush(img, e);
	if (ret)
		return ret;
	if (n > old) {
		p = realloc(e->gd, (size_t)n * 4);
		if (!p)
			return -ENOMEM;
		e->gd = p;
		memset(e->gd + old, 0, (size_t)(n - old) * 4);
		if (e->rgd_offset) {
			p = realloc(e->rgd, (size_t)n * 4);
			if (!p)
				return -ENOMEM;
			e->rgd = p;
			memset(e->rgd + old, 0, (size_t)(n - old) * 4);
		}
		p = realloc(e->gts, (size_t)n * sizeof(*e->gts));
		if (!p)
			return -ENOMEM;
		e->gts = p;
		memset(e->gts + old, 0, (size_t)(n - old) * sizeof(*e->gts));
		p = realloc(e->gt_dirty, n);
		if (!p)
			return -ENOMEM;
		e->gt_dirty = p;
		memset(e->gt_dirty + old, 0, n - old);
		e->gd_entries = n;
		for (t = old; t < n; t++) {
			ret = gt_allocate(img, e, t);
			if (ret)
				return ret;
		}
		if (n > room) {
			uint64_t gds = vmdk_gd_sectors(n);

			if (e->rgd_offset) {
				e->rgd_offset = e->next_sector;
				e->next_sector += gds;
			}
			e->gd_offset = e->next_sector;
			e->next_sector += gds;
			e->file_size = e->next_sector * VMDK_SECTOR;
		}
		ret = img_file_sync(e->file);
		if (ret)
			return vmdk_io_error(img, ret, "%s: fdatasync failed",
					     e->path);
		ret = write_gd(img, e, e->gd, e->gd_offset);
		if (!ret && e->rgd_offset)
			ret = write_gd(img, e, e->rgd, e->rgd_offset);
		if (ret)
			return ret;
		e->gd_dirty = false;
		ret = img_file_sync(e->file);
		if (ret)
			return vmdk_io_error(img, ret, "%s: fdatasync failed",
					     e->path);
	}
	e->header.capacity = new_capacity;
	e->header.gd_offset = e->gd_offset;
	if (e->rgd_offset)
		e->header.rgd_offset = e->rgd_offset;
	ret = vmdk_sparse_write_header(img, e);
	if (!ret)
		ret = img_file_sync(e->file);
	return ret;
}

/* ---- opening ----------------------------------------------------------*/

static int read_footer(struct img *img, struct vmdk_extent *e,
		       struct vmdk_sparse_header *h)
{
	uint8_t tail[3 * VMDK_SECTOR];
	uint64_t lba;
	uint32_t size;
	int ret;

	if (e->file_size < 4 * VMDK_SECTOR)
		return img_error(img, -EINVAL,
				 "%s: streamOptimized extent too short for a "
				 "footer",
				 e->path);
	ret = img_file_pread(e->file, tail, sizeof(tail),
			     (e->file_size & ~(uint64_t)(VMDK_SECTOR - 1)) -
				     sizeof(tail));
	if (ret)
		return vmdk_io_error(img, ret, "%s: cannot read the footer",
				     e->path);
	if (vmdk_marker_parse(tail, &lba, &size) != VMDK_MARKER_FOOTER ||
	    vmdk_marker_parse(tail + 2 * VMDK_SECTOR, &lba, &size) !=
		    VMDK_MARKER_EOS)
		return img_error(img, -EINVAL,
				 "%s: streamOptimized extent has no footer and "
				 "end-of-stream marker (incomplete stream?)",
				 e->path);
	memcpy(h, tail + VMDK_SECTOR, sizeof(*h));
	vmdk_sparse_header_to_cpu(h);
	if (h->gd_offset == VMDK_GD_AT_END)
		return img_error(img, -EINVAL,
				 "%s: footer has no grain directory offset",
				 e->path);
	return 0;
}

static int load_directory(struct img *img, struct vmdk_extent *e,
			  uint64_t sector, uint32_t **out)
{
	uint64_t bytes = (uint64_t)e->gd_entries * 4;
	uint32_t *gd = calloc(e->gd_entries ? e->gd_entries : 1, 4), i;
	uint64_t gt_bytes = (uint64_t)e->gtes_per_gt * 4;
	bool check = img_open_flags(img) & IMG_OPEN_CHECK;
	int ret;

	if (!gd)
		return -ENOMEM;
	ret = img_file_pread(e->file, gd, bytes, sector * VMDK_SECTOR);
	if (ret) {
		free(gd);
		return vmdk_io_error(img, ret,
				     "%s: cannot read the grain directory",
				     e->path);
	}
	for (i = 0; i < e->gd_entries; i++) {
		gd[i] = IMG_LE32(gd[i]);
		if (gd[i] &&
		    ((uint64_t)gd[i] * VMDK_SECTOR + gt_bytes > e->file_size ||
		     gd[i] < 1)) {
			uint32_t bad = gd[i];

			if (check)
				continue; /* check reports it */
			free(gd);
			return img_error(img, -EINVAL,
					 "%s: grain directory entry %u (grain "
					 "table at sector %u) points past the "
					 "end of the file",
					 e->path, i, bad);
		}
	}
	*out = gd;
	return 0;
}

static int open_cowd(struct img *img, struct vmdk_extent *e)
{
	struct vmdk_cowd_header h;
	int ret;

	ret = img_file_pread(e->file, &h, sizeof(h), 0);
	if (ret)
		return vmdk_io_error(
			img, ret, "%s: cannot read the COWD header", e->path);
	vmdk_cowd_header_to_cpu(&h);
	if (h.magic != VMDK_COWD_MAGIC)
		return img_error(img, -EINVAL,
				 "%s: VMFSSPARSE extent without 'COWD' magic",
				 e->path);
	if (!h.grain_size || (h.grain_size & (h.grain_size - 1)) ||
	    h.grain_size > 2048)
		return img_error(img, -EINVAL,
				 "%s: COWD grain size %u sectors is invalid",
				 e->path, h.grain_size);
	e->sparse = true;
	e->cowd = true;
	e->grain_sectors = h.grain_size;
	e->gtes_per_gt = VMDK_COWD_GTES_PER_GT;
	e->gd_entries = vmdk_gd_entries_for(h.capacity, h.grain_size,
					    VMDK_COWD_GTES_PER_GT);
	if (h.num_gd_entries < e->gd_entries)
		e->gd_entries = h.num_gd_entries;
	e->gd_offset = h.gd_offset;
	if (!h.gd_offset ||
	    (uint64_t)h.gd_offset * VMDK_SECTOR + (uint64_t)e->gd_entries * 4 >
		    e->file_size)
		return img_error(img, -EINVAL,
				 "%s: COWD grain directory lies outside the "
				 "file",
				 e->path);
	e->header.capacity = h.capacity;
	e->writable = false;
	return load_directory(img, e, e->gd_offset, &e->gd);
}

static int open_sparse(struct img *img, struct vmdk_extent *e, int index)
{
	struct vmdk_state *s = img_state(img);
	struct vmdk_sparse_header h;
	char err[256];
	uint32_t gd_entries;
	bool check = img_open_flags(img) & IMG_OPEN_CHECK;
	uint32_t magic;
	int ret;

	ret = img_file_pread_zero_eof(e->file, &h, sizeof(h), 0);
	if (ret)
		return vmdk_io_error(img, ret, "%s: cannot read the header",
				     e->path);
	magic = IMG_LE32(h.magic);
	if (e->type == VMDK_EXTENT_VMFSSPARSE || magic == VMDK_COWD_MAGIC)
		return open_cowd(img, e);
	vmdk_sparse_header_to_cpu(&h);
	ret = vmdk_sparse_header_validate(&h, e->file_size, &gd_entries, err,
					  sizeof(err));
	if (ret)
		return img_error(img, ret, "%s (extent %d): %s", e->path, index,
				 err);
	e->header = h;
	if (h.gd_offset == VMDK_GD_AT_END) {
		ret = read_footer(img, e, &h);
		if (ret)
			return ret;
		ret = vmdk_sparse_header_validate(&h, e->file_size, &gd_entries,
						  err, sizeof(err));
		if (ret)
			return img_error(img, ret, "%s (extent %d) footer: %s",
					 e->path, index, err);
		e->header.gd_offset = h.gd_offset;
		e->header.rgd_offset = h.rgd_offset;
		e->header.flags = h.flags;
	}
	e->sparse = true;
	e->compressed = h.flags & VMDK_FLAG_COMPRESSED;
	e->markers = h.flags & VMDK_FLAG_MARKERS;
	e->zero_grain = (h.flags & VMDK_FLAG_ZERO_GRAIN) && h.version >= 2;
	e->grain_sectors = (uint32_t)h.grain_size;
	e->gtes_per_gt = h.num_gtes_per_gt;
	e->gd_entries = gd_entries;
	e->gd_offset = h.gd_offset;
	e->rgd_offset = (h.flags & VMDK_FLAG_REDUNDANT_GT) ? h.rgd_offset : 0;
	if (h.capacity < e->sectors && !check)
		return img_error(img, -EINVAL,
				 "%s (extent %d): header capacity %" PRIu64
				 " sectors is smaller than the descriptor's "
				 "%" PRIu64 " (run check)",
				 e->path, index, h.capacity, e->sectors);
	if (e->file_size < h.overhead * VMDK_SECTOR && !e->compressed && !check)
		return img_error(img, -EINVAL,
				 "%s (extent %d): file is %" PRIu64
				 " bytes, shorter than its %" PRIu64
				 "-sector metadata (truncated?)",
				 e->path, index, e->file_size, h.overhead);
	ret = load_directory(img, e, e->gd_offset, &e->gd);
	if (ret)
		return ret;
	if (e->rgd_offset) {
		ret = load_directory(img, e, e->rgd_offset, &e->rgd);
		if (ret)
			return ret;
	}
	if (e->compressed && e->writable && !s->stream)
		e->writable = false;
	return 0;
}

static void extent_close(struct vmdk_extent *e)
{
	uint32_t t;

	if (e->gts) {
		for (t = 0; t < e->gd_entries; t++)
			free(e->gts[t]);
		free(e->gts);
	}
	free(e->gt_dirty);
	free(e->gd);
	free(e->rgd);
	if (e->meta_lock_init)
		pthread_mutex_destroy(&e->meta_lock);
	if (e->own_file_open)
		img_file_close(&e->own_file);
	free(e->path);
}

static void state_free(struct vmdk_state *s)
{
	int i;

	for (i = 0; i < s->nextents; i++)
		if (s->extents[i]) {
			extent_close(s->extents[i]);
			free(s->extents[i]);
		}
	free(s->extents);
	s->extents = NULL;
	s->nextents = 0;
	vmdk_desc_free(&s->desc);
	if (s->main_open)
		img_file_close(&s->main_file);
	s->main_open = false;
	if (s->first_write_lock_init)
		pthread_mutex_destroy(&s->first_write_lock);
	s->first_write_lock_init = false;
}

static bool same_file(struct img_file *f, const char *path)
{
	return img_file_same(f, path);
}

int vmdk_extent_open(struct img *img, struct vmdk_extent *e,
		     const struct vmdk_desc_extent *d, int i)
{
	struct vmdk_state *s = img_state(img);
	bool check = img_open_flags(img) & IMG_OPEN_CHECK;
	int ret;

	e->type = d->type;
	e->access = d->access;
	e->sectors = d->sectors;
	e->flat_offset = d->offset;
	if (d->sectors > (UINT64_C(1) << 40) ||
	    e->start + d->sectors > (UINT64_C(1) << 40))
		return img_error(img, -EINVAL,
				 "extent %d: size %" PRIu64
				 " sectors is too big",
				 i, d->sectors);
	e->writable = s->writable && d->access == VMDK_ACCESS_RW;
	if (d->type == VMDK_EXTENT_ZERO)
		return 0;
	if (d->type == VMDK_EXTENT_SESPARSE)
		return img_error(img, -ENOTSUP,
				 "extent %d (%s): seSparse extents are not "
				 "supported",
				 i, d->filename);
	if (d->access == VMDK_ACCESS_NOACCESS)
		return img_error(img, -EACCES,
				 "extent %d (%s) is marked NOACCESS", i,
				 d->filename);
	/* An embedded descriptor describes its own file, whatever name it
	 * gives (iotest-version3.vmdk says "generated-stream.vmdk"). */
	if (!s->has_desc || (s->desc_embedded && s->desc.nextents == 1))
		e->path = strdup(img_filename(img));
	else
		e->path = vmdk_path_join(img_dirname(img), d->filename);
	if (!e->path)
		return -ENOMEM;
	if (!s->has_desc || (s->desc_embedded && s->desc.nextents == 1) ||
	    (s->desc_embedded && same_file(&s->main_file, e->path))) {
		e->file = &s->main_file;
	} else {
		ret = img_file_open(img, &e->own_file, e->path, e->writable);
		if (ret)
			return vmdk_io_error(img, ret,
					     "extent %d (%s) cannot be opened",
					     i, d->filename);
		e->own_file_open = true;
		e->file = &e->own_file;
	}
	ret = img_file_size(e->file, &e->file_size);
	if (ret)
		return vmdk_io_error(img, ret, "%s: cannot get its size",
				     e->path);
	if (d->type == VMDK_EXTENT_FLAT || d->type == VMDK_EXTENT_VMFS) {
		uint64_t need = (d->offset + d->sectors) * VMDK_SECTOR;

		if (e->file_size < need && !check && !e->file->is_block_device)
			return img_error(img, -EINVAL,
					 "extent %d (%s): file is %" PRIu64
					 " bytes, the extent needs %" PRIu64,
					 i, d->filename, e->file_size, need);
		return 0;
	}
	ret = open_sparse(img, e, i);
	if (ret)
		return ret;
	e->gts = calloc(e->gd_entries ? e->gd_entries : 1, sizeof(*e->gts));
	e->gt_dirty = calloc(e->gd_entries ? e->gd_entries : 1, 1);
	if (!e->gts || !e->gt_dirty)
		return -ENOMEM;
	{
		pthread_mutexattr_t attr;

		pthread_mutexattr_init(&attr);
		pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
		pthread_mutex_init(&e->meta_lock, &attr);
		pthread_mutexattr_destroy(&attr);
	}
	e->meta_lock_init = true;
	e->next_sector = (e->file_size + VMDK_SECTOR - 1) / VMDK_SECTOR;
	if (e->next_sector < e->header.overhead)
		e->next_sector = e->header.overhead;
	return 0;
}

static int open_extents(struct img *img)
{
	struct vmdk_state *s = img_state(img);
	uint64_t start = 0;
	int i, ret;

	s->extents = calloc((size_t)s->desc.nextents, sizeof(*s->extents));
	if (!s->extents)
		return -ENOMEM;
	for (i = 0; i < s->desc.nextents; i++) {
		struct vmdk_extent *e = calloc(1, sizeof(*e));

		if (!e)
			return -ENOMEM;
		s->extents[i] = e;
		s->nextents = i + 1;
		e->start = start;
		ret = vmdk_extent_open(img, e, &s->desc.extents[i], i);
		if (ret)
			return ret;
		start += e->sectors;
	}
	return 0;
}

/* Reads the main file: an embedded descriptor, a text descriptor, or a
 * bare sparse extent (synthesise a one-extent descriptor). */
static int load_descriptor(struct img *img)
{
	struct vmdk_state *s = img_state(img);
	struct vmdk_sparse_header h;
	char err[256];
	uint64_t size;
	char *text = NULL;
	uint32_t magic, gd_entries;
	int ret;

	ret = img_file_size(&s->main_file, &size);
	if (ret)
		return vmdk_io_error(img, ret, "cannot get the file size");
	ret = img_file_pread_zero_eof(&s->main_file, &h, sizeof(h), 0);
	if (ret)
		return vmdk_io_error(img, ret, "cannot read the first sector");
	magic = IMG_LE32(h.magic);
	if (magic == VMDK_SESPARSE_MAGIC)
		return img_error(img, -ENOTSUP,
				 "this is a bare seSparse extent (magic "
				 "0xcafebabe) without its descriptor; seSparse "
				 "is not supported");
	if (magic == VMDK_SPARSE_MAGIC) {
		vmdk_sparse_header_to_cpu(&h);
		ret = vmdk_sparse_header_validate(&h, size, &gd_entries, err,
						  sizeof(err));
		if (ret)
			return img_error(img, ret, "%s", err);
		if (h.desc_offset) {
			s->has_desc = true;
			s->desc_embedded = true;
			s->desc_offset = h.desc_offset * VMDK_SECTOR;
			s->desc_area = h.desc_size * VMDK_SECTOR;
			text = malloc(s->desc_area);
			if (!text)
				return -ENOMEM;
			ret = img_file_pread(&s->main_file, text, s->desc_area,
					     s->desc_offset);
			if (ret) {
				free(text);
				return vmdk_io_error(img, ret,
						     "cannot read the embedded "
						     "descriptor");
			}
			ret = vmdk_desc_parse(&s->desc, text, s->desc_area, err,
					      sizeof(err));
			free(text);
			if (ret)
				return img_error(img, ret,
						 "embedded descriptor: %s",
						 err);
			return 0;
		}
		/* A bare extent (e.g. name-s001.vmdk) opened directly. */
		memset(&s->desc, 0, sizeof(s->desc));
		s->desc.parent_cid = VMDK_CID_NONE;
		snprintf(s->desc.create_type, sizeof(s->desc.create_type), "%s",
			 (h.flags & VMDK_FLAG_COMPRESSED) ? "streamOptimized"
							  : "monolithicSparse");
		return vmdk_desc_add_extent(&s->desc, VMDK_ACCESS_RW,
					    h.capacity, VMDK_EXTENT_SPARSE,
					    img_filename(img), 0);
	}
	if (magic == VMDK_COWD_MAGIC) {
		struct vmdk_cowd_header c;

		memcpy(&c, &h, sizeof(c));
		vmdk_cowd_header_to_cpu(&c);
		memset(&s->desc, 0, sizeof(s->desc));
		s->desc.parent_cid = VMDK_CID_NONE;
		snprintf(s->desc.create_type, sizeof(s->desc.create_type),
			 "vmfsSparse");
		return vmdk_desc_add_extent(&s->desc, VMDK_ACCESS_RDONLY,
					    c.capacity, VMDK_EXTENT_VMFSSPARSE,
					    img_filename(img), 0);
	}
	if (size > VMDK_DESC_MAX_BYTES)
		return img_error(img, -EINVAL,
				 "not a VMDK: no sparse magic and too big "
				 "(%" PRIu64 " bytes) for a descriptor",
				 size);
	text = malloc(size + 1);
	if (!text)
		return -ENOMEM;
	ret = img_file_pread(&s->main_file, text, size, 0);
	if (ret) {
		free(text);
		return vmdk_io_error(img, ret, "cannot read the descriptor");
	}
	ret = vmdk_desc_parse(&s->desc, text, size, err, sizeof(err));
	free(text);
	if (ret)
		return img_error(img, ret, "descriptor: %s", err);
	s->has_desc = true;
	return 0;
}

/* Flat and VMFS extents keep data at fixed places: a write touches no
 * metadata after the first one, so writes may run in parallel. */
static int vmdk_open(struct img *img)
{
	struct vmdk_state *s = img_state(img);
	unsigned flags = img_open_flags(img);
	int i, ret;

	s->writable = flags & IMG_OPEN_RDWR;
	pthread_mutex_init(&s->first_write_lock, NULL);
	s->first_write_lock_init = true;
	ret = img_file_open(img, &s->main_file, img_filename(img), s->writable);
	if (ret)
		goto fail;
	s->main_open = true;
	ret = load_descriptor(img);
	if (ret)
		goto fail;
	s->stream = !strcmp(s->desc.create_type, "streamOptimized");
	ret = open_extents(img);
	if (ret)
		goto fail;
	for (i = 0; i < s->nextents; i++) {
		if (s->extents[i]->compressed)
			s->stream = true;
	}
	if (s->stream && s->writable && (flags & IMG_OPEN_SEQUENTIAL)) {
		ret = vmdk_stream_writer_open(img);
		if (ret)
			goto fail;
	}
	img_set_size(img, vmdk_desc_total_sectors(&s->desc) * VMDK_SECTOR);
	img_set_parallel_rw(img, !s->stream);
	if (s->desc.parent_hint && !(flags & IMG_OPEN_NO_BACKING)) {
		ret = img_add_backing_candidate(img, s->desc.parent_hint, NULL);
		if (ret)
			goto fail;
	}
	return 0;
fail:
	vmdk_stream_writer_free(img);
	state_free(s);
	return ret;
}

static void vmdk_close(struct img *img)
{
	struct vmdk_state *s = img_state(img);
	int i;

	if (s->writable && s->touched && !s->writer) {
		for (i = 0; i < s->nextents; i++) {
			struct vmdk_extent *e = s->extents[i];

			if (!e->sparse || !e->writable || e->compressed ||
			    !e->header_dirty_flag)
				continue;
			if (vmdk_extent_flush(img, e))
				continue; /* keep the flag: check will look */
			e->header.unclean_shutdown = 0;
			if (!vmdk_sparse_write_header(img, e))
				img_file_sync(e->file);
		}
	}
	vmdk_stream_writer_free(img);
	state_free(s);
}

/* ---- reading -----------------------------------------------------------*/

static struct vmdk_extent *find_extent(struct vmdk_state *s, uint64_t sector)
{
	int lo = 0, hi = s->nextents - 1;

	while (lo < hi) {
		int mid = (lo + hi + 1) / 2;

		if (s->extents[mid]->start <= sector)
			lo = mid;
		else
			hi = mid - 1;
	}
	return s->extents[lo];
}

/* The extent holding byte pos of a request [off, off + len) (pos counts
 * from off), where in it that byte is (*eoff), and how much of the
 * request from there it holds (*n). */
static struct vmdk_extent *extent_piece(struct vmdk_state *s, uint64_t off,
					uint64_t pos, uint64_t len,
					uint64_t *eoff, uint64_t *n)
{
	struct vmdk_extent *e = find_extent(s, (off + pos) / VMDK_SECTOR);

	*eoff = off + pos - e->start * VMDK_SECTOR;
	*n = e->sectors * VMDK_SECTOR - *eoff;
	if (*n > len - pos)
		*n = len - pos;
	return e;
}

int vmdk_read_compressed_grain(struct img *img, struct vmdk_extent *e,
			       uint32_t sector, uint64_t grain, uint8_t *out)
{
	uint64_t gbytes = GRAIN_BYTES(e), off = (uint64_t)sector * VMDK_SECTOR;
	size_t want = gbytes + 2 * VMDK_SECTOR, have;
	struct vmdk_grain_marker m;
	uint8_t *buf;
	uLongf dlen = gbytes;
	int ret, z;

	if (off >= e->file_size)
		return img_error(img, -EIO,
				 "%s: compressed grain %" PRIu64
				 " at sector %u lies past the end of the file",
				 e->path, grain, sector);
	if (want > e->file_size - off)
		want = e->file_size - off;
	buf = malloc(want > 4 * gbytes ? want : 4 * gbytes);
	if (!buf)
		return -ENOMEM;
	have = want;
	ret = img_file_pread(e->file, buf, have, off);
	if (ret) {
		vmdk_io_error(img, ret,
			      "%s: cannot read compressed grain %" PRIu64,
			      e->path, grain);
		goto out;
	}
	memcpy(&m, buf, sizeof(m));
	m.lba = IMG_LE64(m.lba);
	m.size = IMG_LE32(m.size);
	if (!m.size || m.size > 2 * gbytes + 1024 ||
	    sizeof(m) + m.size > e->file_size - off) {
		ret = img_error(img, -EIO,
				"%s: compressed grain %" PRIu64
				" at sector %u has an invalid size %u",
				e->path, grain, sector, m.size);
		goto out;
	}
	if (m.lba != grain * e->grain_sectors) {
		ret = img_error(img, -EIO,
				"%s: compressed grain at sector %u is for LBA "
				"%" PRIu64 ", expected %" PRIu64,
				e->path, sector, m.lba,
				grain * e->grain_sectors);
		goto out;
	}
	if (sizeof(m) + m.size > have) {
		ret = img_file_pread(e->file, buf + have,
				     sizeof(m) + m.size - have, off + have);
		if (ret) {
			vmdk_io_error(
				img, ret,
				"%s: cannot read compressed grain %" PRIu64,
				e->path, grain);
			goto out;
		}
	}
	z = uncompress(out, &dlen, buf + sizeof(m), m.size);
	if (z != Z_OK) {
		ret = img_error(
			img, -EIO,
			"%s: compressed grain %" PRIu64
			" at sector %u does not inflate (zlib error %d)",
			e->path, grain, sector, z);
		goto out;
	}
	if (dlen < gbytes)
		memset(out + dlen, 0, gbytes - dlen);
	ret = 0;
out:
	free(buf);
	return ret;
}

/* Flat extents that check found too short read as zeros past the end. */
static int read_flat(struct img *img, struct vmdk_extent *e,
		     struct img_iov_view *w, uint64_t host)
{
	int i, ret;

	if (!(img_open_flags(img) & IMG_OPEN_CHECK))
		return img_file_preadv(e->file, w->iov, w->cnt, host);
	for (i = 0; i < w->cnt; i++) {
		ret = img_file_pread_zero_eof(e->file, w->iov[i].iov_base,
					      w->iov[i].iov_len, host);
		if (ret)
			return ret;
		host += w->iov[i].iov_len;
	}
	return 0;
}

enum run_kind { RUN_UNALLOC, RUN_ZERO, RUN_DATA, RUN_COMPRESSED };

static enum run_kind gte_kind(const struct vmdk_extent *e, uint32_t gte)
{
	if (!gte)
		return RUN_UNALLOC;
	if (gte == VMDK_GTE_ZERO && (e->zero_grain || e->cowd))
		return RUN_ZERO;
	return e->compressed ? RUN_COMPRESSED : RUN_DATA;
}

/* The run of grains of one kind starting at extent byte eoff, at most len
 * long; data runs also need contiguous host grains. */
static int sparse_run(struct img *img, struct vmdk_extent *e, uint64_t eoff,
		      uint64_t len, enum run_kind *kind, uint64_t *host,
		      uint64_t *run)
{
	uint64_t gbytes = GRAIN_BYTES(e);
	uint64_t g = eoff / gbytes, n;
	uint32_t gte, first;
	int ret;

	ret = gte_get(img, e, g, &gte);
	if (ret)
		return ret;
	first = gte;
	*kind = gte_kind(e, gte);
	*host = (uint64_t)gte * VMDK_SECTOR + eoff % gbytes;
	n = gbytes - eoff % gbytes;
	if (*kind == RUN_COMPRESSED) {
		/* The grain's marker sector: it is inflated as a whole. */
		*host = (uint64_t)gte * VMDK_SECTOR;
		*run = n < len ? n : len;
		return 0;
	}
	while (n < len) {
		g++;
		ret = gte_get(img, e, g, &gte);
		if (ret)
			return ret;
		if (gte_kind(e, gte) != *kind)
			break;
		if (*kind == RUN_DATA &&
		    (uint64_t)gte != first + (n + eoff % gbytes) / VMDK_SECTOR)
			break;
		n += gbytes;
	}
	*run = n < len ? n : len;
	return 0;
}

static int read_sparse(struct img *img, struct vmdk_extent *e, uint64_t eoff,
		       const struct iovec *iov, int iovcnt, size_t pos,
		       size_t len, uint64_t voff, struct img_iov_view *w)
{
	uint64_t gbytes = GRAIN_BYTES(e);
	uint64_t cap_bytes = e->header.capacity * VMDK_SECTOR;
	uint8_t *grain = NULL;
	size_t done = 0;
	int ret = 0;

	while (done < len) {
		enum run_kind kind;
		uint64_t host, run;

		if (eoff + done >= cap_bytes) {
			/* Past the header's capacity (check mode only). */
			img_iov_memset(iov, iovcnt, pos + done, 0, len - done);
			break;
		}
		ret = sparse_run(img, e, eoff + done, len - done, &kind, &host,
				 &run);
		if (ret)
			goto out;
		switch (kind) {
		case RUN_UNALLOC:
			ret = img_iov_view_set(w, NULL, 0, iov, iovcnt,
					       pos + done, run);
			if (!ret)
				ret = img_read_backing(img, voff + done, w->iov,
						       w->cnt, run);
			break;
		case RUN_ZERO:
			img_iov_memset(iov, iovcnt, pos + done, 0, run);
			break;
		case RUN_DATA:
			if (host + run >
			    __atomic_load_n(&e->file_size, __ATOMIC_ACQUIRE)) {
				ret = img_error(img, -EIO,
						"%s: grain for byte %" PRIu64
						" points past the end of the "
						"file",
						e->path, eoff + done);
				break;
			}
			ret = img_iov_view_set(w, NULL, 0, iov, iovcnt,
					       pos + done, run);
			if (!ret)
				ret = img_file_preadv(e->file, w->iov, w->cnt,
						      host);
			if (ret && ret != -ENOMEM)
				vmdk_io_error(img, ret,
					      "%s: read failed at %" PRIu64,
					      e->path, host);
			break;
		case RUN_COMPRESSED:
			if (!grain) {
				grain = malloc(gbytes);
				if (!grain) {
					ret = -ENOMEM;
					break;
				}
			}
			ret = vmdk_read_compressed_grain(
				img, e, (uint32_t)(host / VMDK_SECTOR),
				(eoff + done) / gbytes, grain);
			if (!ret)
				img_iov_from_buf(iov, iovcnt, pos + done,
						 grain + (eoff + done) % gbytes,
						 run);
			break;
		}
		if (ret)
			goto out;
		done += run;
	}
out:
	free(grain);
	return ret;
}

static int vmdk_preadv(struct img *img, uint64_t off, const struct iovec *iov,
		       int iovcnt, size_t len)
{
	struct vmdk_state *s = img_state(img);
	struct img_iov_view w;
	size_t pos = 0;
	int ret;

	ret = img_iov_view_init(&w, iovcnt);
	if (ret)
		return ret;
	while (pos < len) {
		uint64_t eoff, n;
		struct vmdk_extent *e =
			extent_piece(s, off, pos, len, &eoff, &n);

		switch (e->type) {
		case VMDK_EXTENT_ZERO:
			img_iov_memset(iov, iovcnt, pos, 0, n);
			break;
		case VMDK_EXTENT_FLAT:
		case VMDK_EXTENT_VMFS:
			ret = img_iov_view_set(&w, NULL, 0, iov, iovcnt, pos,
					       n);
			if (ret)
				break;
			ret = read_flat(img, e, &w,
					e->flat_offset * VMDK_SECTOR + eoff);
			if (ret)
				vmdk_io_error(img, ret, "%s: read failed",
					      e->path);
			break;
		default:
			ret = read_sparse(img, e, eoff, iov, iovcnt, pos, n,
					  off + pos, &w);
			break;
		}
		if (ret)
			break;
		pos += n;
	}
	img_iov_view_release(&w);
	return ret;
}

/* ---- writing -----------------------------------------------------------*/

static int first_write_locked(struct img *img)
{
	struct vmdk_state *s = img_state(img);
	uint32_t cid;
	int i, ret;

	if (s->has_desc) {
		do {
			img_random_bytes(&cid, sizeof(cid));
		} while (cid == s->desc.cid || cid == VMDK_CID_NONE);
		s->desc.cid = cid;
		ret = vmdk_write_descriptor(img);
		if (ret)
			return ret;
	}
	for (i = 0; i < s->nextents && !s->writer; i++) {
		struct vmdk_extent *e = s->extents[i];

		if (!e->sparse || !e->writable || e->compressed || e->cowd)
			continue;
		e->header.unclean_shutdown = 1;
		ret = vmdk_sparse_write_header(img, e);
		if (ret)
			return ret;
		e->header_dirty_flag = true;
	}
	__atomic_store_n(&s->touched, true, __ATOMIC_RELEASE);
	return 0;
}

static int first_write(struct img *img)
{
	struct vmdk_state *s = img_state(img);
	int ret = 0;

	if (__atomic_load_n(&s->touched, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&s->first_write_lock);
	if (!s->touched)
		ret = first_write_locked(img);
	pthread_mutex_unlock(&s->first_write_lock);
	return ret;
}

static int extent_writable(struct img *img, struct vmdk_extent *e)
{
	if (e->writable)
		return 0;
	if (e->cowd)
		return img_error(img, -ENOTSUP,
				 "%s: VMFSSPARSE (COWD) extents are read-only "
				 "here",
				 e->path);
	if (e->type == VMDK_EXTENT_ZERO)
		return img_error(img, -EROFS, "cannot write to a ZERO extent");
	return img_error(img, -EROFS, "%s: extent is read-only", e->path);
}

/* Appends grains for a run of unallocated (or zero) grains [g, g+count)
 * with data from buf (count grains, complete). */
static int append_grains(struct img *img, struct vmdk_extent *e, uint64_t g,
			 uint64_t count, const struct iovec *iov, int iovcnt)
{
	uint64_t sector = e->next_sector, i;
	int ret;

	if (sector + count * e->grain_sectors > UINT32_MAX)
		return img_error(img, -EFBIG,
				 "%s: extent file is full (grain offsets are "
				 "32-bit)",
				 e->path);
	ret = img_file_pwritev(e->file, iov, iovcnt, sector * VMDK_SECTOR);
	if (ret)
		return vmdk_io_error(img, ret, "%s: cannot write grains",
				     e->path);
	e->next_sector += count * e->grain_sectors;
	if (e->file_size < e->next_sector * VMDK_SECTOR)
		__atomic_store_n(&e->file_size, e->next_sector * VMDK_SECTOR,
				 __ATOMIC_RELEASE);
	vmdk_note_data_written(e);
	for (i = 0; i < count; i++) {
		ret = gte_set(img, e, g + i,
			      (uint32_t)(sector + i * e->grain_sectors));
		if (ret)
			return ret;
	}
	return 0;
}

/* One grain not fully covered (or with a parent to merge): build it in a
 * buffer from the parent (or zeros) and the new data. */
static int write_partial_grain(struct img *img, struct vmdk_extent *e,
			       uint64_t g, uint32_t gte, uint64_t in_grain,
			       const struct iovec *iov, int iovcnt, size_t pos,
			       size_t n)
{
	uint64_t gbytes = GRAIN_BYTES(e);
	uint64_t gstart = e->start * VMDK_SECTOR + g * gbytes; /* virtual */
	uint64_t ext_end = (e->start + e->sectors) * VMDK_SECTOR;
	uint64_t valid = ext_end - gstart < gbytes ? ext_end - gstart : gbytes;
	struct iovec one;
	uint8_t *buf;
	int ret = 0;

	buf = calloc(1, gbytes);
	if (!buf)
		return -ENOMEM;
	if (gte != VMDK_GTE_ZERO || !(e->zero_grain || e->cowd)) {
		/* Unallocated: what the parent holds shows through. */
		if (in_grain) {
			one = (struct iovec){ buf, in_grain };
			ret = img_read_backing(img, gstart, &one, 1, in_grain);
		}
		if (!ret && in_grain + n < valid) {
			one = (struct iovec){ buf + in_grain + n,
					      valid - in_grain - n };
			ret = img_read_backing(img, gstart + in_grain + n, &one,
					       1, valid - in_grain - n);
		}
	}
	if (!ret) {
		img_iov_to_buf(iov, iovcnt, pos, buf + in_grain, n);
		one = (struct iovec){ buf, gbytes };
		ret = append_grains(img, e, g, 1, &one, 1);
	}
	free(buf);
	return ret;
}

/* Store the run at extent byte eoff + done (kind and run as looked up
 * under meta_lock, not in place): partial grains built over what they
 * read as, whole ones appended.  Sets *consumed to the bytes stored. */
static int write_sparse_fresh(struct img *img, struct vmdk_extent *e,
			      uint64_t eoff, const struct iovec *iov,
			      int iovcnt, size_t pos, size_t len, size_t done,
			      enum run_kind kind, uint64_t run,
			      struct img_iov_view *w, size_t *consumed)
{
	uint64_t gbytes = GRAIN_BYTES(e);
	uint64_t in_grain = (eoff + done) % gbytes;
	uint64_t g = (eoff + done) / gbytes;
	bool backing = img_backing(img) != NULL;
	uint64_t count, i, start = 0;
	uint32_t gte;
	int ret;

	if (kind == RUN_COMPRESSED)
		return img_error(img, -ENOTSUP,
				 "compressed grains cannot be rewritten");
	ret = gte_get(img, e, g, &gte);
	if (ret)
		return ret;
	if (in_grain || run < gbytes) {
		size_t n = gbytes - in_grain;

		if (n > len - done)
			n = len - done;
		if (!img_iov_range_is_zero(iov, iovcnt, pos + done, n) ||
		    (backing && kind == RUN_UNALLOC)) {
			ret = write_partial_grain(img, e, g, gte, in_grain, iov,
						  iovcnt, pos + done, n);
			if (ret)
				return ret;
		}
		*consumed = n;
		return 0;
	}
	/* Whole grains: skip all-zero ones that already read as zero,
	 * append the others in one write. */
	count = run / gbytes;
	for (i = 0; i <= count; i++) {
		bool zero = i < count &&
			    img_iov_range_is_zero(iov, iovcnt,
						  pos + done + i * gbytes,
						  gbytes) &&
			    (kind == RUN_ZERO || !backing);

		if (i < count && !zero)
			continue;
		if (i > start) {
			ret = img_iov_view_set(w, NULL, 0, iov, iovcnt,
					       pos + done + start * gbytes,
					       (i - start) * gbytes);
			if (!ret)
				ret = append_grains(img, e, g + start,
						    i - start, w->iov, w->cnt);
			if (ret)
				return ret;
		}
		start = i + 1;
	}
	*consumed = count * gbytes;
	return 0;
}

static int write_sparse(struct img *img, struct vmdk_extent *e, uint64_t eoff,
			const struct iovec *iov, int iovcnt, size_t pos,
			size_t len, struct img_iov_view *w)
{
	size_t done = 0, n = 0;
	int ret = 0;

	while (done < len) {
		enum run_kind kind;
		uint64_t host, run;

		ret = sparse_run(img, e, eoff + done, len - done, &kind, &host,
				 &run);
		if (ret)
			return ret;
		if (kind != RUN_DATA) {
			pthread_mutex_lock(&e->meta_lock);
			ret = sparse_run(img, e, eoff + done, len - done, &kind,
					 &host, &run);
			if (!ret && kind != RUN_DATA)
				ret = write_sparse_fresh(img, e, eoff, iov,
							 iovcnt, pos, len, done,
							 kind, run, w, &n);
			pthread_mutex_unlock(&e->meta_lock);
			if (ret)
				return ret;
			/* else appended by a parallel write meanwhile */
			if (kind != RUN_DATA) {
				done += n;
				continue;
			}
		}
		ret = img_iov_view_set(w, NULL, 0, iov, iovcnt, pos + done,
				       run);
		if (!ret)
			ret = img_file_pwritev(e->file, w->iov, w->cnt, host);
		if (ret)
			return vmdk_io_error(img, ret,
					     "%s: write failed at %" PRIu64,
					     e->path, host);
		vmdk_note_data_written(e);
		done += run;
	}
	return 0;
}

static int vmdk_pwritev(struct img *img, uint64_t off, const struct iovec *iov,
			int iovcnt, size_t len)
{
	struct vmdk_state *s = img_state(img);
	struct img_iov_view w;
	size_t pos = 0;
	int ret;

	if (s->writer)
		return vmdk_stream_write(img, off, iov, iovcnt, len);
	if (s->stream)
		return img_error(img, -ENOTSUP,
				 "streamOptimized images are written only "
				 "sequentially by convert; convert to "
				 "monolithicSparse to modify it");
	ret = first_write(img);
	if (ret)
		return ret;
	ret = img_iov_view_init(&w, iovcnt);
	if (ret)
		return ret;
	while (pos < len) {
		uint64_t eoff, n;
		struct vmdk_extent *e =
			extent_piece(s, off, pos, len, &eoff, &n);

		ret = extent_writable(img, e);
		if (ret)
			break;
		if (e->sparse) {
			ret = write_sparse(img, e, eoff, iov, iovcnt, pos, n,
					   &w);
		} else {
			ret = img_iov_view_set(&w, NULL, 0, iov, iovcnt, pos,
					       n);
			if (!ret)
				ret = img_file_pwritev(
					e->file, w.iov, w.cnt,
					e->flat_offset * VMDK_SECTOR + eoff);
			if (ret)
				vmdk_io_error(img, ret, "%s: write failed",
					      e->path);
			vmdk_note_data_written(e);
		}
		if (ret)
			break;
		pos += n;
	}
	img_iov_view_release(&w);
	return ret;
}

static int vmdk_flush(struct img *img)
{
	struct vmdk_state *s = img_state(img);
	int i, ret;

	if (s->writer)
		return vmdk_stream_flush(img);
	for (i = 0; i < s->nextents; i++) {
		ret = vmdk_extent_flush(img, s->extents[i]);
		if (ret)
			return ret;
	}
	return 0;
}

/* Zeroes (or, with unmap, deallocates host space of) [off, off+len).
 * discard: only whole allocated grains, nothing else. */
static int zero_or_discard(struct img *img, uint64_t off, uint64_t len,
			   unsigned flags, bool discard)
{
	struct vmdk_state *s = img_state(img);
	uint64_t pos = 0;
	uint8_t *zeros = NULL;
	int ret = 0;

	if (s->writer)
		return discard ? 0 : vmdk_stream_skip(img, off, len);
	if (s->stream)
		return discard ? 0
			       : img_error(img, -ENOTSUP,
					   "streamOptimized images are written "
					   "only sequentially by convert");
	ret = first_write(img);
	if (ret)
		return ret;
	while (pos < len) {
		uint64_t eoff, n;
		struct vmdk_extent *e =
			extent_piece(s, off, pos, len, &eoff, &n);

		if (e->type == VMDK_EXTENT_ZERO)
			goto next;
		ret = extent_writable(img, e);
		if (ret)
			break;
		if (!e->sparse) {
			if (!discard)
				ret = img_file_zero_range(
					e->file,
					e->flat_offset * VMDK_SECTOR + eoff, n);
			vmdk_note_data_written(e);
			if (ret)
				break;
			goto next;
		}
		{
			uint64_t gbytes = GRAIN_BYTES(e), done = 0;

			while (done < n) {
				uint64_t g = (eoff + done) / gbytes;
				uint64_t in_grain = (eoff + done) % gbytes;
				uint64_t m = gbytes - in_grain;
				uint32_t gte;
				enum run_kind kind;

				if (m > n - done)
					m = n - done;
				ret = gte_get(img, e, g, &gte);
				if (ret)
					goto out;
				kind = gte_kind(e, gte);
				if (kind == RUN_DATA) {
					uint64_t host =
						(uint64_t)gte * VMDK_SECTOR +
						in_grain;

					if (m == gbytes &&
					    (discard ||
					     (flags & IMG_ZERO_MAY_UNMAP)))
						ret = img_file_punch_hole(
							e->file, host, m);
					else
						ret = -EOPNOTSUPP;
					if (ret == -EOPNOTSUPP && !discard)
						ret = img_file_zero_range(
							e->file, host, m);
					else if (ret == -EOPNOTSUPP)
						ret = 0;
					vmdk_note_data_written(e);
				} else if (kind == RUN_UNALLOC && !discard &&
					   img_backing(img)) {
					if (e->zero_grain && m == gbytes) {
						ret = gte_set(img, e, g,
							      VMDK_GTE_ZERO);
					} else {
						struct iovec one;

						if (!zeros)
							zeros = calloc(1,
								       gbytes);
						if (!zeros) {
							ret = -ENOMEM;
							goto out;
						}
						one = (struct iovec){ zeros,
								      m };
						ret = write_partial_grain(
							img, e, g, gte,
							in_grain, &one, 1, 0,
							m);
					}
				}
				if (ret)
					goto out;
				done += m;
			}
		}
next:
		pos += n;
	}
out:
	free(zeros);
	return ret;
}

static int vmdk_write_zeroes(struct img *img, uint64_t off, uint64_t len,
			     unsigned flags)
{
	return zero_or_discard(img, off, len, flags, false);
}

static int vmdk_discard(struct img *img, uint64_t off, uint64_t len)
{
	return zero_or_discard(img, off, len, 0, true);
}

static int vmdk_block_status(struct img *img, uint64_t off, uint64_t len,
			     struct img_extent *ext)
{
	struct vmdk_state *s = img_state(img);
	struct vmdk_extent *e = find_extent(s, off / VMDK_SECTOR);
	uint64_t eoff = off - e->start * VMDK_SECTOR;
	uint64_t n = e->sectors * VMDK_SECTOR - eoff;
	enum run_kind kind;
	uint64_t host;
	int ret;

	if (n > len)
		n = len;
	ext->start = off;
	ext->length = n;
	ext->file_offset = -1;
	ext->depth = 0;
	switch (e->type) {
	case VMDK_EXTENT_ZERO:
		ext->flags = IMG_EXTENT_ZERO | IMG_EXTENT_ALLOCATED;
		return 0;
	case VMDK_EXTENT_FLAT:
	case VMDK_EXTENT_VMFS:
		ext->flags = IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED;
		ext->file_offset =
			(int64_t)(e->flat_offset * VMDK_SECTOR + eoff);
		return 0;
	default:
		break;
	}
	if (eoff >= e->header.capacity * VMDK_SECTOR) {
		ext->flags = IMG_EXTENT_ZERO | IMG_EXTENT_ALLOCATED;
		return 0;
	}
	ret = sparse_run(img, e, eoff, n, &kind, &host, &ext->length);
	if (ret)
		return ret;
	switch (kind) {
	case RUN_UNALLOC:
		ext->flags = 0;
		ext->depth = -1;
		break;
	case RUN_ZERO:
		ext->flags = IMG_EXTENT_ZERO | IMG_EXTENT_ALLOCATED;
		break;
	case RUN_DATA:
		ext->flags = IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED;
		ext->file_offset = (int64_t)host;
		break;
	case RUN_COMPRESSED:
		ext->flags = IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED;
		break;
	}
	return 0;
}

/* ---- description and chains --------------------------------------------*/

static int vmdk_get_info(struct img *img, struct img_info *info)
{
	struct vmdk_state *s = img_state(img);
	const char *v;
	char buf[64];
	uint8_t uuid[16];
	int i;

	snprintf(info->subformat, sizeof(info->subformat), "%.31s",
		 s->desc.create_type);
	if (s->desc.parent_hint)
		snprintf(info->backing_filename, sizeof(info->backing_filename),
			 "%s", s->desc.parent_hint);
	v = vmdk_desc_get(&s->desc, "ddb.geometry.cylinders");
	if (v)
		info->geometry.cylinders = (uint32_t)strtoul(v, NULL, 10);
	v = vmdk_desc_get(&s->desc, "ddb.geometry.heads");
	if (v)
		info->geometry.heads = (uint32_t)strtoul(v, NULL, 10);
	v = vmdk_desc_get(&s->desc, "ddb.geometry.sectors");
	if (v)
		info->geometry.sectors = (uint32_t)strtoul(v, NULL, 10);
	v = vmdk_desc_get(&s->desc, "ddb.uuid");
	if (v && !vmdk_uuid_parse(v, uuid))
		img_uuid_format(uuid, info->uuid);
	v = vmdk_desc_get(&s->desc, "ddb.parentUUID");
	if (v && !vmdk_uuid_parse(v, uuid))
		img_uuid_format(uuid, info->parent_uuid);
	img_info_add_str(info, "create-type", s->desc.create_type);
	snprintf(buf, sizeof(buf), "%08" PRIx32, s->desc.cid);
	img_info_add_str(info, "cid", buf);
	snprintf(buf, sizeof(buf), "%08" PRIx32, s->desc.parent_cid);
	img_info_add_str(info, "parent-cid", buf);
	v = vmdk_desc_get(&s->desc, "ddb.adapterType");
	if (v)
		img_info_add_str(info, "adapter-type", v);
	v = vmdk_desc_get(&s->desc, "ddb.virtualHWVersion");
	if (v)
		img_info_add_str(info, "hwversion", v);
	img_info_add_file(info, img_filename(img));
	for (i = 0; i < s->nextents; i++) {
		struct vmdk_extent *e = s->extents[i];
		char key[32], val[256];

		if (e->sparse) {
			if (!info->cluster_size)
				info->cluster_size =
					e->grain_sectors * VMDK_SECTOR;
			if (e->header.unclean_shutdown)
				info->dirty = true;
		}
		snprintf(key, sizeof(key), "extent.%d", i);
		snprintf(val, sizeof(val), "%s %" PRIu64 " %s%s%s%s",
			 e->access == VMDK_ACCESS_RW ? "RW" : "RDONLY",
			 e->sectors, vmdk_extent_type_name(e->type),
			 e->path ? " " : "",
			 e->path ? s->desc.extents[i].filename : "",
			 e->compressed ? " (compressed)" : "");
		if (i < 16)
			img_info_add_str(info, key, val);
		if (e->path)
			img_info_add_file(info, e->path);
	}
	img_info_add_int(info, "extents", s->nextents);
	img_info_add_bool(info, "compressed", s->stream);
	if (s->nextents && s->extents[0]->sparse && !s->extents[0]->cowd)
		img_info_add_int(info, "sparse-version",
				 s->extents[0]->header.version);
	info->read_only = !s->writable;
	return 0;
}

static int vmdk_backing_matches(struct img *img, struct img *parent)
{
	struct vmdk_state *s = img_state(img), *p;

	if (strcmp(img_format(parent), "vmdk"))
		return 0;
	p = img_state(parent);
	if (s->desc.parent_cid == VMDK_CID_NONE || !p->has_desc)
		return 0;
	if (p->desc.cid != s->desc.parent_cid)
		return img_error(img, -ESTALE,
				 "parent %s has CID %08" PRIx32
				 " but this image's parentCID is %08" PRIx32
				 " (the parent changed after the child was "
				 "made)",
				 img_filename(parent), p->desc.cid,
				 s->desc.parent_cid);
	return 0;
}

static int vmdk_set_backing(struct img *img, const char *backing_file,
			    const char *backing_format, struct img *parent)
{
	struct vmdk_state *s = img_state(img);
	uint32_t cid = VMDK_CID_NONE;
	int ret;

	(void)backing_format;
	if (!s->has_desc)
		return img_error(img, -ENOTSUP,
				 "a bare extent has no descriptor to record a "
				 "parent in");
	if (parent && !strcmp(img_format(parent), "vmdk")) {
		struct vmdk_state *p = img_state(parent);

		cid = p->desc.cid;
	}
	ret = vmdk_desc_set_parent_hint(
		&s->desc, parent || backing_file ? backing_file : NULL);
	if (ret)
		return ret;
	s->desc.parent_cid = cid;
	ret = vmdk_write_descriptor(img);
	if (!ret)
		ret = img_file_sync(&s->main_file);
	return ret;
}

static int vmdk_probe(const uint8_t *head, size_t head_len, uint64_t file_size,
		      struct img_file *f)
{
	uint32_t magic;
	size_t i, n;

	(void)file_size;
	(void)f;
	if (head_len >= 4) {
		memcpy(&magic, head, 4);
		magic = IMG_LE32(magic);
		if (magic == VMDK_SPARSE_MAGIC || magic == VMDK_COWD_MAGIC ||
		    magic == VMDK_SESPARSE_MAGIC)
			return 100;
	}
	if (head_len >= 21 && !memcmp(head, "# Disk DescriptorFile", 21))
		return 100;
	/* Hand-written descriptors may lack the first line: look for the
	 * createType key in text-only content. */
	n = head_len < 2048 ? head_len : 2048;
	for (i = 0; i < n; i++) {
		if (!head[i])
			break;
		if (head[i] < 0x09 || (head[i] > 0x0d && head[i] < 0x20))
			return 0;
	}
	if (memmem(head, i, "createType", 10) &&
	    (memmem(head, i, "RW ", 3) || memmem(head, i, "RDONLY ", 7)))
		return 90;
	return 0;
}

static const char *const vmdk_create_options[] = {
	"subformat",	"adapter_type", "hwversion",
	"zeroed_grain", "toolsversion", NULL,
};

const struct img_driver img_driver_vmdk = {
	.name = "vmdk",
	.description =
		"VMware virtual disk (VMDK 1.1: monolithicSparse, "
		"monolithicFlat, twoGbMaxExtent*, streamOptimized, vmfs)",
	.flags = IMG_DRV_CONCURRENT_READS,
	.state_size = sizeof(struct vmdk_state),
	.create_options = vmdk_create_options,
	.compressed_subformat = "streamOptimized",
	.probe = vmdk_probe,
	.create = vmdk_create,
	.open = vmdk_open,
	.close = vmdk_close,
	.preadv = vmdk_preadv,
	.pwritev = vmdk_pwritev,
	.flush = vmdk_flush,
	.write_zeroes = vmdk_write_zeroes,
	.discard = vmdk_discard,
	.block_status = vmdk_block_status,
	.resize = vmdk_resize,
	.check = vmdk_check,
	.get_info = vmdk_get_info,
	.backing_matches = vmdk_backing_matches,
	.set_backing = vmdk_set_backing,
};
