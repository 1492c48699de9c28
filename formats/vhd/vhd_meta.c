/* SPDX-License-Identifier: MIT */
/*
 * VHD metadata writes: footers, the dynamic header, BAT ranges, and the
 * pending BAT entries and sector bitmaps that wait for a flush (the write
 * ordering is described in vhd.c).
 */
#include "vhd_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- footer and header writes ------------------------------------------ */

/* Aligned for direct I/O: with IMG_OPEN_DIRECT a footer written past the
 * data then needs no page-cache flush when the next block's data (written
 * direct) lands over it. */
int vhd_write_footer_at(struct vhd_state *s, uint64_t off)
{
	uint8_t raw[VHD_FOOTER_SIZE] __attribute__((aligned(4096)));

	vhd_footer_encode(&s->footer, raw);
	return img_file_pwrite(&s->file, raw, sizeof(raw), off);
}

/* Both copies for sparse images: the trailing one first, it is the one
 * readers trust. */
int vhd_write_footers(struct vhd_state *s)
{
	int ret;

	if (!vhd_is_sparse(s))
		return vhd_write_footer_at(s, s->size);
	ret = vhd_write_footer_at(s, s->alloc_offset);
	if (!ret)
		ret = vhd_write_footer_at(s, 0);
	if (!ret)
		s->tail_footer_ok = s->head_footer_ok = true;
	s->head_footer_stale = false;
	return ret;
}

int vhd_write_header(struct vhd_state *s)
{
	uint8_t raw[VHD_HEADER_SIZE];

	vhd_header_encode(&s->header, raw);
	return img_file_pwrite(&s->file, raw, sizeof(raw),
			       s->footer.data_offset);
}

int vhd_write_bat_range(struct vhd_state *s, uint32_t first, uint32_t last)
{
	uint32_t count = last - first + 1;
	uint32_t *buf = malloc((size_t)count * 4);
	int ret;

	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < count; i++)
		buf[i] = IMG_BE32(s->bat[first + i]);
	ret = img_file_pwrite(&s->file, buf, (size_t)count * 4,
			      s->header.table_offset + (uint64_t)first * 4);
	free(buf);
	return ret;
}

/* Put the pending BAT entries on disk, after their data. */
int vhd_commit_pending(struct vhd_state *s)
{
	uint32_t first = UINT32_MAX, last = 0;
	int ret;

	if (!s->npending && !s->ndirty)
		return 0;
	ret = img_file_sync(&s->file);
	if (ret)
		return ret;
	while (s->ndirty) {
		struct vhd_dirty_bitmap *d = &s->dirty[s->ndirty - 1];

		ret = img_file_pwrite(&s->file, d->bits, s->bitmap_size,
				      vhd_block_host(s, d->blk));
		if (ret)
			return ret;
		free(d->bits);
		s->ndirty--;
	}
	if (!s->npending)
		return 0;
	for (int i = 0; i < s->npending; i++) {
		first = MIN(first, s->pending[i]);
		last = MAX(last, s->pending[i]);
	}
	ret = vhd_write_bat_range(s, first, last);
	if (!ret)
		s->npending = 0;
	return ret;
}

struct vhd_dirty_bitmap *vhd_dirty_find(struct vhd_state *s, uint32_t blk)
{
	for (int i = 0; i < s->ndirty; i++)
		if (s->dirty[i].blk == blk)
			return &s->dirty[i];
	return NULL;
}

void vhd_dirty_drop(struct vhd_state *s, uint32_t blk)
{
	struct vhd_dirty_bitmap *d = vhd_dirty_find(s, blk);

	if (d) {
		free(d->bits);
		*d = s->dirty[--s->ndirty];
	}
}

bool vhd_is_pending(const struct vhd_state *s, uint32_t blk)
{
	for (int i = 0; i < s->npending; i++)
		if (s->pending[i] == blk)
			return true;
	return false;
}

void vhd_drop_pending(struct vhd_state *s, uint32_t blk)
{
	for (int i = 0; i < s->npending; i++)
		if (s->pending[i] == blk) {
			s->pending[i] = s->pending[--s->npending];
			return;
		}
}
