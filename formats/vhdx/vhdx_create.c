/* SPDX-License-Identifier: MIT */
/*
 * VHDX create and resize.
 *
 * Layout of a new image: the 1 MiB header section (file identifier, two
 * headers, two region tables), the log (1 MiB unless log_size says), the
 * metadata region (1 MiB: the table, then the items from 64 KiB), the BAT
 * (rounded up to 1 MiB), then payload blocks, each 1 MiB aligned.
 */
#include "vhdx_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VHDX_DEFAULT_LOG_SIZE VHDX_MiB
#define VHDX_META_REGION_SIZE VHDX_MiB
#define VHDX_CREATOR "imgtool"

/* qemu-img's default, so images of a size come out alike: larger blocks
 * for larger disks. */
static uint32_t vhdx_default_block_size(uint64_t size)
{
	if (size > 32 * VHDX_TiB)
		return 64u << 20;
	if (size > 100ull << 30)
		return 32u << 20;
	if (size > 1ull << 30)
		return 16u << 20;
	return 8u << 20;
}

static int vhdx_option_size(const struct img_create_args *args, const char *key,
			    uint64_t *out, char *errbuf, size_t errlen)
{
	const char *v = img_create_arg(args, key);

	if (!v)
		return 0;
	if (img_parse_size(v, out) || *out > UINT32_MAX)
		return img_error_buf(errbuf, errlen, -EINVAL, "invalid %s '%s'",
				     key, v);
	return 0;
}

/* The parent locator item (2.6.2.6): its header, the key/value entries,
 * then UTF-16LE keys and values.  Returns the length or -1. */
static int vhdx_locator_build(uint8_t *buf, size_t max,
			      const char *const keys[],
			      const char *const values[], int n)
{
	size_t pos = 20 + (size_t)n * 12;

	if (pos > max)
		return -1;
	memset(buf, 0, max);
	memcpy(buf, vhdx_guid_parent_locator_type.b, 16);
	vhdx_put16(buf + 18, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		uint8_t *e = buf + 20 + (size_t)i * 12;
		int kl = vhdx_utf8_to_utf16(keys[i], buf + pos, max - pos);

		if (kl < 0)
			return -1;
		vhdx_put32(e, (uint32_t)pos);
		vhdx_put16(e + 8, (uint16_t)kl);
		pos += (size_t)kl;
		int vl = vhdx_utf8_to_utf16(values[i], buf + pos, max - pos);

		if (vl < 0)
			return -1;
		vhdx_put32(e + 4, (uint32_t)pos);
		vhdx_put16(e + 10, (uint16_t)vl);
		pos += (size_t)vl;
	}
	return (int)pos;
}

static void vhdx_windows_path(char *dst, size_t max, const char *src,
			      bool relative)
{
	size_t o = 0;

	if (relative && max > 2) {
		dst[o++] = '.';
		dst[o++] = '\\';
	}
	for (; *src && o + 1 < max; src++)
		dst[o++] = *src == '/' ? '\\' : *src;
	dst[o] = 0;
}

/* The locator of a child whose parent is recorded as backing_file
 * (relative to the child, or absolute) and opened as parent. */
static int vhdx_locator_for(const char *backing_file, struct img *parent,
			    const struct vhdx_guid *linkage, uint8_t *buf,
			    size_t max)
{
	char abs_path[PATH_MAX], wrel[PATH_MAX], wabs[PATH_MAX], link[39];
	const char *keys[3], *values[3];
	int n = 0;

	vhdx_guid_format(linkage, link, true);
	keys[n] = "parent_linkage";
	values[n++] = link;
	if (!realpath(img_filename(parent), abs_path))
		snprintf(abs_path, sizeof(abs_path), "%s",
			 img_filename(parent));
	if (backing_file[0] != '/') {
		vhdx_windows_path(wrel, sizeof(wrel), backing_file, true);
		keys[n] = "relative_path";
		values[n++] = wrel;
	}
	vhdx_windows_path(wabs, sizeof(wabs), abs_path, false);
	keys[n] = "absolute_win32_path";
	values[n++] = wabs;
	return vhdx_locator_build(buf, max, keys, values, n);
}

