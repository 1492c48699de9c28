/* SPDX-License-Identifier: MIT */
/*
 * VHDX (Hyper-V, Windows Server 2012 and later, Azure) driver: fixed,
 * dynamic and differencing images.
 *
 * Write ordering.  The rule: metadata on disk never points at data that
 * might not be on disk, and metadata changes only through the log.
 *  1. The first write of a session gives the header new file and data
 *     write GUIDs and a log GUID (the alternating-header update, flushed),
 *     as [MS-VHDX] 2.2.2 asks before the first modification.
 *  2. A new payload block is appended at the end of the file (1 MiB
 *     aligned) and written; its BAT entry changes only in memory and the
 *     BAT sector is marked dirty.  A crash leaves an unreferenced block
 *     (a leak check -r trims).
 *  3. At a flush (or when many sectors are dirty): fdatasync, then one log
 *     entry with the dirty BAT sectors, fdatasync, then the sectors in
 *     place (made durable by the next commit's first fdatasync, or at
 *     close, before the log GUID goes back to zero).
 *  4. Blocks that become ZERO or UNMAPPED (write_zeroes, discard) are
 *     punched out of the file at once: until the BAT change reaches the
 *     disk, the old entry then reads zeros, which both operations allow.
 *     Their space is not reused.
 * Differencing disks are written a whole block at a time: a block that
 * was absent (or partially present, from Hyper-V) is filled from the
 * parent and becomes fully present, so sector bitmaps are only read.
 *
 * Parallel requests (img_set_parallel_rw): reads, and writes into fully
 * present blocks, go to the file at once.  A write into any other block
 * takes meta_lock, looks the block up again (a parallel write may have
 * allocated it meanwhile), allocates and fills it and writes its data,
 * and only then stores the BAT entry, so a parallel reader sees the old
 * contents or the new.  The session's header update, the dirty BAT
 * sectors and the log hold meta_lock; a flush writes the log and the BAT
 * under it and runs its last fdatasync without it.  Log replay happens
 * only at open, before any request.
 */
#include "vhdx_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Dirty BAT sectors that force a commit before the next flush. */
#define VHDX_MAX_DIRTY 64
#define VHDX_MAX_LOCATOR_SIZE (64u * 1024)
/* Pieces of at most this size are staged in memory when filling blocks. */
#define VHDX_FILL_CHUNK (1u << 20)
#define VHDX_ZERO_CHUNK (64u * 1024)

/* ---- file access -----------------------------------------------------*/

/* A read of the file as the log says it should be (read-only opens of an
 * image with a pending log patch the log's sectors in). */
int vhdx_read_file(struct vhdx_state *s, void *buf, size_t len, uint64_t off)
{
	int ret = img_file_pread_zero_eof(&s->file, buf, len, off);

	for (int i = 0; !ret && i < s->noverlay; i++) {
		const struct vhdx_overlay *o = &s->overlay[i];
		uint64_t a = MAX(off, o->offset);
		uint64_t b = MIN(off + len, o->offset + o->length);

		if (a >= b)
			continue;
		if (o->data)
			memcpy((uint8_t *)buf + (a - off),
			       o->data + (a - o->offset), (size_t)(b - a));
		else
			memset((uint8_t *)buf + (a - off), 0, (size_t)(b - a));
	}
	return ret;
}

static int vhdx_read_file_iov(struct vhdx_state *s, const struct iovec *iov,
			      int iovcnt, size_t len, uint64_t off)
{
	if (!s->noverlay)
		return img_file_preadv(&s->file, iov, iovcnt, off);
	uint8_t *tmp = malloc(len);
	int ret;

	if (!tmp)
		return -ENOMEM;
	ret = vhdx_read_file(s, tmp, len, off);
	if (!ret)
		img_iov_from_buf(iov, iovcnt, 0, tmp, len);
	free(tmp);
	return ret;
}

/* ---- headers -----------------------------------------------------------*/

/* The alternating update of 2.2.2: the other slot gets the header with
 * the next sequence number, then a flush makes it current. */
int vhdx_header_write(struct vhdx_state *s)
{
	uint8_t buf[VHDX_HEADER_SIZE];
	int slot = 1 - s->header_slot;
	int ret;

	s->header.sequence++;
	vhdx_header_encode(&s->header, buf);
	ret = img_file_pwrite(&s->file, buf, sizeof(buf),
			      slot ? VHDX_HEADER2_OFFSET : VHDX_HEADER1_OFFSET);
	if (!ret)
		ret = img_file_sync(&s->file);
	if (!ret)
		s->header_slot = slot;
	return ret;
}

static int vhdx_session_begin_locked(struct img *img, struct vhdx_state *s,
				     bool data)
{
	int ret;

	if (s->session_open && (s->data_changed || !data))
		return 0;
	if (s->read_only)
		return img_error(img, -EROFS, "image is read-only");
	if (!s->session_open)
		vhdx_guid_generate(&s->header.file_write_guid);
	if (data)
		vhdx_guid_generate(&s->header.data_write_guid);
	if (vhdx_guid_is_zero(&s->header.log_guid)) {
		vhdx_guid_generate(&s->header.log_guid);
		s->log_sequence = 0;
	}
	ret = vhdx_header_write(s);
	if (ret)
		return img_error(img, ret, "cannot update the header: %s",
				 strerror(-ret));
	__atomic_store_n(&s->session_open, true, __ATOMIC_RELEASE);
	if (data)
		__atomic_store_n(&s->data_changed, true, __ATOMIC_RELEASE);
	return 0;
}

/* Before the first change of a session; data: the change is one a
 * reader of the disk can see (children then no longer match). */
int vhdx_session_begin(struct img *img, struct vhdx_state *s, bool data)
{
	int ret;

	if (__atomic_load_n(&s->session_open, __ATOMIC_ACQUIRE) &&
	    (!data || __atomic_load_n(&s->data_changed, __ATOMIC_ACQUIRE)))
		return 0;
	pthread_mutex_lock(&s->meta_lock);
	ret = vhdx_session_begin_locked(img, s, data);
	pthread_mutex_unlock(&s->meta_lock);
	return ret;
}

/* ---- metadata commit -----------------------------------------------------*/

void vhdx_bat_mark_dirty(struct vhdx_state *s, uint64_t index)
{
	uint64_t sector = index * 8 / VHDX_LOG_SECTOR;

	if (!s->bat_dirty[sector]) {
		s->bat_dirty[sector] = 1;
		s->dirty_count++;
	}
}

