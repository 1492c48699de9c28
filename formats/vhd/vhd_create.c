/* SPDX-License-Identifier: MIT */
/* VHD create and resize (fixed, dynamic and differencing). */
#include "vhd_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- create --------------------------------------------------------------*/

static bool vhd_option_bool(const char *v, bool *out)
{
	if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes") ||
	    !strcmp(v, "1"))
		*out = true;
	else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no") ||
		 !strcmp(v, "0"))
		*out = false;
	else
		return false;
	return true;
}

static void vhd_footer_init(struct vhd_footer *f, uint64_t size, uint32_t type)
{
	struct vhd_geometry g = vhd_geometry_for(size / VHD_SECTOR);

	memset(f, 0, sizeof(*f));
	f->features = VHD_FEATURE_RESERVED;
	f->version = VHD_VERSION;
	f->data_offset = type == VHD_TYPE_FIXED ? VHD_NO_OFFSET
						: VHD_FOOTER_SIZE;
	f->timestamp = vhd_timestamp_from_unix(time(NULL));
	memcpy(f->creator_app, VHD_CREATOR_APP, 4);
	f->creator_version = VHD_CREATOR_VERSION;
	f->creator_host_os = VHD_OS_WINDOWS;
	f->original_size = f->current_size = size;
	f->cylinders = g.cylinders;
	f->heads = g.heads;
	f->sectors_per_track = g.sectors_per_track;
	f->disk_type = type;
	img_random_bytes(f->uuid, sizeof(f->uuid));
}

/* Directory part of path ("." when none). */
int vhd_create(const struct img_create_args *args, char *errbuf, size_t errlen)
{
	struct vhd_footer footer;
	struct vhd_header header;
	struct vhd_locator_data *loc = NULL;
	struct img_file file = { 0 };
	uint8_t *meta = NULL;
	uint32_t type = VHD_TYPE_DYNAMIC, block_size = VHD_DEFAULT_BLOCK_SIZE;
	uint64_t size = args->size, sectors;
	bool force_size = true, created = false;
	const char *v;
	int ret, nloc = 0;

	if (args->subformat && !strcmp(args->subformat, "fixed"))
		type = VHD_TYPE_FIXED;
	else if (args->subformat && strcmp(args->subformat, "dynamic") &&
		 strcmp(args->subformat, "differencing"))
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "unknown VHD subformat '%s' (fixed, "
				     "dynamic)",
				     args->subformat);
	if (args->backing_file) {
		if (type == VHD_TYPE_FIXED)
			return img_error_buf(errbuf, errlen, -EINVAL,
					     "a fixed VHD cannot have a "
					     "backing file");
		type = VHD_TYPE_DIFFERENCING;
		if (!size && args->backing)
			size = img_size(args->backing);
	}
	v = img_create_arg(args, "force_size");
	if (v && !vhd_option_bool(v, &force_size))
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "force_size must be on or off, not '%s'",
				     v);
	if (args->cluster_size)
		block_size = args->cluster_size;
	v = img_create_arg(args, "block_size");
	if (v) {
		uint64_t parsed;

		if (img_parse_size(v, &parsed) || parsed > UINT32_MAX)
			return img_error_buf(errbuf, errlen, -EINVAL,
					     "invalid block_size '%s'", v);
		block_size = (uint32_t)parsed;
	}
	if (block_size < VHD_MIN_BLOCK_SIZE ||
	    block_size > VHD_MAX_BLOCK_SIZE || (block_size & (block_size - 1)))
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "VHD block size must be a power of two "
				     "from 4 KiB to 256 MiB, not %u",
				     block_size);

	sectors = (size + VHD_SECTOR - 1) / VHD_SECTOR;
	if (!force_size)
		sectors = vhd_geometry_round_up(sectors);
	size = sectors * VHD_SECTOR;
	if (size > VHD_MAX_SIZE)
		return img_error_buf(errbuf, errlen, -EFBIG,
				     "VHD images are limited to 2040 GiB");

	vhd_footer_init(&footer, size, type);
	ret = img_file_create(&file, args->path, args->excl, errbuf, errlen);
	if (ret)
		return ret;
	created = true;

	if (type == VHD_TYPE_FIXED) {
		uint8_t raw[VHD_FOOTER_SIZE];

		ret = img_file_truncate(&file, size);
		if (!ret) {
			vhd_footer_encode(&footer, raw);
			ret = img_file_pwrite(&file, raw, sizeof(raw), size);
		}
		if (ret)
			goto fail;
		goto done;
	}

	uint32_t entries = (uint32_t)((size + block_size - 1) / block_size);
	uint64_t bat_bytes = vhd_bat_bytes(entries);
	uint64_t table_offset = VHD_FOOTER_SIZE + VHD_HEADER_SIZE;
	uint64_t end = table_offset + bat_bytes;

	memset(&header, 0, sizeof(header));
	header.data_offset = VHD_NO_OFFSET;
	header.table_offset = table_offset;
	header.header_version = VHD_VERSION;
	header.max_table_entries = entries;
	header.block_size = block_size;
	if (type == VHD_TYPE_DIFFERENCING) {
		loc = calloc(VHD_MAX_LOCATORS, sizeof(*loc));
		if (!loc) {
			ret = img_error_buf(errbuf, errlen, -ENOMEM,
					    "out of memory");
			goto fail;
		}
		nloc = vhd_build_locators(args->path, args->backing_file, loc,
					  header.parent_name);
		if (nloc < 0) {
			ret = img_error_buf(errbuf, errlen, nloc,
					    "backing file name '%s' cannot be "
					    "recorded",
					    args->backing_file);
			goto fail;
		}
		vhd_parent_identity(args->backing, header.parent_uuid,
				    &header.parent_timestamp);
		for (int i = 0; i < nloc; i++) {
			struct vhd_locator *l = &header.locators[i];

			l->platform_code = loc[i].code;
			l->data_length = loc[i].length;
			l->data_space = (uint32_t)round_up(
				MAX(loc[i].length, 1), VHD_SECTOR);
			l->data_offset = end;
			end += l->data_space;
		}
	}

	meta = calloc(1, end + VHD_FOOTER_SIZE);
	if (!meta) {
		ret = img_error_buf(errbuf, errlen, -ENOMEM, "out of memory");
		goto fail;
	}
	vhd_footer_encode(&footer, meta);
	vhd_header_encode(&header, meta + VHD_FOOTER_SIZE);
	memset(meta + table_offset, 0xff, bat_bytes);
	for (int i = 0; i < nloc; i++)
		memcpy(meta + header.locators[i].data_offset, loc[i].data,
		       loc[i].length);
	memcpy(meta + end, meta, VHD_FOOTER_SIZE);
	ret = img_file_pwrite(&file, meta, end + VHD_FOOTER_SIZE, 0);
	if (ret)
		goto fail;