int vhdx_create(const struct img_create_args *args, char *errbuf, size_t errlen)
{
	struct img_file file = { 0 };
	uint64_t size = args->size, block_size = 0, lss = 0, pss = 0,
		 log_size = VHDX_DEFAULT_LOG_SIZE;
	bool fixed = false, diff = false;
	uint8_t *buf = NULL, locator[8192];
	int locator_len = 0, ret;
	struct vhdx_guid linkage;

	if (args->subformat && !strcmp(args->subformat, "fixed"))
		fixed = true;
	else if (args->subformat && !strcmp(args->subformat, "differencing"))
		diff = true;
	else if (args->subformat && strcmp(args->subformat, "dynamic"))
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "unknown VHDX subformat '%s' (fixed, "
				     "dynamic, differencing)",
				     args->subformat);
	if (args->backing_file) {
		if (fixed)
			return img_error_buf(errbuf, errlen, -EINVAL,
					     "a fixed VHDX cannot have a "
					     "backing file");
		diff = true;
	} else if (diff) {
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "a differencing VHDX needs a backing "
				     "file");
	}
	if (args->cluster_size)
		block_size = args->cluster_size;
	ret = vhdx_option_size(args, "block_size", &block_size, errbuf, errlen);
	if (!ret)
		ret = vhdx_option_size(args, "logical_sector_size", &lss,
				       errbuf, errlen);
	if (!ret)
		ret = vhdx_option_size(args, "physical_sector_size", &pss,
				       errbuf, errlen);
	if (!ret)
		ret = vhdx_option_size(args, "log_size", &log_size, errbuf,
				       errlen);
	if (ret)
		return ret;
	if (diff) {
		const struct vhdx_state *ps;

		if (!args->backing || strcmp(img_format(args->backing), "vhdx"))
			return img_error_buf(
				errbuf, errlen, -EINVAL,
				"the parent of a VHDX differencing "
				"disk must be an openable VHDX "
				"image");
		ps = img_state(args->backing);
		linkage = ps->header.data_write_guid;
		if (!size)
			size = ps->size;
		if (!lss)
			lss = ps->logical_sector;
		if (!pss)
			pss = ps->physical_sector;
		if (lss != ps->logical_sector)
			return img_error_buf(errbuf, errlen, -EINVAL,
					     "logical sector size %llu differs "
					     "from the parent's %u",
					     (unsigned long long)lss,
					     ps->logical_sector);
	}
	if (!lss)
		lss = 512;
	if (!pss)
		pss = 4096;
	if (!block_size)
		block_size = diff ? 2u << 20 : vhdx_default_block_size(size);
	if (block_size < VHDX_MIN_BLOCK_SIZE ||
	    block_size > VHDX_MAX_BLOCK_SIZE || (block_size & (block_size - 1)))
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "VHDX block size must be a power of two "
				     "from 1 MiB to 256 MiB, not %llu",
				     (unsigned long long)block_size);
	if ((lss != 512 && lss != 4096) || (pss != 512 && pss != 4096))
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "VHDX sector sizes must be 512 or 4096");
	if (!log_size || log_size % VHDX_MiB || log_size > (256u << 20))
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "VHDX log size must be a multiple of 1 "
				     "MiB up to 256 MiB");
	size = vhdx_round_up(size, lss);
	if (!size || size > VHDX_MAX_SIZE)
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "VHDX size must be from 1 sector to 64 "
				     "TiB");

	if (diff) {
		locator_len = vhdx_locator_for(args->backing_file,
					       args->backing, &linkage, locator,
					       sizeof(locator));
		if (locator_len < 0)
			return img_error_buf(errbuf, errlen, -ENAMETOOLONG,
					     "parent path too long for the "
					     "locator");
	}

	struct vhdx_bat_geometry geo;

	vhdx_bat_geometry(size, (uint32_t)block_size, (uint32_t)lss, diff,
			  &geo);
	uint64_t log_offset = VHDX_HEADER_SECTION_SIZE;
	uint64_t meta_offset = log_offset + log_size;
	uint64_t bat_offset = meta_offset + VHDX_META_REGION_SIZE;
	uint64_t bat_length = vhdx_round_up(MAX(geo.entries * 8, 1), VHDX_MiB);
	uint64_t data_offset = bat_offset + bat_length;
	uint64_t file_size = data_offset;

	if (bat_length > UINT32_MAX)
		return img_error_buf(errbuf, errlen, -EFBIG,
				     "BAT too large for this block size");
	if (fixed)
		file_size += geo.data_blocks * block_size;

	ret = img_file_create(&file, args->path, args->excl, errbuf, errlen);
	if (ret)
		return ret;
	buf = calloc(1, VHDX_MiB);
	if (!buf) {
		ret = -ENOMEM;
		goto fail;
	}
	/* File identifier. */
	memcpy(buf, VHDX_FILE_ID_SIGNATURE, 8);
	vhdx_utf8_to_utf16(VHDX_CREATOR, buf + 8, 512);
	/* Headers. */
	struct vhdx_header h = { .version = 1,
				 .log_length = (uint32_t)log_size,
				 .log_offset = log_offset };

	vhdx_guid_generate(&h.file_write_guid);
	vhdx_guid_generate(&h.data_write_guid);
	h.sequence = 0;
	vhdx_header_encode(&h, buf + VHDX_HEADER1_OFFSET);
	h.sequence = 1;
	vhdx_header_encode(&h, buf + VHDX_HEADER2_OFFSET);
	/* Region tables. */
	struct vhdx_region regions[2] = {
		{ vhdx_guid_bat, bat_offset, (uint32_t)bat_length, true },
		{ vhdx_guid_metadata, meta_offset, VHDX_META_REGION_SIZE,
		  true },
	};

	vhdx_region_table_encode(regions, 2, buf + VHDX_REGION_TABLE1_OFFSET);
	vhdx_region_table_encode(regions, 2, buf + VHDX_REGION_TABLE2_OFFSET);
	ret = img_file_pwrite(&file, buf, VHDX_MiB, 0);
	if (ret)
		goto fail_msg;

	/* Metadata region: table, then items from 64 KiB. */
	struct vhdx_metadata_entry me[6] = {
		{ vhdx_guid_file_parameters, 65536, 8, VHDX_META_IS_REQUIRED },
		{ vhdx_guid_virtual_disk_size, 65536 + 8, 8,
		  VHDX_META_IS_REQUIRED | VHDX_META_IS_VIRTUAL_DISK },
		{ vhdx_guid_page83, 65536 + 16, 16,
		  VHDX_META_IS_REQUIRED | VHDX_META_IS_VIRTUAL_DISK },
		{ vhdx_guid_logical_sector_size, 65536 + 32, 4,
		  VHDX_META_IS_REQUIRED | VHDX_META_IS_VIRTUAL_DISK },
		{ vhdx_guid_physical_sector_size, 65536 + 36, 4,
		  VHDX_META_IS_REQUIRED | VHDX_META_IS_VIRTUAL_DISK },
		{ vhdx_guid_parent_locator, 65536 + 4096, (uint32_t)locator_len,
		  VHDX_META_IS_REQUIRED },
	};
	struct vhdx_guid page83;

	memset(buf, 0, VHDX_MiB);
	vhdx_metadata_table_encode(me, diff ? 6 : 5, buf);
	vhdx_put32(buf + 65536, (uint32_t)block_size);
	vhdx_put32(buf + 65536 + 4,
		   (fixed ? VHDX_PARAM_LEAVE_BLOCKS_ALLOCATED : 0) |
			   (diff ? VHDX_PARAM_HAS_PARENT : 0));
	vhdx_put64(buf + 65536 + 8, size);
	vhdx_guid_generate(&page83);
	memcpy(buf + 65536 + 16, page83.b, 16);
	vhdx_put32(buf + 65536 + 32, (uint32_t)lss);
	vhdx_put32(buf + 65536 + 36, (uint32_t)pss);
	if (diff)
		memcpy(buf + 65536 + 4096, locator, (size_t)locator_len);
	ret = img_file_pwrite(&file, buf, VHDX_MiB, meta_offset);
	if (ret)
		goto fail_msg;

	/* BAT: all not present, or (fixed) every block in place. */
	if (fixed) {
		uint64_t per = VHDX_MiB / 8;

		for (uint64_t first = 0; first < geo.entries; first += per) {
			uint64_t n = MIN(per, geo.entries - first);

			memset(buf, 0, VHDX_MiB);
			for (uint64_t i = 0; i < n; i++) {
				uint64_t idx = first + i;

				if ((idx + 1) % (geo.chunk_ratio + 1ull) == 0)
					continue; /* sector bitmap entry */
				uint64_t blk =
					idx - idx / (geo.chunk_ratio + 1ull);

				vhdx_put64(buf + i * 8,
					   VHDX_BAT_ENTRY(
						   VHDX_BLOCK_FULLY_PRESENT,
						   data_offset +
							   blk * block_size));
			}
			ret = img_file_pwrite(&file, buf, (size_t)(n * 8),
					      bat_offset + first * 8);
			if (ret)
				goto fail_msg;
		}
	}
	ret = img_file_truncate(&file, file_size);
	if (!ret && args->preallocate && fixed)
		ret = img_file_zero_range(&file, data_offset,
					  file_size - data_offset);
	if (!ret)
		ret = img_file_sync(&file);
	if (ret)
		goto fail_msg;
	free(buf);
	img_file_close(&file);
	return 0;