static void vhdx_bat_sector_encode(const struct vhdx_state *s, uint64_t sector,
				   uint8_t *buf)
{
	uint64_t first = sector * (VHDX_LOG_SECTOR / 8);

	memset(buf, 0, VHDX_LOG_SECTOR);
	for (uint64_t i = 0; i < VHDX_LOG_SECTOR / 8; i++)
		if (first + i < s->geo.entries)
			vhdx_put64(buf + i * 8, s->bat[first + i]);
}

/* Writes the dirty BAT sectors through the log (step 3 above). */
int vhdx_commit(struct img *img, struct vhdx_state *s)
{
	uint64_t nsectors =
		(s->geo.entries * 8 + VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR;
	uint32_t cap = vhdx_log_capacity(s);
	struct vhdx_log_write *w = NULL;
	uint8_t *bufs = NULL;
	uint64_t next = 0;
	int ret = 0;

	if (!s->dirty_count)
		return 0;
	if (!cap)
		return img_error(img, -EINVAL, "the log is too small to use");
	cap = MIN(cap, s->dirty_count);
	w = calloc(cap, sizeof(*w));
	bufs = malloc((size_t)cap * VHDX_LOG_SECTOR);
	if (!w || !bufs) {
		ret = -ENOMEM;
		goto out;
	}
	while (s->dirty_count) {
		uint32_t n = 0;

		for (uint64_t sec = next; sec < nsectors && n < cap; sec++) {
			if (!s->bat_dirty[sec])
				continue;
			uint8_t *b = bufs + (size_t)n * VHDX_LOG_SECTOR;

			vhdx_bat_sector_encode(s, sec, b);
			w[n].offset = s->bat_offset + sec * VHDX_LOG_SECTOR;
			w[n].data = b;
			n++;
			next = sec + 1;
		}
		/* Data and the previous in-place writes first. */
		ret = img_file_sync(&s->file);
		if (!ret)
			ret = vhdx_log_write(img, s, w, n);
		for (uint32_t i = 0; !ret && i < n; i++)
			ret = img_file_pwrite(&s->file, w[i].data,
					      VHDX_LOG_SECTOR, w[i].offset);
		if (ret)
			goto out;
		for (uint32_t i = 0; i < n; i++) {
			uint64_t sec =
				(w[i].offset - s->bat_offset) / VHDX_LOG_SECTOR;

			s->bat_dirty[sec] = 0;
			s->dirty_count--;
		}
	}
out:
	free(w);
	free(bufs);
	return ret;
}

/* Ends a session: everything durable, then the log GUID cleared. */
static int vhdx_session_end(struct vhdx_state *s)
{
	int ret;

	if (!s->session_open)
		return 0;
	ret = img_file_sync(&s->file);
	if (ret)
		return ret;
	memset(&s->header.log_guid, 0, sizeof(s->header.log_guid));
	ret = vhdx_header_write(s);
	if (!ret)
		s->session_open = false;
	return ret;
}

/* ---- probe ---------------------------------------------------------------*/

static int vhdx_probe(const uint8_t *head, size_t head_len, uint64_t file_size,
		      struct img_file *f)
{
	(void)file_size;
	(void)f;
	if (head_len >= 8 && !memcmp(head, VHDX_FILE_ID_SIGNATURE, 8))
		return 100;
	return 0;
}

/* ---- open ----------------------------------------------------------------*/

static void vhdx_free(struct vhdx_state *s)
{
	for (int i = 0; i < s->noverlay; i++)
		free(s->overlay[i].data);
	free(s->overlay);
	s->overlay = NULL;
	s->noverlay = 0;
	free(s->bat);
	s->bat = NULL;
	free(s->bat_dirty);
	s->bat_dirty = NULL;
	free(s->meta_table);
	s->meta_table = NULL;
	if (s->file_open)
		img_file_close(&s->file);
	s->file_open = false;
	if (s->meta_lock_init)
		pthread_mutex_destroy(&s->meta_lock);
	s->meta_lock_init = false;
}

static int vhdx_open_headers(struct img *img, struct vhdx_state *s)
{
	uint8_t buf[VHDX_HEADER_SIZE];
	struct vhdx_header h[2];
	bool ok[2];
	int ret;

	ret = img_file_pread(&s->file, buf, 8, 0);
	if (ret)
		return ret;
	if (memcmp(buf, VHDX_FILE_ID_SIGNATURE, 8))
		return img_error(img, -EINVAL,
				 "not a VHDX file (no vhdxfile "
				 "signature)");
	for (int i = 0; i < 2; i++) {
		ret = img_file_pread(&s->file, buf, sizeof(buf),
				     i ? VHDX_HEADER2_OFFSET
				       : VHDX_HEADER1_OFFSET);
		if (ret)
			return ret;
		vhdx_header_decode(buf, &h[i]);
		ok[i] = h[i].signature == VHDX_HEADER_SIGNATURE &&
			vhdx_checksum_ok(buf, sizeof(buf), 4);
	}
	if (!ok[0] && !ok[1])
		return img_error(img, -EINVAL,
				 "both VHDX headers are damaged (bad "
				 "signature or CRC-32C)");
	s->header_slot = !ok[0] || (ok[1] && h[1].sequence > h[0].sequence);
	s->header = h[s->header_slot];
	if (s->header.version != 1)
		return img_error(img, -ENOTSUP,
				 "VHDX version %u is not supported",
				 s->header.version);
	if (s->header.log_version != 0)
		return img_error(img, -ENOTSUP,
				 "VHDX log version %u is not supported",
				 s->header.log_version);
	if (s->header.log_length % VHDX_ALIGN ||
	    s->header.log_offset % VHDX_ALIGN ||
	    s->header.log_offset < VHDX_HEADER_SECTION_SIZE ||
	    !s->header.log_length || s->header.log_offset > s->file_size ||
	    s->header.log_length > s->file_size - s->header.log_offset)
		return img_error(img, -EINVAL,
				 "log (%u bytes at %llu) is misaligned or lies "
				 "outside the file",
				 s->header.log_length,
				 (unsigned long long)s->header.log_offset);
	return 0;
}

struct vhdx_span {
	uint64_t start, end;
	const char *what;
};

static int vhdx_open_regions(struct img *img, struct vhdx_state *s)
{
	uint8_t *buf = malloc(VHDX_REGION_TABLE_SIZE);
	bool have_bat = false, have_meta = false;
	int ret = 0, table = -1;

	if (!buf)
		return -ENOMEM;
	for (int i = 0; i < 2 && table < 0; i++) {
		ret = img_file_pread(&s->file, buf, VHDX_REGION_TABLE_SIZE,
				     i ? VHDX_REGION_TABLE2_OFFSET
				       : VHDX_REGION_TABLE1_OFFSET);
		if (ret)
			goto out;
		if (vhdx_get32(buf) == VHDX_REGION_SIGNATURE &&
		    vhdx_checksum_ok(buf, VHDX_REGION_TABLE_SIZE, 4) &&
		    vhdx_region_count(buf) <= VHDX_MAX_REGION_ENTRIES)
			table = i;
	}
	if (table < 0) {
		ret = img_error(
			img, -EINVAL,
			"both region tables are damaged (bad signature, "
			"CRC-32C or entry count)");
		goto out;
	}
	uint32_t n = vhdx_region_count(buf);
	struct vhdx_span spans[4] = {
		{ 0, VHDX_HEADER_SECTION_SIZE, "the header section" },
		{ s->header.log_offset,
		  s->header.log_offset + s->header.log_length, "the log" },
	};

	for (uint32_t i = 0; i < n; i++) {
		struct vhdx_region r;
		int slot;

		vhdx_region_decode(buf, i, &r);
		if (vhdx_guid_equal(&r.guid, &vhdx_guid_bat)) {
			if (have_bat)
				goto duplicate;
			have_bat = true;
			s->bat_offset = r.offset;
			s->bat_length = r.length;
			slot = 2;
		} else if (vhdx_guid_equal(&r.guid, &vhdx_guid_metadata)) {
			if (have_meta)
				goto duplicate;
			have_meta = true;
			s->meta_offset = r.offset;
			s->meta_length = r.length;
			slot = 3;
		} else if (r.required) {
			char g[39];

			vhdx_guid_format(&r.guid, g, true);
			ret = img_error(img, -ENOTSUP,
					"unknown required region %s", g);
			goto out;
		} else {
			continue;
		}
		if (r.offset % VHDX_ALIGN || r.length % VHDX_ALIGN ||
		    !r.length || r.offset > s->file_size ||
		    r.length > s->file_size - r.offset) {
			ret = img_error(img, -EINVAL,
					"%s region (%u bytes at %llu) is "
					"misaligned or lies outside the file",
					slot == 2 ? "BAT" : "metadata",
					r.length, (unsigned long long)r.offset);
			goto out;
		}
		spans[slot].start = r.offset;
		spans[slot].end = r.offset + r.length;
		spans[slot].what = slot == 2 ? "the BAT"
					     : "the metadata region";
	}
	if (!have_bat || !have_meta) {
		ret = img_error(img, -EINVAL, "region table has no %s region",
				have_bat ? "metadata" : "BAT");
		goto out;
	}
	for (int a = 0; a < 4; a++)
		for (int b = a + 1; b < 4; b++)
			if (spans[a].start < spans[b].end &&
			    spans[b].start < spans[a].end) {
				ret = img_error(img, -EINVAL, "%s overlaps %s",
						spans[b].what, spans[a].what);
				goto out;
			}
	goto out;
duplicate:
	ret = img_error(img, -EINVAL, "region table lists a region twice");
out:
	free(buf);
	return ret;
}

/* Reads metadata item (offset, length) checked against the region. */
static int vhdx_meta_item(struct img *img, struct vhdx_state *s,
			  const struct vhdx_metadata_entry *e, void *out,
			  uint32_t want_min, uint32_t want_max)
{
	if (e->length < want_min || e->length > want_max ||
	    e->offset < VHDX_METADATA_TABLE_SIZE ||
	    e->offset > s->meta_length ||
	    e->length > s->meta_length - e->offset)
		return img_error(img, -EINVAL,
				 "metadata item (%u bytes at %u) has a bad "
				 "size or lies outside the metadata region",
				 e->length, e->offset);
	return vhdx_read_file(s, out, e->length, s->meta_offset + e->offset);
}

static void vhdx_locator_path(char *dst, size_t dst_max, const char *src)
{
	size_t o = 0;

	/* Windows separators; a relative ".\" prefix means "here". */
	if (src[0] == '.' && src[1] == '\\')
		src += 2;
	for (; *src && o + 1 < dst_max; src++)
		dst[o++] = *src == '\\' ? '/' : *src;
	dst[o] = 0;
}

static int vhdx_open_locator(struct img *img, struct vhdx_state *s,
			     const struct vhdx_metadata_entry *e)
{
	uint8_t *buf = malloc(VHDX_MAX_LOCATOR_SIZE);
	int ret;

	if (!buf)
		return -ENOMEM;
	ret = vhdx_meta_item(img, s, e, buf, 20, VHDX_MAX_LOCATOR_SIZE);
	if (ret)
		goto out;
	struct vhdx_guid type;
	uint32_t count = vhdx_get16(buf + 18);

	memcpy(type.b, buf, 16);
	if (!vhdx_guid_equal(&type, &vhdx_guid_parent_locator_type)) {
		ret = img_error(img, -ENOTSUP,
				"parent locator of an unknown type");
		goto out;
	}
	if (20 + (uint64_t)count * 12 > e->length) {
		ret = img_error(img, -EINVAL,
				"parent locator has %u entries, more than fit",
				count);
		goto out;
	}
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *p = buf + 20 + (size_t)i * 12;
		uint32_t ko = vhdx_get32(p), vo = vhdx_get32(p + 4);
		uint16_t kl = vhdx_get16(p + 8), vl = vhdx_get16(p + 10);
		char key[64], value[4096];

		if (ko > e->length || kl > e->length - ko || vo > e->length ||
		    vl > e->length - vo) {
			ret = img_error(img, -EINVAL,
					"parent locator entry %u lies outside "
					"the locator",
					i);
			goto out;
		}
		if (vhdx_utf16_to_utf8(buf + ko, kl, key, sizeof(key)) < 0 ||
		    vhdx_utf16_to_utf8(buf + vo, vl, value, sizeof(value)) < 0)
			continue; /* not one of ours; ignore */
		if (!strcmp(key, "parent_linkage")) {
			s->has_linkage =
				vhdx_guid_parse(value, &s->parent_linkage);
		} else if (!strcmp(key, "parent_linkage2")) {
			s->has_linkage2 =
				vhdx_guid_parse(value, &s->parent_linkage2);
		} else if (!strcmp(key, "relative_path")) {
			vhdx_locator_path(s->parent_relative,
					  sizeof(s->parent_relative), value);
		} else if (!strcmp(key, "absolute_win32_path")) {
			vhdx_locator_path(s->parent_absolute,
					  sizeof(s->parent_absolute), value);
		} else if (!strcmp(key, "volume_path")) {
			vhdx_locator_path(s->parent_volume,
					  sizeof(s->parent_volume), value);
		}
	}
	if (!s->has_linkage) {
		ret = img_error(img, -EINVAL,
				"parent locator has no parent_linkage");
		goto out;
	}
out:
	free(buf);
	return ret;
}