done:
	ret = img_file_sync(&file);
	if (ret)
		goto fail;
	img_file_close(&file);
	free(meta);
	free(loc);
	return 0;
fail:
	if (errbuf && !errbuf[0])
		img_error_buf(errbuf, errlen, ret, "cannot write '%s'",
			      args->path);
	if (img_file_is_open(&file))
		img_file_close(&file);
	if (created)
		unlink(args->path);
	free(meta);
	free(loc);
	return ret;
}

/* ---- resize --------------------------------------------------------------*/

static int vhd_resize_fixed(struct img *img, struct vhd_state *s,
			    uint64_t new_size)
{
	uint64_t old = s->size;
	int ret;

	(void)img;
	if (new_size > old) {
		ret = img_file_truncate(&s->file, new_size + VHD_FOOTER_SIZE);
		if (ret)
			return ret;
	}
	s->size = new_size;
	s->footer.current_size = new_size;
	ret = vhd_write_footers(s);
	if (ret) {
		/* No room for the footer: the old one is still in place. */
		if (new_size > old)
			img_file_truncate(&s->file, old + VHD_FOOTER_SIZE);
		return ret;
	}
	/* The old footer is now inside the data: it must read as zero. */
	if (new_size > old)
		ret = img_file_zero_range(&s->file, old, VHD_FOOTER_SIZE);
	else
		ret = img_file_truncate(&s->file, new_size + VHD_FOOTER_SIZE);
	return ret;
}

/* Move the BAT to the end of the file with room for entries.  It goes
 * after the trailing footer, which stays valid until the new footer is
 * written behind the new BAT; on failure the file is cut back. */
static int vhd_bat_relocate(struct img *img, struct vhd_state *s,
			    uint32_t entries)
{
	uint64_t bytes = vhd_bat_bytes(entries), old = s->header.table_offset;
	uint64_t old_bytes = vhd_bat_bytes(s->header.max_table_entries);
	uint64_t footer = s->alloc_offset, at = footer + VHD_FOOTER_SIZE;
	uint32_t *buf = malloc(bytes);
	int ret;

	if (!buf)
		return img_error(img, -ENOMEM, "out of memory for the BAT");
	for (uint64_t i = 0; i < bytes / 4; i++)
		buf[i] = i < s->entries ? IMG_BE32(s->bat[i]) : VHD_BAT_UNUSED;
	ret = img_file_pwrite(&s->file, buf, bytes, at);
	free(buf);
	if (!ret)
		ret = vhd_write_footer_at(s, at + bytes);
	if (!ret)
		ret = img_file_sync(&s->file);
	if (ret) {
		img_file_truncate(&s->file, footer + VHD_FOOTER_SIZE);
		return ret;
	}
	s->alloc_offset = at + bytes;
	s->header.table_offset = at;
	s->header.max_table_entries = entries;
	ret = vhd_write_header(s);
	if (!ret)
		ret = img_file_sync(&s->file);
	if (ret)
		return ret;
	/* The old BAT and the old footer belong to nothing now. */
	ret = img_file_zero_range(&s->file, footer, VHD_FOOTER_SIZE);
	if (!ret)
		ret = img_file_punch_hole(&s->file, old, old_bytes);
	return ret == -EOPNOTSUPP ? 0 : ret;
}

