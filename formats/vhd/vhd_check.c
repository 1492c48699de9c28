/* SPDX-License-Identifier: MIT */
/* VHD check and repair: footers, header, BAT, overlaps, leaks, bitmaps. */
#include "vhd_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- check ---------------------------------------------------------------*/

struct vhd_region {
	uint64_t start, end;
	uint32_t blk; /* UINT32_MAX: metadata */
};

static int vhd_region_cmp(const void *a, const void *b)
{
	const struct vhd_region *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->blk < y->blk ? -1 : x->blk > y->blk;
}

/* Bytes of [start, end) that hold something: holes and zero sectors do
 * not count (they cost nothing or can be left as they are). */
static uint64_t vhd_leaked_bytes(struct vhd_state *s, uint64_t start,
				 uint64_t end, uint8_t *buf, size_t buf_len)
{
	uint64_t leaked = 0;

	while (start < end) {
		bool is_data = true;
		uint64_t run = end - start;

		if (img_file_extent(&s->file, start, end - start, &is_data,
				    &run) ||
		    !run)
			run = end - start, is_data = true;
		for (uint64_t off = start; is_data && off < start + run;) {
			size_t n = (size_t)MIN(buf_len, start + run - off);

			if (img_file_pread_zero_eof(&s->file, buf, n, off))
				return leaked + (start + run - off);
			for (size_t i = 0; i < n; i += VHD_SECTOR) {
				size_t m = MIN((size_t)VHD_SECTOR, n - i);

				if (!img_buf_is_zero(buf + i, m))
					leaked += m;
			}
			off += n;
		}
		start += run;
	}
	return leaked;
}

static int vhd_check_fixed(struct img *img, struct vhd_state *s,
			   struct img_check_result *res, unsigned fix)
{
	(void)img;
	res->image_end_offset = s->file_size;
	if (!s->footer_checksum_ok) {
		res->corruptions++;
		img_check_note(res, "footer checksum is wrong");
		if ((fix & IMG_CHECK_FIX_ERRORS) &&
		    !vhd_write_footer_at(s, s->size)) {
			res->corruptions_fixed++;
			s->footer_checksum_ok = true;
		}
	}
	if (s->file_size > s->size + VHD_FOOTER_SIZE) {
		res->leaks++;
		img_check_note(res,
			       "%llu bytes between the disk data and the "
			       "footer",
			       (unsigned long long)(s->file_size - s->size -
						    VHD_FOOTER_SIZE));
	}
	return 0;
}