static int vhdx_open_metadata(struct img *img, struct vhdx_state *s)
{
	struct vhdx_metadata_entry params = { 0 }, vsize = { 0 },
				   page83 = { 0 }, lss = { 0 }, pss = { 0 },
				   locator = { 0 };
	uint8_t item[16];
	int ret;

	s->meta_table = malloc(VHDX_METADATA_TABLE_SIZE);
	if (!s->meta_table)
		return -ENOMEM;
	ret = vhdx_read_file(s, s->meta_table, VHDX_METADATA_TABLE_SIZE,
			     s->meta_offset);
	if (ret)
		return ret;
	if (memcmp(s->meta_table, VHDX_METADATA_SIGNATURE, 8))
		return img_error(img, -EINVAL,
				 "metadata table has no signature");
	uint32_t n = vhdx_metadata_count(s->meta_table);

	if (n > VHDX_MAX_METADATA_ENTRIES)
		return img_error(img, -EINVAL,
				 "metadata table has %u entries (at most %u)",
				 n, VHDX_MAX_METADATA_ENTRIES);
	for (uint32_t i = 0; i < n; i++) {
		struct vhdx_metadata_entry e;
		struct vhdx_metadata_entry *slot = NULL;

		vhdx_metadata_decode(s->meta_table, i, &e);
		if (vhdx_guid_equal(&e.item, &vhdx_guid_file_parameters))
			slot = &params;
		else if (vhdx_guid_equal(&e.item, &vhdx_guid_virtual_disk_size))
			slot = &vsize;
		else if (vhdx_guid_equal(&e.item, &vhdx_guid_page83))
			slot = &page83;
		else if (vhdx_guid_equal(&e.item,
					 &vhdx_guid_logical_sector_size))
			slot = &lss;
		else if (vhdx_guid_equal(&e.item,
					 &vhdx_guid_physical_sector_size))
			slot = &pss;
		else if (vhdx_guid_equal(&e.item, &vhdx_guid_parent_locator))
			slot = &locator;
		if (!slot) {
			if (e.flags & VHDX_META_IS_REQUIRED) {
				char g[39];

				vhdx_guid_format(&e.item, g, true);
				return img_error(img, -ENOTSUP,
						 "unknown required metadata "
						 "item %s",
						 g);
			}
			continue;
		}
		if (slot->length)
			return img_error(img, -EINVAL,
					 "metadata table lists an item twice");
		*slot = e;
	}
	if (!params.length || !vsize.length || !lss.length)
		return img_error(img, -EINVAL, "metadata lacks the %s item",
				 !params.length	 ? "file parameters"
				 : !vsize.length ? "virtual disk size"
						 : "logical sector size");
	ret = vhdx_meta_item(img, s, &params, item, 8, 8);
	if (ret)
		return ret;
	s->block_size = vhdx_get32(item);
	s->leave_allocated = vhdx_get32(item + 4) &
			     VHDX_PARAM_LEAVE_BLOCKS_ALLOCATED;
	s->has_parent = vhdx_get32(item + 4) & VHDX_PARAM_HAS_PARENT;
	ret = vhdx_meta_item(img, s, &vsize, item, 8, 8);
	if (ret)
		return ret;
	s->size = vhdx_get64(item);
	s->vsize_item_offset = s->meta_offset + vsize.offset;
	ret = vhdx_meta_item(img, s, &lss, item, 4, 4);
	if (ret)
		return ret;
	s->logical_sector = vhdx_get32(item);
	s->physical_sector = 4096;
	if (pss.length) {
		ret = vhdx_meta_item(img, s, &pss, item, 4, 4);
		if (ret)
			return ret;
		s->physical_sector = vhdx_get32(item);
	}
	if (page83.length) {
		ret = vhdx_meta_item(img, s, &page83, item, 16, 16);
		if (ret)
			return ret;
		memcpy(s->page83.b, item, 16);
	}
	if (s->block_size < VHDX_MIN_BLOCK_SIZE ||
	    s->block_size > VHDX_MAX_BLOCK_SIZE ||
	    (s->block_size & (s->block_size - 1)))
		return img_error(img, -EINVAL,
				 "block size %u is not a power of two between "
				 "1 MiB and 256 MiB",
				 s->block_size);
	if (s->logical_sector != 512 && s->logical_sector != 4096)
		return img_error(
			img, -EINVAL,
			"logical sector size %u is neither 512 nor 4096",
			s->logical_sector);
	if (s->physical_sector != 512 && s->physical_sector != 4096)
		return img_error(img, -EINVAL,
				 "physical sector size %u is neither 512 nor "
				 "4096",
				 s->physical_sector);
	if (!s->size || s->size > VHDX_MAX_SIZE || s->size % s->logical_sector)
		return img_error(img, -EINVAL,
				 "virtual disk size %llu is zero, larger than "
				 "64 TiB or not a multiple of the sector size",
				 (unsigned long long)s->size);
	if (s->has_parent) {
		if (!locator.length)
			return img_error(img, -EINVAL,
					 "differencing disk without a parent "
					 "locator");
		ret = vhdx_open_locator(img, s, &locator);
		if (ret)
			return ret;
	}
	return 0;
}