fail_msg:
	img_error_buf(errbuf, errlen, ret, "%s: cannot write the new image: %s",
		      args->path, strerror(-ret));
fail:
	free(buf);
	img_file_close(&file);
	unlink(args->path);
	return ret;
}

/* ---- resize --------------------------------------------------------------*/

/* Sync, one log entry, the sectors in place. */
static int vhdx_log_sectors(struct img *img, struct vhdx_state *s,
			    const struct vhdx_log_write *w, uint32_t n)
{
	int ret = img_file_sync(&s->file);

	if (!ret)
		ret = vhdx_log_write(img, s, w, n);
	for (uint32_t i = 0; !ret && i < n; i++)
		ret = img_file_pwrite(&s->file, w[i].data, VHDX_LOG_SECTOR,
				      w[i].offset);
	return ret;
}

/* Moves the BAT to the end of the file, bat_length bytes long: the copy
 * first, then both region tables through the log. */
static int vhdx_bat_relocate(struct img *img, struct vhdx_state *s,
			     uint64_t entries, uint64_t bat_length)
{
	uint64_t new_offset = s->alloc_offset;
	uint8_t *raw = calloc(1, (size_t)bat_length);
	uint8_t *rt = malloc(VHDX_REGION_TABLE_SIZE);
	uint8_t sectors[2][VHDX_LOG_SECTOR];
	struct vhdx_log_write w[2];
	int ret = 0;

	if (!raw || !rt) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < entries; i++)
		vhdx_put64(raw + i * 8, s->bat[i]);
	ret = img_file_pwrite(&s->file, raw, (size_t)bat_length, new_offset);
	if (ret)
		goto out;
	s->alloc_offset = new_offset + bat_length;
	s->file_size = s->alloc_offset;
	for (int t = 0; t < 2; t++) {
		uint64_t at = t ? VHDX_REGION_TABLE2_OFFSET
				: VHDX_REGION_TABLE1_OFFSET;
		uint32_t n, i;

		ret = vhdx_read_file(s, rt, VHDX_REGION_TABLE_SIZE, at);
		if (ret)
			goto out;
		n = vhdx_region_count(rt);
		for (i = 0; i < n && i < 127; i++) {
			struct vhdx_region r;

			vhdx_region_decode(rt, i, &r);
			if (vhdx_guid_equal(&r.guid, &vhdx_guid_bat))
				break;
		}
		if (i >= n || i >= 127) {
			ret = img_error(img, -ENOTSUP,
					"cannot find the BAT in region table "
					"%d to move it",
					t + 1);
			goto out;
		}
		uint8_t *p = rt + 16 + (size_t)i * 32;

		vhdx_put64(p + 16, new_offset);
		vhdx_put32(p + 24, (uint32_t)bat_length);
		vhdx_checksum_set(rt, VHDX_REGION_TABLE_SIZE, 4);
		memcpy(sectors[t], rt, VHDX_LOG_SECTOR);
		w[t].offset = at;
		w[t].data = sectors[t];
	}
	ret = vhdx_log_sectors(img, s, w, 2);
	if (ret)
		goto out;
	s->bat_offset = new_offset;
	s->bat_length = (uint32_t)bat_length;