int vhd_check(struct img *img, struct img_check_result *res, unsigned fix)
{
	struct vhd_state *s = img_state(img);
	struct vhd_region *regions = NULL;
	uint64_t span, meta_end, file_end, bat_bytes;
	uint8_t *bitmap = NULL, *scratch = NULL;
	size_t scratch_len = 1u << 20;
	uint32_t nreg = 0, prev_blk = UINT32_MAX;
	bool bat_dirty = false, can_fix = !s->read_only;
	int ret = 0;

	if (!can_fix)
		fix = 0;
	if (!vhd_is_sparse(s))
		return vhd_check_fixed(img, s, res, fix);

	ret = vhd_commit_pending(s);
	if (ret)
		return ret;
	span = vhd_block_span(s);
	bat_bytes = vhd_bat_bytes(MAX(s->entries, s->header.max_table_entries));
	file_end = s->file_size;
	if (img_file_size(&s->file, &file_end))
		file_end = s->file_size;
	regions = calloc((size_t)s->entries + VHD_MAX_LOCATORS + 3,
			 sizeof(*regions));
	bitmap = malloc(s->bitmap_size);
	scratch = malloc(scratch_len);
	if (!regions || !bitmap || !scratch) {
		ret = img_error(img, -ENOMEM, "out of memory");
		goto fail;
	}

	/* Footers.  A crash while a block is appended leaves no footer at
	 * the end, a crash in resize or rebase a stale copy at offset 0:
	 * both are repairable from the other copy, so they count as leaks.
	 * Damaged footers are corruptions. */
	uint64_t footer_leaks = 0, footer_corruptions = 0;

	if (!s->footer_checksum_ok) {
		footer_corruptions++;
		img_check_note(res, "footer checksum is wrong");
	} else if (!s->tail_footer_ok && s->head_footer_ok) {
		footer_leaks++;
		img_check_note(res, "no footer at the end of the file "
				    "(interrupted append); the copy at offset "
				    "0 is good");
	} else if (!s->tail_footer_ok) {
		footer_corruptions++;
		img_check_note(res, "the footer at the end of the file is "
				    "damaged");
	} else if (!s->head_footer_ok) {
		footer_corruptions++;
		img_check_note(res, "the footer copy at offset 0 is damaged");
	} else if (s->head_footer_stale) {
		footer_leaks++;
		img_check_note(res, "the footer copy at offset 0 is older than "
				    "the footer (interrupted update)");
	}
	res->leaks += footer_leaks;
	res->corruptions += footer_corruptions;
	if (!s->header_checksum_ok) {
		res->corruptions++;
		img_check_note(res, "dynamic disk header checksum is wrong");
		if (fix & IMG_CHECK_FIX_ERRORS) {
			ret = vhd_write_header(s);
			if (ret)
				goto fail;
			s->header_checksum_ok = true;
			res->corruptions_fixed++;
		}
	}

	/* Metadata regions. */
	regions[nreg++] = (struct vhd_region){ 0, VHD_FOOTER_SIZE, UINT32_MAX };
	regions[nreg++] =
		(struct vhd_region){ s->footer.data_offset,
				     s->footer.data_offset + VHD_HEADER_SIZE,
				     UINT32_MAX };
	regions[nreg++] =
		(struct vhd_region){ s->header.table_offset,
				     s->header.table_offset + bat_bytes,
				     UINT32_MAX };
	meta_end = VHD_FOOTER_SIZE;
	for (uint32_t i = 0; i < nreg; i++)
		meta_end = MAX(meta_end, regions[i].end);
	for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
		const struct vhd_locator *l = &s->header.locators[i];

		if (!l->platform_code || !l->data_length)
			continue;
		if (l->data_offset + l->data_length > file_end) {
			res->corruptions++;
			img_check_note(res,
				       "parent locator %d points past the end "
				       "of the file",
				       i);
			continue;
		}
		regions[nreg++] = (struct vhd_region){
			l->data_offset,
			round_up(l->data_offset + l->data_length, VHD_SECTOR),
			UINT32_MAX
		};
	}

	/* BAT entries: inside the file, clear of the metadata? */
	uint32_t nmeta = nreg;

	res->total_clusters = s->entries;
	for (uint32_t i = 0; i < s->entries; i++) {
		uint64_t host;
		int hit = -1;

		if (s->bat[i] == VHD_BAT_UNUSED)
			continue;
		host = vhd_block_host(s, i);
		for (uint32_t m = 0; m < nmeta && hit < 0; m++)
			if (host < regions[m].end &&
			    regions[m].start < host + span)
				hit = (int)m;
		if (host < VHD_FOOTER_SIZE || host + span > file_end ||
		    hit >= 0) {
			res->corruptions++;
			img_check_note(res, "BAT entry %u points to %llu, %s",
				       i, (unsigned long long)host,
				       hit >= 0 ? "over the image's metadata"
						: "outside the data area");
			if (fix & IMG_CHECK_FIX_ERRORS) {
				s->bat[i] = VHD_BAT_UNUSED;
				bat_dirty = true;
				res->corruptions_fixed++;
			}
			continue;
		}
		regions[nreg++] = (struct vhd_region){ host, host + span, i };
	}
	qsort(regions, nreg, sizeof(*regions), vhd_region_cmp);

	/* Blocks sharing space: the one further in the file loses. */
	uint64_t covered = 0;
	uint32_t last_region = 0;

	for (uint32_t r = 0; r < nreg; r++) {
		struct vhd_region *cur = &regions[r];

		if (r && cur->start < covered && cur->blk != UINT32_MAX &&
		    regions[last_region].blk != UINT32_MAX) {
			res->corruptions++;
			img_check_note(res,
				       "blocks %u and %u share space at %llu",
				       regions[last_region].blk, cur->blk,
				       (unsigned long long)cur->start);
			if (fix & IMG_CHECK_FIX_ERRORS) {
				s->bat[cur->blk] = VHD_BAT_UNUSED;
				bat_dirty = true;
				res->corruptions_fixed++;
			}
			cur->end = cur->start; /* no longer counts */
			continue;
		}
		if (cur->end > covered) {
			covered = cur->end;
			last_region = r;
		}
	}

	/* Bitmaps and fragmentation. */
	for (uint32_t i = 0; i < s->entries; i++) {
		uint64_t host;

		if (s->bat[i] == VHD_BAT_UNUSED)
			continue;
		host = vhd_block_host(s, i);
		if (host + span > file_end)
			continue;
		res->allocated_clusters++;
		if (prev_blk != UINT32_MAX &&
		    vhd_block_host(s, prev_blk) + span != host)
			res->fragmented_clusters++;
		prev_blk = i;
		if (img_file_pread(&s->file, bitmap, s->bitmap_size, host)) {
			res->check_errors++;
			continue;
		}
		bool set;

		if (s->footer.disk_type == VHD_TYPE_DYNAMIC &&
		    vhd_bitmap_run(bitmap, 0, s->block_sectors, &set) ==
			    s->block_sectors &&
		    !set) {
			/* Reads give zeros whatever the data says. */
			res->leaks++;
			img_check_note(res,
				       "block %u is allocated but its bitmap "
				       "marks no sector",
				       i);
			if (fix & IMG_CHECK_FIX_LEAKS) {
				s->bat[i] = VHD_BAT_UNUSED;
				bat_dirty = true;
				res->leaks_fixed++;
				for (uint32_t r = 0; r < nreg; r++)
					if (regions[r].blk == i)
						regions[r].end =
							regions[r].start;
				img_file_punch_hole(&s->file, host, span);
			}
		}
	}
	if (bat_dirty) {
		/* Data is already on disk; the BAT only loses entries. */
		ret = vhd_write_bat_range(s, 0, s->entries - 1);
		if (ret)
			goto fail;
		memset(s->full_bits, 0, ((s->entries + 63) / 64 + 1) * 8);
	}

	/* Leaks: stored bytes no structure references, between the live
	 * regions (punched out) and after the last one (trimmed). */
	uint64_t pos = 0, data_end = meta_end, tail_end, stored, units;

	for (uint32_t r = 0; r < nreg; r++)
		if (regions[r].end > regions[r].start)
			data_end = MAX(data_end, regions[r].end);
	data_end = round_up(data_end, VHD_SECTOR);
	for (uint32_t r = 0; r < nreg; r++) {
		if (regions[r].end <= regions[r].start)
			continue;
		if (regions[r].start > pos) {
			stored = vhd_leaked_bytes(s, pos, regions[r].start,
						  scratch, scratch_len);
			units = (stored + span - 1) / span;
			if (stored) {
				res->leaks += units;
				img_check_note(res,
					       "%llu bytes at %llu belong to "
					       "nothing",
					       (unsigned long long)stored,
					       (unsigned long long)pos);
			}
			if (stored && (fix & IMG_CHECK_FIX_LEAKS) &&
			    !img_file_zero_range(&s->file, pos,
						 regions[r].start - pos))
				res->leaks_fixed += units;
		}
		pos = MAX(pos, regions[r].end);
	}
	tail_end = s->tail_footer_ok ? file_end - VHD_FOOTER_SIZE : file_end;
	stored = tail_end > data_end ? vhd_leaked_bytes(s, data_end, tail_end,
							scratch, scratch_len)
				     : 0;
	units = (stored + span - 1) / span;
	if (stored) {
		res->leaks += units;
		img_check_note(res,
			       "%llu bytes after the last block belong to "
			       "nothing",
			       (unsigned long long)stored);
	}

	/* Footers: rewrite both copies where they belong. */
	bool trim = tail_end > data_end && (fix & IMG_CHECK_FIX_LEAKS);
	bool fix_footer_leaks = footer_leaks && (fix & IMG_CHECK_FIX_LEAKS);
	bool fix_footer_errors = footer_corruptions &&
				 (fix & IMG_CHECK_FIX_ERRORS);

	if (trim || fix_footer_leaks || fix_footer_errors) {
		uint64_t at =
			trim ? data_end
			     : MAX(data_end, round_up(tail_end, VHD_SECTOR));

		s->alloc_offset = at;
		ret = vhd_write_footers(s);
		if (!ret)
			ret = img_file_truncate(&s->file, at + VHD_FOOTER_SIZE);
		if (ret)
			goto fail;
		if (trim)
			res->leaks_fixed += units;
		/* Both copies are rewritten whatever asked for it. */
		res->leaks_fixed += footer_leaks;
		res->corruptions_fixed += footer_corruptions;
		s->footer_checksum_ok = true;
	}
	ret = img_file_sync(&s->file);
	res->image_end_offset = s->alloc_offset + VHD_FOOTER_SIZE;
	if (ret)
		goto fail;

	/* Advisory: the parent's timestamp (Windows writes 0). */
	struct img *parent = img_backing(img);

	if (parent && s->header.parent_timestamp) {
		struct stat st;

		if (!stat(img_filename(parent), &st) &&
		    vhd_timestamp_from_unix(st.st_mtime) !=
			    s->header.parent_timestamp)
			img_check_note(res,
				       "note: parent %s was modified after "
				       "this differencing disk recorded it",
				       img_filename(parent));
	}
fail:
	free(regions);
	free(bitmap);
	free(scratch);
	return ret;
}