int vhd_resize(struct img *img, uint64_t new_size, unsigned flags)
{
	struct vhd_state *s = img_state(img);
	uint32_t entries, *bat;
	uint64_t *full;
	struct vhd_geometry g;
	int ret;

	ret = vhd_check_writable(img, s);
	if (ret)
		return ret;
	if (new_size % VHD_SECTOR)
		return img_error(img, -EINVAL,
				 "VHD sizes are whole sectors (512 bytes)");
	if (new_size > VHD_MAX_SIZE)
		return img_error(img, -EFBIG,
				 "VHD images are limited to 2040 GiB");
	if (new_size < s->size && !(flags & IMG_RESIZE_SHRINK))
		return img_error(img, -EINVAL,
				 "shrinking needs the shrink flag (data past "
				 "the new end is lost)");
	g = vhd_geometry_for(new_size / VHD_SECTOR);
	if (!vhd_is_sparse(s)) {
		struct vhd_footer saved = s->footer;
		uint64_t saved_size = s->size;

		s->footer.cylinders = g.cylinders;
		s->footer.heads = g.heads;
		s->footer.sectors_per_track = g.sectors_per_track;
		ret = vhd_resize_fixed(img, s, new_size);
		if (!ret) {
			img_set_size(img, new_size);
		} else {
			s->footer = saved;
			s->size = saved_size;
		}
		return ret;
	}

	ret = vhd_commit_pending(s);
	if (ret)
		return ret;
	entries = (uint32_t)((new_size + s->block_size - 1) / s->block_size);
	/* Shrinking: drop the blocks past the end, zero the tail of the
	 * last one so that growing again shows zeros. */
	for (uint32_t i = entries; i < s->entries; i++)
		if (s->bat[i] != VHD_BAT_UNUSED) {
			ret = vhd_block_deallocate(s, i);
			if (ret)
				return ret;
		}
	if (new_size < s->size && new_size % s->block_size &&
	    s->bat[entries - 1] != VHD_BAT_UNUSED) {
		uint32_t in_blk = (uint32_t)(new_size % s->block_size);

		ret = img_file_zero_range(&s->file,
					  vhd_block_host(s, entries - 1) +
						  s->bitmap_size + in_blk,
					  s->block_size - in_blk);
		if (ret)
			return ret;
	}
	if (entries > s->entries) {
		bat = realloc(s->bat, (size_t)entries * 4);
		if (!bat)
			return img_error(img, -ENOMEM, "out of memory");
		s->bat = bat;
		full = calloc((entries + 63) / 64 + 1, 8);
		if (!full)
			return img_error(img, -ENOMEM, "out of memory");
		memcpy(full, s->full_bits, ((s->entries + 63) / 64 + 1) * 8);
		free(s->full_bits);
		s->full_bits = full;
		for (uint32_t i = s->entries; i < entries; i++)
			s->bat[i] = VHD_BAT_UNUSED;
		if (vhd_bat_bytes(entries) >
		    vhd_bat_bytes(s->header.max_table_entries)) {
			ret = vhd_bat_relocate(img, s, entries);
			if (ret)
				return ret;
		} else {
			/* The padding of the BAT's last sector holds 0xff. */
			s->header.max_table_entries =
				MAX(entries, s->header.max_table_entries);
			s->entries = entries;
			ret = vhd_write_bat_range(s, 0, entries - 1);
			if (ret)
				return ret;
		}
	}
	s->entries = entries;
	if (s->header.max_table_entries < entries)
		s->header.max_table_entries = entries;
	ret = vhd_write_header(s);
	if (ret)
		return ret;
	s->size = new_size;
	s->footer.current_size = new_size;
	s->footer.cylinders = g.cylinders;
	s->footer.heads = g.heads;
	s->footer.sectors_per_track = g.sectors_per_track;
	ret = vhd_write_footers(s);
	if (!ret)
		ret = img_file_sync(&s->file);
	if (!ret)
		img_set_size(img, new_size);
	return ret;
}