out:
	free(raw);
	free(rt);
	return ret;
}

/* Room in memory for a BAT of entries entries (more than now): the new
 * entries are zero (not present) and their sectors not dirty yet. */
static int vhdx_bat_grow(struct vhdx_state *s, uint64_t entries)
{
	uint64_t old = s->geo.entries;
	uint64_t nsec = (entries * 8 + VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR;
	uint64_t old_nsec = (old * 8 + VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR;
	uint64_t *bat = realloc(s->bat, entries * 8 + 8);
	uint8_t *dirty = realloc(s->bat_dirty, nsec + 1);

	if (bat)
		s->bat = bat;
	if (dirty)
		s->bat_dirty = dirty;
	if (!bat || !dirty)
		return -ENOMEM;
	memset(s->bat + old, 0, (entries - old) * 8);
	memset(s->bat_dirty + old_nsec, 0, nsec + 1 - old_nsec);
	return 0;
}

static int vhdx_size_write(struct img *img, struct vhdx_state *s,
			   uint64_t new_size)
{
	uint8_t sector[VHDX_LOG_SECTOR];
	uint64_t at = s->vsize_item_offset / VHDX_LOG_SECTOR * VHDX_LOG_SECTOR;
	struct vhdx_log_write w = { at, sector };
	int ret;

	if (s->vsize_item_offset + 8 > at + VHDX_LOG_SECTOR)
		return img_error(
			img, -ENOTSUP,
			"virtual disk size item straddles two sectors");
	ret = vhdx_read_file(s, sector, sizeof(sector), at);
	if (ret)
		return ret;
	vhdx_put64(sector + (s->vsize_item_offset - at), new_size);
	return vhdx_log_sectors(img, s, &w, 1);
}

int vhdx_resize(struct img *img, uint64_t new_size, unsigned flags)
{
	struct vhdx_state *s = img_state(img);
	struct vhdx_bat_geometry geo;
	int ret;

	(void)flags;
	if (s->leave_allocated && !s->has_parent)
		return img_error(img, -ENOTSUP,
				 "fixed VHDX images cannot be resized");
	if (new_size % s->logical_sector || !new_size ||
	    new_size > VHDX_MAX_SIZE)
		return img_error(img, -EINVAL,
				 "new size must be a multiple of the %u-byte "
				 "sector, up to 64 TiB",
				 s->logical_sector);
	if (s->read_only)
		return img_error(img, -EROFS, "image is read-only");
	ret = vhdx_session_begin(img, s, true);
	if (ret)
		return ret;
	vhdx_bat_geometry(new_size, s->block_size, s->logical_sector,
			  s->has_parent, &geo);
	uint64_t old_entries = s->geo.entries;

	if (geo.data_blocks < s->geo.data_blocks) {
		/* Shrink: the blocks past the end go first. */
		for (uint64_t b = geo.data_blocks; b < s->geo.data_blocks;
		     b++) {
			uint64_t idx = vhdx_payload_index(s, b);
			uint64_t e = s->bat[idx];

			if (VHDX_BAT_STATE(e) >= VHDX_BLOCK_FULLY_PRESENT)
				img_file_punch_hole(&s->file,
						    VHDX_BAT_OFFSET(e),
						    s->block_size);
			s->bat[idx] = 0;
			vhdx_bat_mark_dirty(s, idx);
		}
		for (uint64_t i = geo.entries; i < old_entries; i++) {
			if (s->bat[i]) {
				s->bat[i] = 0;
				vhdx_bat_mark_dirty(s, i);
			}
		}
		ret = vhdx_commit(img, s);
		if (ret)
			return ret;
	} else if (geo.entries > old_entries) {
		ret = vhdx_bat_grow(s, geo.entries);
		if (ret)
			return ret;
		if (geo.entries * 8 > s->bat_length) {
			ret = vhdx_commit(img, s);
			if (!ret)
				ret = vhdx_bat_relocate(
					img, s, geo.entries,
					vhdx_round_up(geo.entries * 8,
						      VHDX_MiB));
			if (ret)
				return ret;
		} else {
			/* The new entries' sectors must read as zeros. */
			s->geo = geo;
			for (uint64_t i = old_entries; i < geo.entries; i++)
				vhdx_bat_mark_dirty(s, i);
			ret = vhdx_commit(img, s);
			if (ret)
				return ret;
		}
	}
	s->geo = geo;
	ret = vhdx_size_write(img, s, new_size);
	if (ret)
		return ret;
	s->size = new_size;
	img_set_size(img, new_size);
	return 0;
}

/* ---- parent reference ----------------------------------------------------*/

struct vhdx_sector_set {
	uint32_t n;
	struct vhdx_log_write w[16];
	uint8_t data[16][VHDX_LOG_SECTOR];
};

/* The buffer of the 4 KiB metadata sector holding file offset off, read
 * from the file the first time. */
static uint8_t *vhdx_sector_get(struct vhdx_state *s,
				struct vhdx_sector_set *set, uint64_t off,
				int *err)
{
	uint64_t at = off / VHDX_LOG_SECTOR * VHDX_LOG_SECTOR;

	for (uint32_t i = 0; i < set->n; i++)
		if (set->w[i].offset == at)
			return set->data[i];
	if (set->n == 16) {
		*err = -E2BIG;
		return NULL;
	}
	*err = vhdx_read_file(s, set->data[set->n], VHDX_LOG_SECTOR, at);
	if (*err)
		return NULL;
	set->w[set->n].offset = at;
	set->w[set->n].data = set->data[set->n];
	return set->data[set->n++];
}

/* Copies len bytes into the metadata at file offset off, sector by
 * sector. */
static int vhdx_sector_put(struct vhdx_state *s, struct vhdx_sector_set *set,
			   uint64_t off, const uint8_t *src, size_t len)
{
	while (len) {
		int err = 0;
		uint8_t *sec = vhdx_sector_get(s, set, off, &err);
		size_t in = (size_t)(off % VHDX_LOG_SECTOR);
		size_t n = MIN(len, VHDX_LOG_SECTOR - in);

		if (!sec)
			return err;
		memcpy(sec + in, src, n);
		off += n;
		src += n;
		len -= n;
	}
	return 0;
}

int vhdx_set_backing(struct img *img, const char *backing_file,
		     const char *backing_format, struct img *parent)
{
	struct vhdx_state *s = img_state(img);
	struct vhdx_sector_set *set = NULL;
	uint8_t locator[8192], *table = NULL;
	struct vhdx_guid linkage = { 0 };
	struct vhdx_bat_geometry geo;
	bool diff = backing_file != NULL;
	int loc_len = 0, ret = 0, li = -1, pi = -1;

	(void)backing_format;
	if (s->read_only)
		return img_error(img, -EROFS, "image is read-only");
	if (diff) {
		const struct vhdx_state *ps;

		if (!parent || strcmp(img_format(parent), "vhdx"))
			return img_error(img, -EINVAL,
					 "the parent of a VHDX differencing "
					 "disk must be an open VHDX image");
		ps = img_state(parent);
		if (ps->logical_sector != s->logical_sector)
			return img_error(img, -EINVAL,
					 "parent has %u-byte sectors, this "
					 "disk %u-byte ones",
					 ps->logical_sector, s->logical_sector);
		linkage = ps->header.data_write_guid;
		loc_len = vhdx_locator_for(backing_file, parent, &linkage,
					   locator, sizeof(locator));
		if (loc_len < 0)
			return img_error(
				img, -ENAMETOOLONG,
				"parent path too long for the locator");
	} else if (!s->has_parent) {
		return 0;
	}
	vhdx_bat_geometry(s->size, s->block_size, s->logical_sector, diff,
			  &geo);
	if (geo.entries * 8 > s->bat_length)
		return img_error(img, -ENOTSUP,
				 "the BAT region has no room for the entries "
				 "of a differencing disk");
	for (uint64_t b = 0; !diff && b < s->geo.data_blocks; b++)
		if (VHDX_BAT_STATE(s->bat[vhdx_payload_index(s, b)]) ==
		    VHDX_BLOCK_PARTIALLY_PRESENT)
			return img_error(img, -ENOTSUP,
					 "block %llu is partially present: the "
					 "disk cannot stand alone",
					 (unsigned long long)b);

	table = malloc(VHDX_METADATA_TABLE_SIZE);
	set = calloc(1, sizeof(*set));
	if (!table || !set) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(table, s->meta_table, VHDX_METADATA_TABLE_SIZE);
	uint32_t n = vhdx_metadata_count(table);
	uint64_t items_end = VHDX_METADATA_TABLE_SIZE;

	for (uint32_t i = 0; i < n; i++) {
		struct vhdx_metadata_entry e;

		vhdx_metadata_decode(table, i, &e);
		if (vhdx_guid_equal(&e.item, &vhdx_guid_parent_locator))
			li = (int)i;
		if (vhdx_guid_equal(&e.item, &vhdx_guid_file_parameters))
			pi = (int)i;
		items_end = MAX(items_end, (uint64_t)e.offset + e.length);
	}
	if (pi < 0) {
		ret = img_error(img, -EINVAL, "metadata lacks file parameters");
		goto out;
	}
	struct vhdx_metadata_entry params;
	uint8_t pbuf[8];

	vhdx_metadata_decode(table, (uint32_t)pi, &params);
	ret = vhdx_read_file(s, pbuf, 8, s->meta_offset + params.offset);
	if (ret)
		goto out;
	uint32_t flags = vhdx_get32(pbuf + 4) & ~VHDX_PARAM_HAS_PARENT;

	vhdx_put32(pbuf + 4, flags | (diff ? VHDX_PARAM_HAS_PARENT : 0));
	ret = vhdx_sector_put(s, set, s->meta_offset + params.offset, pbuf, 8);
	if (ret)
		goto out;
	if (diff) {
		struct vhdx_metadata_entry e = { vhdx_guid_parent_locator, 0,
						 (uint32_t)loc_len,
						 VHDX_META_IS_REQUIRED };
		struct vhdx_metadata_entry old;

		if (li >= 0)
			vhdx_metadata_decode(table, (uint32_t)li, &old);
		if (li >= 0 && old.length >= (uint32_t)loc_len) {
			e.offset = old.offset;
		} else {
			e.offset = (uint32_t)vhdx_round_up(items_end,
							   VHDX_LOG_SECTOR);
			if (e.offset + (uint64_t)loc_len > s->meta_length) {
				ret = img_error(
					img, -ENOSPC,
					"no room for the parent locator "
					"in the metadata region");
				goto out;
			}
		}
		if (li < 0) {
			if (n >= 126) {
				ret = img_error(img, -ENOSPC,
						"metadata table is full");
				goto out;
			}
			li = (int)n++;
			vhdx_put16(table + 10, (uint16_t)n);
		}
		uint8_t *p = table + 32 + (size_t)li * 32;

		memcpy(p, e.item.b, 16);
		vhdx_put32(p + 16, e.offset);
		vhdx_put32(p + 20, e.length);
		vhdx_put32(p + 24, e.flags);
		ret = vhdx_sector_put(s, set, s->meta_offset + e.offset,
				      locator, (size_t)loc_len);
		if (ret)
			goto out;
	} else if (li >= 0) {
		memmove(table + 32 + (size_t)li * 32,
			table + 32 + (size_t)(li + 1) * 32,
			(size_t)(n - (uint32_t)li - 1) * 32);
		n--;
		memset(table + 32 + (size_t)n * 32, 0, 32);
		vhdx_put16(table + 10, (uint16_t)n);
	}
	for (uint32_t k = 0;
	     k < (32 + (n + 1) * 32 + VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR;
	     k++) {
		ret = vhdx_sector_put(s, set,
				      s->meta_offset + k * VHDX_LOG_SECTOR,
				      table + k * VHDX_LOG_SECTOR,
				      VHDX_LOG_SECTOR);
		if (ret)
			goto out;
	}

	/* A new parent reference is not a change of the data: the caller
	 * (rebase, snapshot) vouches that the disk reads the same, and the
	 * children of this disk stay valid. */
	ret = vhdx_session_begin(img, s, false);
	if (ret)
		goto out;
	if (geo.entries > s->geo.entries) {
		/* The new sector bitmap entries must read as "not present". */
		uint64_t old_entries = s->geo.entries;

		ret = vhdx_bat_grow(s, geo.entries);
		if (ret)
			goto out;

		s->geo = geo;
		for (uint64_t i = old_entries; i < geo.entries; i++)
			vhdx_bat_mark_dirty(s, i);
	}
	ret = vhdx_commit(img, s);
	if (!ret)
		ret = vhdx_log_sectors(img, s, set->w, set->n);
	if (ret)
		goto out;
	s->geo = geo;
	memcpy(s->meta_table, table, VHDX_METADATA_TABLE_SIZE);
	s->has_parent = diff;
	s->has_linkage = diff;
	s->has_linkage2 = false;
	s->parent_linkage = linkage;
	s->parent_relative[0] = s->parent_absolute[0] = s->parent_volume[0] = 0;
	if (diff) {
		if (backing_file[0] != '/')
			snprintf(s->parent_relative, sizeof(s->parent_relative),
				 "%s", backing_file);
		if (!realpath(img_filename(parent), s->parent_absolute))
			snprintf(s->parent_absolute, sizeof(s->parent_absolute),
				 "%s", img_filename(parent));
	}
out:
	free(table);
	free(set);
	return ret;
}
