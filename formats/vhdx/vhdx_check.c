/* SPDX-License-Identifier: MIT */
/*
 * VHDX check and repair: the log, BAT entries (state, offsets past the
 * end, blocks overlapping each other or the metadata), and space at the
 * end of the file that nothing references (leaks, left by a crash between
 * a block's data write and its BAT commit).
 *
 * Repairs: a log is replayed by the read-write open itself; an entry with
 * an invalid state or pointing past the end becomes "not present" (its
 * data is not in the file); of two overlapping blocks the later one is
 * copied to new space so both keep what they read now; leaks are trimmed.
 */
#include "vhdx_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vhdx_used {
	uint64_t start, end;
	int64_t index; /* BAT index, or -1 for a region */
};

static int used_cmp(const void *a, const void *b)
{
	const struct vhdx_used *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* Copies the block at BAT index to new space at the end of the file. */
static int vhdx_block_copy(struct vhdx_state *s, uint64_t index, uint64_t span)
{
	uint64_t old = VHDX_BAT_OFFSET(s->bat[index]);
	uint64_t host = s->alloc_offset;
	uint8_t *buf = malloc(VHDX_MiB);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	ret = img_file_truncate(&s->file, host + span);
	for (uint64_t p = 0; p < span && !ret; p += VHDX_MiB) {
		ret = vhdx_read_file(s, buf, VHDX_MiB, old + p);
		if (!ret && !img_buf_is_zero(buf, VHDX_MiB))
			ret = img_file_pwrite(&s->file, buf, VHDX_MiB,
					      host + p);
	}
	free(buf);
	if (ret)
		return ret;
	s->alloc_offset = host + span;
	s->file_size = s->alloc_offset;
	s->bat[index] = VHDX_BAT_ENTRY(VHDX_BAT_STATE(s->bat[index]), host);
	vhdx_bat_mark_dirty(s, index);
	return 0;
}

int vhdx_check(struct img *img, struct img_check_result *res, unsigned fix)
{
	struct vhdx_state *s = img_state(img);
	bool fix_errors = fix & IMG_CHECK_FIX_ERRORS && !s->read_only;
	bool fix_leaks = fix & IMG_CHECK_FIX_LEAKS && !s->read_only;
	struct vhdx_used *used = NULL;
	uint64_t nused = 0, end = 0, copied_end = 0;
	int ret = 0;

	if ((fix_errors || fix_leaks) && !s->read_only) {
		/* Repairs keep the data write GUID: children stay valid. */
		ret = vhdx_session_begin(img, s, false);
		if (ret)
			return ret;
	}
	if (s->log_in_memory) {
		res->corruptions++;
		img_check_note(res,
			       "the log has entries not yet replayed (check "
			       "-r leaks or -r all replays them)");
	} else if (s->log_replayed) {
		img_check_note(res, "the log was replayed");
	}
	used = calloc(s->geo.entries + 4, sizeof(*used));
	if (!used)
		return -ENOMEM;
	used[nused++] = (struct vhdx_used){ 0, VHDX_HEADER_SECTION_SIZE, -1 };
	used[nused++] =
		(struct vhdx_used){ s->header.log_offset,
				    s->header.log_offset + s->header.log_length,
				    -1 };
	used[nused++] = (struct vhdx_used){ s->meta_offset,
					    s->meta_offset + s->meta_length,
					    -1 };
	used[nused++] = (struct vhdx_used){ s->bat_offset,
					    s->bat_offset + s->bat_length, -1 };
	res->total_clusters = s->geo.data_blocks;
	for (uint64_t i = 0; i < s->geo.entries; i++) {
		static const char *const faults[] = {
			[VHDX_BAT_BAD_STATE] = "has an invalid state",
			[VHDX_BAT_IN_HEADER] = "points into the header section",
			[VHDX_BAT_PAST_END] = "points past the end of the file",
		};
		uint64_t e = s->bat[i];
		struct vhdx_bat_view v;
		enum vhdx_bat_fault fault = vhdx_bat_inspect(s, i, e, &v);

		if (fault != VHDX_BAT_SOUND) {
			res->corruptions++;
			img_check_note(res, "BAT entry %llu %s (entry %#llx)",
				       (unsigned long long)i, faults[fault],
				       (unsigned long long)e);
			if (fix_errors) {
				s->bat[i] = 0;
				vhdx_bat_mark_dirty(s, i);
				res->corruptions_fixed++;
			}
			continue;
		}
		if (!v.present)
			continue;
		if (!v.bitmap)
			res->allocated_clusters++;
		used[nused++] =
			(struct vhdx_used){ v.off, v.off + v.span, (int64_t)i };
	}
	qsort(used, nused, sizeof(*used), used_cmp);
	for (uint64_t k = 0; k < nused; k++) {
		if (k && used[k].start < end) {
			/* Overlaps something before it. */
			res->corruptions++;
			if (used[k].index < 0)
				img_check_note(
					res,
					"a region at %llu overlaps a "
					"block",
					(unsigned long long)used[k].start);
			else
				img_check_note(
					res,
					"BAT entry %lld (at %llu) overlaps "
					"another block or region",
					(long long)used[k].index,
					(unsigned long long)used[k].start);
			if (fix_errors && used[k].index >= 0) {
				ret = vhdx_block_copy(
					s, (uint64_t)used[k].index,
					used[k].end - used[k].start);
				if (ret)
					goto out;
				res->corruptions_fixed++;
				copied_end = s->alloc_offset;
				continue;
			}
		}
		end = MAX(end, used[k].end);
	}
	end = MAX(end, copied_end);
	end = MAX(end, VHDX_HEADER_SECTION_SIZE);
	res->image_end_offset = end;
	/* Less than the 1 MiB alignment past the end is not a block (Disk2VHD
	 * leaves 512 bytes there). */
	if (s->file_size / VHDX_ALIGN * VHDX_ALIGN >
	    vhdx_round_up(end, VHDX_ALIGN)) {
		uint64_t bytes = s->file_size - end;

		res->leaks += (bytes + s->block_size - 1) / s->block_size;
		img_check_note(res,
			       "%llu bytes at the end of the file are not "
			       "referenced",
			       (unsigned long long)bytes);
		if (fix_leaks) {
			ret = img_file_truncate(&s->file, end);
			if (ret)
				goto out;
			res->leaks_fixed +=
				(bytes + s->block_size - 1) / s->block_size;
			s->file_size = end;
			s->alloc_offset = vhdx_round_up(end, VHDX_ALIGN);
		}
	}
	if (s->dirty_count) {
		ret = vhdx_commit(img, s);
		if (!ret)
			ret = img_file_sync(&s->file);
	}
out:
	free(used);
	return ret;
}