enum vhdx_bat_fault vhdx_bat_inspect(const struct vhdx_state *s, uint64_t i,
				     uint64_t e, struct vhdx_bat_view *v)
{
	unsigned st = VHDX_BAT_STATE(e);
	bool valid;

	v->bitmap = (i + 1) % (s->geo.chunk_ratio + 1ull) == 0;
	v->state = st;
	v->off = VHDX_BAT_OFFSET(e);
	v->span = v->bitmap ? VHDX_SECTOR_BITMAP_BLOCK_SIZE : s->block_size;
	valid = v->bitmap ? st == VHDX_SB_NOT_PRESENT || st == VHDX_SB_PRESENT
			  : st <= VHDX_BLOCK_UNMAPPED ||
				    st == VHDX_BLOCK_FULLY_PRESENT ||
				    (st == VHDX_BLOCK_PARTIALLY_PRESENT &&
				     s->has_parent);
	v->present = v->bitmap ? st == VHDX_SB_PRESENT
			       : st >= VHDX_BLOCK_FULLY_PRESENT;
	if (!valid)
		return VHDX_BAT_BAD_STATE;
	if (v->present && v->off < VHDX_HEADER_SECTION_SIZE)
		return VHDX_BAT_IN_HEADER;
	if (v->present && v->off + v->span > s->file_size)
		return VHDX_BAT_PAST_END;
	return VHDX_BAT_SOUND;
}

static int vhdx_open_bat(struct img *img, struct vhdx_state *s, unsigned flags)
{
	uint64_t nsectors;
	uint8_t *raw;
	int ret;

	vhdx_bat_geometry(s->size, s->block_size, s->logical_sector,
			  s->has_parent, &s->geo);
	if (s->geo.entries * 8 > s->bat_length)
		return img_error(img, -EINVAL,
				 "BAT region of %u bytes is too small for %llu "
				 "entries",
				 s->bat_length,
				 (unsigned long long)s->geo.entries);
	nsectors = (s->geo.entries * 8 + VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR;
	s->bat = malloc(s->geo.entries * 8 + 8);
	s->bat_dirty = calloc(nsectors + 1, 1);
	raw = malloc(nsectors * VHDX_LOG_SECTOR + 8);
	if (!s->bat || !s->bat_dirty || !raw) {
		free(raw);
		return -ENOMEM;
	}
	ret = vhdx_read_file(s, raw, s->geo.entries * 8, s->bat_offset);
	if (ret)
		goto out;
	s->alloc_offset = vhdx_round_up(s->file_size, VHDX_ALIGN);
	for (uint64_t i = 0; i < s->geo.entries; i++) {
		uint64_t e = vhdx_get64(raw + i * 8);
		struct vhdx_bat_view v;
		enum vhdx_bat_fault fault = vhdx_bat_inspect(s, i, e, &v);

		s->bat[i] = e;
		if (flags & IMG_OPEN_CHECK)
			continue; /* check reports and repairs these */
		if (fault == VHDX_BAT_BAD_STATE) {
			ret = img_error(img, -EINVAL,
					"BAT entry %llu has invalid state %u",
					(unsigned long long)i, v.state);
			goto out;
		}
		if (fault != VHDX_BAT_SOUND) {
			ret = img_error(img, -EINVAL,
					"BAT entry %llu points %s (offset "
					"%llu, file size %llu)",
					(unsigned long long)i,
					fault == VHDX_BAT_IN_HEADER
						? "into the header section"
						: "past the end of the file",
					(unsigned long long)v.off,
					(unsigned long long)s->file_size);
			goto out;
		}
	}
out:
	free(raw);
	return ret;
}

static int vhdx_declare_parent(struct img *img, struct vhdx_state *s)
{
	int ret = 0;

	if (s->parent_relative[0])
		ret = img_add_backing_candidate(img, s->parent_relative,
						"vhdx");
	if (!ret && s->parent_absolute[0])
		ret = img_add_backing_candidate(img, s->parent_absolute,
						"vhdx");
	if (!ret && s->parent_volume[0])
		ret = img_add_backing_candidate(img, s->parent_volume, "vhdx");
	if (!ret)
		img_set_backing_by_identity(img, "vhdx");
	return ret;
}

static int vhdx_open(struct img *img)
{
	struct vhdx_state *s = img_state(img);
	unsigned flags = img_open_flags(img);
	bool writable = flags & IMG_OPEN_RDWR;
	int ret;

	pthread_mutex_init(&s->meta_lock, NULL);
	s->meta_lock_init = true;
	ret = img_file_open_image(img, &s->file, "VHDX",
				  VHDX_HEADER_SECTION_SIZE, &s->file_size);
	if (ret)
		goto fail;
	s->file_open = true;
	s->read_only = !writable;
	ret = vhdx_open_headers(img, s);
	if (ret)
		goto fail;
	if (!vhdx_guid_is_zero(&s->header.log_guid)) {
		bool found;

		ret = vhdx_log_replay(img, s, writable, &found);
		if (ret)
			goto fail;
		if (writable) {
			/* Replayed (or nothing valid to replay): the log is
			 * empty from now on. */
			memset(&s->header.log_guid, 0, 16);
			ret = vhdx_header_write(s);
			if (ret)
				goto fail;
			s->log_replayed = found;
		} else {
			s->log_in_memory = found;
		}
	}
	ret = vhdx_open_regions(img, s);
	if (!ret)
		ret = vhdx_open_metadata(img, s);
	if (!ret)
		ret = vhdx_open_bat(img, s, flags);
	if (!ret && s->has_parent)
		ret = vhdx_declare_parent(img, s);
	if (ret)
		goto fail;
	img_set_parallel_rw(img, true);
	img_set_size(img, s->size);
	return 0;
fail:
	vhdx_free(s);
	return ret;
}

static int vhdx_flush(struct img *img)
{
	struct vhdx_state *s = img_state(img);
	int ret;

	if (s->read_only)
		return 0;
	pthread_mutex_lock(&s->meta_lock);
	ret = vhdx_commit(img, s);
	pthread_mutex_unlock(&s->meta_lock);
	if (!ret)
		ret = img_file_sync(&s->file);
	return ret;
}

static void vhdx_close(struct img *img)
{
	struct vhdx_state *s = img_state(img);

	if (!s->read_only && !vhdx_commit(img, s))
		vhdx_session_end(s);
	vhdx_free(s);
}

/* ---- reads ---------------------------------------------------------------*/

static bool vhdx_reads_parent(const struct vhdx_state *s, unsigned st)
{
	return s->has_parent &&
	       (st == VHDX_BLOCK_NOT_PRESENT || st == VHDX_BLOCK_UNDEFINED ||
		st == VHDX_BLOCK_UNMAPPED);
}

/* The run of sectors from sector `first` (at most count) whose bitmap
 * bits are all equal; *set tells which. */
static int vhdx_bitmap_run(struct vhdx_state *s, uint64_t block, uint64_t first,
			   uint64_t count, uint64_t *run, bool *set)
{
	uint64_t chunk = block / s->geo.chunk_ratio;
	uint64_t e = vhdx_bat_get(s, vhdx_bitmap_index(s, chunk));
	uint64_t sectors_per_block = s->block_size / s->logical_sector;
	/* Bit index within the bitmap block. */
	uint64_t bit = (block % s->geo.chunk_ratio) * sectors_per_block + first;
	uint8_t bytes[512];
	uint64_t n = 0;

	if (VHDX_BAT_STATE(e) != VHDX_SB_PRESENT) {
		*set = false;
		*run = count;
		return 0;
	}
	while (n < count) {
		uint64_t byte = (bit + n) / 8;
		uint64_t chunk_bytes = MIN(
			sizeof(bytes), VHDX_SECTOR_BITMAP_BLOCK_SIZE - byte);
		int ret = vhdx_read_file(s, bytes, (size_t)chunk_bytes,
					 VHDX_BAT_OFFSET(e) + byte);

		if (ret)
			return ret;
		for (uint64_t k = (bit + n) - byte * 8; n < count; n++, k++) {
			if (k / 8 >= chunk_bytes)
				break;
			bool b = bytes[k / 8] >> (k % 8) & 1;

			if (n == 0)
				*set = b;
			else if (b != *set)
				goto done;
		}
	}
done:
	*run = n;
	return 0;
}

static int vhdx_preadv(struct img *img, uint64_t off, const struct iovec *iov,
		       int iovcnt, size_t len)
{
	struct vhdx_state *s = img_state(img);
	struct iovec sub[IOV_MAX];
	size_t done = 0;
	int ret = 0;

	while (done < len && !ret) {
		uint64_t pos = off + done;
		uint64_t block = pos / s->block_size;
		uint64_t in_blk = pos % s->block_size;
		uint64_t e = vhdx_bat_get(s, vhdx_payload_index(s, block));
		unsigned st = VHDX_BAT_STATE(e);
		size_t n = (size_t)MIN((uint64_t)(len - done),
				       s->block_size - in_blk);
		bool from_file = st == VHDX_BLOCK_FULLY_PRESENT;
		bool from_parent = vhdx_reads_parent(s, st);

		if (st == VHDX_BLOCK_PARTIALLY_PRESENT) {
			uint64_t run;
			bool set;

			ret = vhdx_bitmap_run(
				s, block, in_blk / s->logical_sector,
				(n + s->logical_sector - 1) / s->logical_sector,
				&run, &set);
			if (ret)
				break;
			/* A run ends on a sector boundary; the request may
			 * start inside one. */
			uint64_t end = (in_blk / s->logical_sector + run) *
				       s->logical_sector;

			n = (size_t)MIN((uint64_t)n, end - in_blk);
			from_file = set;
			from_parent = !set;
		}
		int cnt = img_iov_slice(iov, iovcnt, done, n, sub, IOV_MAX);

		if (cnt < 0)
			return cnt;
		if (from_file)
			ret = vhdx_read_file_iov(s, sub, cnt, n,
						 VHDX_BAT_OFFSET(e) + in_blk);
		else if (from_parent)
			ret = img_read_backing(img, pos, sub, cnt, n);
		else
			img_iov_memset(sub, cnt, 0, 0, n);
		done += n;
	}
	return ret;
}

/* ---- writes --------------------------------------------------------------*/

/* Fill [from, to) of block (file offset host) with what the block reads
 * as now (the parent's data, zeros, or a partially present block's own
 * sectors), so the block can become fully present.  space_is_zero: the
 * space is new (reads zeros), so zero pieces need no write. */
static int vhdx_block_fill(struct img *img, struct vhdx_state *s,
			   uint64_t block, uint64_t host, uint64_t from,
			   uint64_t to, bool space_is_zero)
{
	uint8_t *buf;
	int ret = 0;

	if (from >= to)
		return 0;
	buf = malloc(VHDX_FILL_CHUNK);
	if (!buf)
		return -ENOMEM;
	for (uint64_t p = from; p < to && !ret;) {
		uint64_t n = MIN((uint64_t)VHDX_FILL_CHUNK, to - p);
		uint64_t vpos = block * s->block_size + p;
		struct iovec v = { buf, (size_t)n };

		if (vpos >= s->size)
			break;
		n = MIN(n, s->size - vpos);
		v.iov_len = (size_t)n;
		ret = vhdx_preadv(img, vpos, &v, 1, (size_t)n);
		if (!ret && !(space_is_zero && img_buf_is_zero(buf, (size_t)n)))
			ret = img_file_pwrite(&s->file, buf, (size_t)n,
					      host + p);
		p += n;
	}
	free(buf);
	return ret;
}

/* Make block fully present (new space at the end of the file, filled as
 * the block reads now) with the write's data (iov, keep_to - keep_from
 * bytes) at [keep_from, keep_to); meta_lock held. */
static int vhdx_block_allocate(struct img *img, struct vhdx_state *s,
			       uint64_t block, uint64_t keep_from,
			       uint64_t keep_to, const struct iovec *iov,
			       int iovcnt)
{
	uint64_t index = vhdx_payload_index(s, block);
	uint64_t e = s->bat[index];
	unsigned st = VHDX_BAT_STATE(e);
	uint64_t host;
	int ret;

	if (st == VHDX_BLOCK_PARTIALLY_PRESENT) {
		/* Hyper-V's partial block: fill the sectors still read from
		 * the parent into the block's own space. */
		host = VHDX_BAT_OFFSET(e);
		for (uint64_t p = 0; p < s->block_size;) {
			uint64_t run;
			bool set;
			uint64_t vpos = block * s->block_size + p;

			if (vpos >= s->size)
				break;
			ret = vhdx_bitmap_run(s, block, p / s->logical_sector,
					      (s->block_size - p) /
						      s->logical_sector,
					      &run, &set);
			if (ret)
				return ret;
			uint64_t end = p + run * s->logical_sector;

			if (!set) {
				ret = vhdx_block_fill(img, s, block, host, p,
						      end, false);
				if (ret)
					return ret;
			}
			p = end;
		}
	} else {
		host = s->alloc_offset;
		if (host + s->block_size > VHDX_MAX_SIZE * 2)
			return img_error(img, -EFBIG,
					 "file would be too large");
		ret = img_file_truncate(&s->file, host + s->block_size);
		if (ret)
			return ret;
		s->alloc_offset = host + s->block_size;
		s->file_size = s->alloc_offset;
		if (vhdx_reads_parent(s, st)) {
			ret = vhdx_block_fill(img, s, block, host, 0, keep_from,
					      true);
			if (!ret)
				ret = vhdx_block_fill(img, s, block, host,
						      keep_to, s->block_size,
						      true);
			if (ret)
				return ret;
		}
	}
	ret = img_file_pwritev(&s->file, iov, iovcnt, host + keep_from);
	if (ret)
		return ret;
	vhdx_bat_set(s, index, VHDX_BAT_ENTRY(VHDX_BLOCK_FULLY_PRESENT, host));
	vhdx_bat_mark_dirty(s, index);
	return 0;
}

/* Does this write change what the disk reads?  Asked only until the
 * first change of a session, and answered "no" only for writes into a
 * differencing disk's absent blocks of what the parent already holds
 * (a layer's data pulled into its child by snapshot delete or commit):
 * such writes keep the data write GUID, so the children of this disk
 * stay valid. */
static bool vhdx_write_changes_data(struct img *img, struct vhdx_state *s,
				    uint64_t off, const struct iovec *iov,
				    int iovcnt, size_t len)
{
	uint8_t *now, *want;
	bool changes = true;

	bool changed = __atomic_load_n(&s->data_changed, __ATOMIC_ACQUIRE);

	if (changed || !s->has_parent || !len || len > (64u << 20))
		return !changed;
	for (uint64_t b = off / s->block_size;
	     b <= (off + len - 1) / s->block_size; b++)
		if (!vhdx_reads_parent(s,
				       VHDX_BAT_STATE(vhdx_bat_get(
					       s, vhdx_payload_index(s, b)))))
			return true;
	now = malloc(len);
	want = malloc(len);
	if (now && want) {
		struct iovec v = { now, len };

		img_iov_to_buf(iov, iovcnt, 0, want, len);
		changes = vhdx_preadv(img, off, &v, 1, len) ||
			  memcmp(now, want, len);
	}
	free(now);
	free(want);
	return changes;
}

static int vhdx_pwritev(struct img *img, uint64_t off, const struct iovec *iov,
			int iovcnt, size_t len)
{
	struct vhdx_state *s = img_state(img);
	struct iovec sub[IOV_MAX];
	bool allocated = false;
	size_t done = 0;
	int ret;

	ret = vhdx_session_begin(
		img, s, vhdx_write_changes_data(img, s, off, iov, iovcnt, len));
	if (ret)
		return ret;
	while (done < len) {
		uint64_t pos = off + done;
		uint64_t block = pos / s->block_size;
		uint64_t in_blk = pos % s->block_size;
		uint64_t index = vhdx_payload_index(s, block);
		uint64_t e = vhdx_bat_get(s, index);
		size_t n = (size_t)MIN((uint64_t)(len - done),
				       s->block_size - in_blk);
		int cnt = img_iov_slice(iov, iovcnt, done, n, sub, IOV_MAX);

		if (cnt < 0)
			return cnt;
		if (VHDX_BAT_STATE(e) != VHDX_BLOCK_FULLY_PRESENT) {
			/* Zeros into a block that reads as zeros: nothing to
			 * store. */
			unsigned st = VHDX_BAT_STATE(e);

			if (!vhdx_reads_parent(s, st) &&
			    st != VHDX_BLOCK_PARTIALLY_PRESENT &&
			    img_iov_is_zero(sub, cnt, n)) {
				done += n;
				continue;
			}
			pthread_mutex_lock(&s->meta_lock);
			e = s->bat[index];
			if (VHDX_BAT_STATE(e) != VHDX_BLOCK_FULLY_PRESENT) {
				ret = vhdx_block_allocate(img, s, block, in_blk,
							  in_blk + n, sub, cnt);
				allocated = true;
			}
			pthread_mutex_unlock(&s->meta_lock);
			if (ret)
				return ret;
			/* else allocated by a parallel write meanwhile */
			if (VHDX_BAT_STATE(e) != VHDX_BLOCK_FULLY_PRESENT) {
				done += n;
				continue;
			}
		}
		ret = img_file_pwritev(&s->file, sub, cnt,
				       VHDX_BAT_OFFSET(e) + in_blk);
		if (ret)
			return ret;
		done += n;
	}
	if (allocated) {
		pthread_mutex_lock(&s->meta_lock);
		if (s->dirty_count >= VHDX_MAX_DIRTY)
			ret = vhdx_commit(img, s);
		pthread_mutex_unlock(&s->meta_lock);
	}
	return ret;
}

/* Whole block to ZERO or UNMAPPED, its space punched out. */
static int vhdx_block_drop(struct img *img, struct vhdx_state *s,
			   uint64_t block, unsigned state)
{
	uint64_t index = vhdx_payload_index(s, block);
	uint64_t e = s->bat[index];
	int ret;

	if (VHDX_BAT_STATE(e) == state && !VHDX_BAT_OFFSET(e))
		return 0;
	if (VHDX_BAT_STATE(e) >= VHDX_BLOCK_FULLY_PRESENT) {
		ret = img_file_punch_hole(&s->file, VHDX_BAT_OFFSET(e),
					  s->block_size);
		if (ret == -EOPNOTSUPP || ret == -ENOTSUP)
			ret = img_file_zero_range(&s->file, VHDX_BAT_OFFSET(e),
						  s->block_size);
		if (ret)
			return ret;
	}
	(void)img;
	s->bat[index] = VHDX_BAT_ENTRY(state, 0);
	vhdx_bat_mark_dirty(s, index);
	return 0;
}

static int vhdx_write_zero_data(struct img *img, struct vhdx_state *s,
				uint64_t off, uint64_t len)
{
	int ret = 0;

	(void)s;
	while (len && !ret) {
		size_t n = (size_t)MIN(len, (uint64_t)VHDX_ZERO_CHUNK);
		static const uint8_t zeros[VHDX_ZERO_CHUNK];
		struct iovec v = { (void *)zeros, n };

		ret = vhdx_pwritev(img, off, &v, 1, n);
		off += n;
		len -= n;
	}
	return ret;
}

static int vhdx_write_zeroes(struct img *img, uint64_t off, uint64_t len,
			     unsigned flags)
{
	struct vhdx_state *s = img_state(img);
	int ret;

	ret = vhdx_session_begin(img, s, true);
	while (len && !ret) {
		uint64_t block = off / s->block_size;
		uint64_t in_blk = off % s->block_size;
		uint64_t n = MIN(len, s->block_size - in_blk);
		uint64_t e = s->bat[vhdx_payload_index(s, block)];
		unsigned st = VHDX_BAT_STATE(e);
		bool whole = !in_blk &&
			     (n == s->block_size || off + n >= s->size);

		if (whole && (flags & IMG_ZERO_MAY_UNMAP ||
			      st != VHDX_BLOCK_FULLY_PRESENT))
			ret = vhdx_block_drop(img, s, block, VHDX_BLOCK_ZERO);
		else if (st == VHDX_BLOCK_FULLY_PRESENT)
			ret = img_file_zero_range(
				&s->file, VHDX_BAT_OFFSET(e) + in_blk, n);
		else if (vhdx_reads_parent(s, st) ||
			 st == VHDX_BLOCK_PARTIALLY_PRESENT)
			ret = vhdx_write_zero_data(img, s, off, n);
		off += n;
		len -= n;
	}
	if (!ret && s->dirty_count >= VHDX_MAX_DIRTY)
		ret = vhdx_commit(img, s);
	return ret;
}

static int vhdx_discard(struct img *img, uint64_t off, uint64_t len)
{
	struct vhdx_state *s = img_state(img);
	uint64_t first = (off + s->block_size - 1) / s->block_size;
	uint64_t end = off + len >= s->size ? s->geo.data_blocks
					    : (off + len) / s->block_size;
	int ret;

	if (s->leave_allocated || first >= end)
		return 0;
	ret = vhdx_session_begin(img, s, true);
	for (uint64_t b = first; b < end && !ret; b++)
		ret = vhdx_block_drop(img, s, b, VHDX_BLOCK_UNMAPPED);
	if (!ret && s->dirty_count >= VHDX_MAX_DIRTY)
		ret = vhdx_commit(img, s);
	return ret;
}

static int vhdx_block_status(struct img *img, uint64_t off, uint64_t len,
			     struct img_extent *ext)
{
	struct vhdx_state *s = img_state(img);
	uint64_t block = off / s->block_size;
	uint64_t in_blk = off % s->block_size;
	uint64_t e = vhdx_bat_get(s, vhdx_payload_index(s, block));
	unsigned st = VHDX_BAT_STATE(e);
	uint64_t n = MIN(len, s->block_size - in_blk);

	ext->start = off;
	ext->file_offset = -1;
	if (st == VHDX_BLOCK_FULLY_PRESENT) {
		ext->flags = IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED;
		ext->depth = 0;
		ext->file_offset = (int64_t)(VHDX_BAT_OFFSET(e) + in_blk);
	} else if (st == VHDX_BLOCK_PARTIALLY_PRESENT) {
		uint64_t run;
		bool set;
		int ret = vhdx_bitmap_run(s, block, in_blk / s->logical_sector,
					  (n + s->logical_sector - 1) /
						  s->logical_sector,
					  &run, &set);

		if (ret)
			return ret;
		n = MIN(n,
			(in_blk / s->logical_sector + run) * s->logical_sector -
				in_blk);
		ext->flags = set ? IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED : 0;
		ext->depth = set ? 0 : -1;
		if (set)
			ext->file_offset =
				(int64_t)(VHDX_BAT_OFFSET(e) + in_blk);
	} else if (vhdx_reads_parent(s, st)) {
		ext->flags = 0;
		ext->depth = -1;
	} else {
		/* Reads as zeros, with no storage: allocated only where it
		 * hides a parent. */
		ext->flags = IMG_EXTENT_ZERO |
			     (s->has_parent ? IMG_EXTENT_ALLOCATED : 0);
		ext->depth = ext->flags & IMG_EXTENT_ALLOCATED ? 0 : -1;
	}
	/* Merge following blocks of the same kind (not present ones). */
	if (st != VHDX_BLOCK_FULLY_PRESENT &&
	    st != VHDX_BLOCK_PARTIALLY_PRESENT) {
		while (n < len && ++block < s->geo.data_blocks &&
		       VHDX_BAT_STATE(vhdx_bat_get(
			       s, vhdx_payload_index(s, block))) == st)
			n = MIN(len, n + s->block_size);
	}
	ext->length = n;
	return 0;
}

/* ---- info, chains --------------------------------------------------------*/

static int vhdx_get_info(struct img *img, struct img_info *info)
{
	struct vhdx_state *s = img_state(img);
	char g[39];

	snprintf(info->subformat, sizeof(info->subformat), "%s",
		 s->has_parent	      ? "differencing"
		 : s->leave_allocated ? "fixed"
				      : "dynamic");
	info->cluster_size = s->block_size;
	vhdx_guid_format(&s->page83, g, false);
	snprintf(info->uuid, sizeof(info->uuid), "%s", g);
	if (s->has_parent) {
		vhdx_guid_format(&s->parent_linkage, g, false);
		snprintf(info->parent_uuid, sizeof(info->parent_uuid), "%s", g);
		snprintf(info->backing_filename, sizeof(info->backing_filename),
			 "%s",
			 s->parent_relative[0] ? s->parent_relative
					       : s->parent_absolute);
		snprintf(info->backing_format, sizeof(info->backing_format),
			 "vhdx");
	}
	info->dirty = s->log_in_memory;
	img_info_add_int(info, "block_size", s->block_size);
	img_info_add_int(info, "logical_sector_size", s->logical_sector);
	img_info_add_int(info, "physical_sector_size", s->physical_sector);
	vhdx_guid_format(&s->header.data_write_guid, g, false);
	img_info_add_str(info, "data_write_guid", g);
	vhdx_guid_format(&s->header.file_write_guid, g, false);
	img_info_add_str(info, "file_write_guid", g);
	img_info_add_int(info, "header_sequence", (int64_t)s->header.sequence);
	img_info_add_int(info, "log_size", s->header.log_length);
	if (s->log_replayed)
		img_info_add_bool(info, "log_replayed", true);
	if (s->log_in_memory)
		img_info_add_bool(info, "log_pending", true);
	if (s->has_parent && s->parent_absolute[0])
		img_info_add_str(info, "parent_absolute_path",
				 s->parent_absolute);
	img_info_add_file(info, img_filename(img));
	return 0;
}

static int vhdx_backing_matches(struct img *img, struct img *parent)
{
	struct vhdx_state *s = img_state(img);
	const struct vhdx_state *ps;
	char want[39], have[39];

	if (!s->has_parent)
		return 0;
	if (strcmp(img_format(parent), "vhdx"))
		return img_error(img, -ESTALE,
				 "parent %s is %s, but a VHDX differencing "
				 "disk needs a VHDX parent",
				 img_filename(parent), img_format(parent));
	ps = img_state(parent);
	if (vhdx_guid_equal(&ps->header.data_write_guid, &s->parent_linkage) ||
	    (s->has_linkage2 &&
	     vhdx_guid_equal(&ps->header.data_write_guid, &s->parent_linkage2)))
		return 0;
	vhdx_guid_format(&s->parent_linkage, want, true);
	vhdx_guid_format(&ps->header.data_write_guid, have, true);
	return img_error(img, -ESTALE,
			 "parent %s has data write GUID %s but this "
			 "differencing disk was made for %s (was the parent "
			 "modified?)",
			 img_filename(parent), have, want);
}

static const char *const vhdx_create_options[] = { "block_size",
						   "logical_sector_size",
						   "physical_sector_size",
						   "log_size", NULL };

const struct img_driver img_driver_vhdx = {
	.name = "vhdx",
	.aliases = NULL,
	.description = "Microsoft VHDX (Hyper-V, Azure)",
	.flags = IMG_DRV_CONCURRENT_READS,
	.state_size = sizeof(struct vhdx_state),
	.create_options = vhdx_create_options,
	.probe = vhdx_probe,
	.create = vhdx_create,
	.open = vhdx_open,
	.close = vhdx_close,
	.preadv = vhdx_preadv,
	.pwritev = vhdx_pwritev,
	.flush = vhdx_flush,
	.write_zeroes = vhdx_write_zeroes,
	.discard = vhdx_discard,
	.block_status = vhdx_block_status,
	.resize = vhdx_resize,
	.check = vhdx_check,
	.get_info = vhdx_get_info,
	.backing_matches = vhdx_backing_matches,
	.set_backing = vhdx_set_backing,
};
