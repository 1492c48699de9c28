/* SPDX-License-Identifier: MIT */
/*
 * VHD (Microsoft Virtual PC / Hyper-V / Azure) driver: fixed, dynamic and
 * differencing images.  Also known as "vpc" (qemu's name).
 *
 * Sizes: the footer's current_size is the disk size (as Hyper-V, Azure,
 * VirtualBox and the spec have it).  Virtual PC sized disks by their CHS
 * geometry instead; that size is reported as "chs_size" in the info.
 *
 * Write ordering (dynamic and differencing images).  The rule: metadata on
 * disk never points at data that might not be on disk.
 *  1. A new block goes where the trailing footer was: its bitmap and data
 *     are written, then the footer is written again after the block.  A
 *     crash here leaves an unreferenced block (a leak check can trim) and,
 *     at worst, no footer at the end (check rewrites it from the copy at
 *     offset 0).
 *  2. The block's BAT entry is only updated in memory and the block is
 *     "pending".  Pending entries reach the disk at the next flush (or
 *     when VHD_MAX_PENDING blocks are pending): fdatasync first, then the
 *     BAT entries, then fdatasync again (flush only).  Writes that were not
 *     flushed may be lost with a crash; flushed ones never.
 *  3. Writes into blocks whose BAT entry is on disk go in place.  When they
 *     set sector bitmap bits (differencing images, or foreign images with
 *     partial bitmaps), the new bitmap stays in memory and is written at
 *     the next flush, after the fdatasync of step 2, so a bit never claims
 *     a sector whose data may be missing.
 *  4. Deallocation (discard, write_zeroes with MAY_UNMAP) clears the BAT
 *     entry on disk first and then punches the block out of the file.
 */
#include "vhd_ondisk.h"

#include "driver.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

static uint64_t round_up(uint64_t v, uint64_t align)
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
	uint32_t *bat;	      /* host order, entries long */
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
	uint8_t *write_bitmap; /* scratch for writes (they are serialised) */
	uint8_t *gap_sink; /* coalesced reads drop bitmaps between blocks here */
	char backing_name[4096]; /* the parent as recorded, for info */
};

static bool vhd_is_sparse(const struct vhd_state *s)
{
	return s->footer.disk_type != VHD_TYPE_FIXED;
}

static bool vhd_block_full(const struct vhd_state *s, uint32_t blk)
{
	return __atomic_load_n(&s->full_bits[blk / 64], __ATOMIC_RELAXED) &
	       (1ull << (blk % 64));
}

static void vhd_block_set_full(struct vhd_state *s, uint32_t blk, bool full)
{
	uint64_t bit = 1ull << (blk % 64);

	if (full)
		__atomic_fetch_or(&s->full_bits[blk / 64], bit,
				  __ATOMIC_RELAXED);
	else
		__atomic_fetch_and(&s->full_bits[blk / 64], ~bit,
				   __ATOMIC_RELAXED);
}

static uint64_t vhd_block_host(const struct vhd_state *s, uint32_t blk)
{
	return (uint64_t)s->bat[blk] * VHD_SECTOR;
}

static uint64_t vhd_block_span(const struct vhd_state *s)
{
	return (uint64_t)s->bitmap_size + s->block_size;
}

static uint32_t vhd_bitmap_size_for(uint32_t block_size)
{
	return (uint32_t)round_up(block_size / VHD_SECTOR / 8, VHD_SECTOR);
}

static uint64_t vhd_bat_bytes(uint32_t entries)
{
	return round_up((uint64_t)entries * 4, VHD_SECTOR);
}

/* ---- footer and header writes ------------------------------------------ */

/* Aligned for direct I/O: with IMG_OPEN_DIRECT a footer written past the
 * data then needs no page-cache flush when the next block's data (written
 * direct) lands over it. */
static int vhd_write_footer_at(struct vhd_state *s, uint64_t off)
{
	uint8_t raw[VHD_FOOTER_SIZE] __attribute__((aligned(4096)));

	vhd_footer_encode(&s->footer, raw);
	return img_file_pwrite(&s->file, raw, sizeof(raw), off);
}

/* Both copies for sparse images: the trailing one first, it is the one
 * readers trust. */
static int vhd_write_footers(struct vhd_state *s)
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

static int vhd_write_header(struct vhd_state *s)
{
	uint8_t raw[VHD_HEADER_SIZE];

	vhd_header_encode(&s->header, raw);
	return img_file_pwrite(&s->file, raw, sizeof(raw),
			       s->footer.data_offset);
}

static int vhd_write_bat_range(struct vhd_state *s, uint32_t first,
			       uint32_t last)
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
static int vhd_commit_pending(struct vhd_state *s)
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

static struct vhd_dirty_bitmap *vhd_dirty_find(struct vhd_state *s,
					       uint32_t blk)
{
	for (int i = 0; i < s->ndirty; i++)
		if (s->dirty[i].blk == blk)
			return &s->dirty[i];
	return NULL;
}

static void vhd_dirty_drop(struct vhd_state *s, uint32_t blk)
{
	struct vhd_dirty_bitmap *d = vhd_dirty_find(s, blk);

	if (d) {
		free(d->bits);
		*d = s->dirty[--s->ndirty];
	}
}

static bool vhd_is_pending(const struct vhd_state *s, uint32_t blk)
{
	for (int i = 0; i < s->npending; i++)
		if (s->pending[i] == blk)
			return true;
	return false;
}

static void vhd_drop_pending(struct vhd_state *s, uint32_t blk)
{
	for (int i = 0; i < s->npending; i++)
		if (s->pending[i] == blk) {
			s->pending[i] = s->pending[--s->npending];
			return;
		}
}

/* ---- probe ---------------------------------------------------------------*/

static int vhd_probe(const uint8_t *head, size_t head_len, uint64_t file_size,
		     struct img_file *f)
{
	uint8_t raw[VHD_FOOTER_SIZE];
	struct vhd_footer footer;
	bool ok;

	if (head_len >= 8 && !memcmp(head, VHD_FOOTER_COOKIE, 8))
		return 100;
	/* Fixed images are raw data with a footer at the end. */
	if (!f || file_size < VHD_FOOTER_SIZE ||
	    img_file_pread(f, raw, sizeof(raw), file_size - VHD_FOOTER_SIZE))
		return 0;
	if (!vhd_footer_decode(raw, &footer, &ok))
		return 0;
	if (footer.disk_type != VHD_TYPE_FIXED)
		return 50;
	return ok ? 100 : 60;
}

/* ---- parent locators -----------------------------------------------------*/

struct vhd_candidates {
	int n;
	char path[VHD_MAX_CANDIDATES][PATH_MAX];
};

static void vhd_candidate_add(struct vhd_candidates *c, const char *path)
{
	if (!path[0] || c->n == VHD_MAX_CANDIDATES)
		return;
	for (int i = 0; i < c->n; i++)
		if (!strcmp(c->path[i], path))
			return;
	snprintf(c->path[c->n++], PATH_MAX, "%s", path);
}

static const char *vhd_basename(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* The locator's data as a host path; 0 and an empty string when the
 * platform code is not one we read. */
static int vhd_locator_read(struct img *img, struct vhd_state *s,
			    const struct vhd_locator *l, char *out,
			    size_t out_max, bool *usable)
{
	uint8_t *data = NULL;
	char text[PATH_MAX];
	int ret = 0;

	out[0] = '\0';
	*usable = false;
	switch (l->platform_code) {
	case VHD_PLATFORM_W2RU:
	case VHD_PLATFORM_W2KU:
	case VHD_PLATFORM_WI2R:
	case VHD_PLATFORM_WI2K:
	case VHD_PLATFORM_MACX:
		break;
	default:
		return 0;
	}
	if (!l->data_length)
		return 0;
	if (l->data_length > VHD_MAX_LOCATOR_DATA ||
	    l->data_offset > s->file_size ||
	    l->data_length > s->file_size - l->data_offset)
		return img_error(img, -EINVAL,
				 "parent locator data (%u bytes at %llu) lies "
				 "outside the file",
				 l->data_length,
				 (unsigned long long)l->data_offset);
	data = malloc(l->data_length + 1);
	if (!data)
		return img_error(img, -ENOMEM, "out of memory");
	ret = img_file_pread(&s->file, data, l->data_length, l->data_offset);
	if (ret)
		goto fail;
	data[l->data_length] = '\0';
	switch (l->platform_code) {
	case VHD_PLATFORM_W2RU:
	case VHD_PLATFORM_W2KU:
		ret = vhd_utf16_to_utf8(data, l->data_length, false, text,
					sizeof(text));
		break;
	case VHD_PLATFORM_MACX:
		ret = vhd_url_to_path((char *)data, out, out_max);
		*usable = !ret && out[0];
		ret = 0; /* a bad URL is just not a candidate */
		goto fail;
	default:
		snprintf(text, sizeof(text), "%s", (char *)data);
		break;
	}
	if (ret) {
		ret = 0; /* undecodable: not a candidate, not fatal */
		goto fail;
	}
	*usable = vhd_windows_path_to_host(text, out, out_max);
fail:
	free(data);
	return ret;
}

static int vhd_declare_parent(struct img *img, struct vhd_state *s)
{
	static const uint32_t order[] = {
		VHD_PLATFORM_W2RU, VHD_PLATFORM_WI2R, VHD_PLATFORM_MACX,
		VHD_PLATFORM_W2KU, VHD_PLATFORM_WI2K,
	};
	struct vhd_candidates *c = calloc(1, sizeof(*c));
	char *names = NULL, path[PATH_MAX];
	int nnames = 0, ret = 0;

	names = calloc(VHD_MAX_LOCATORS + 1, PATH_MAX);
	if (!c || !names) {
		ret = img_error(img, -ENOMEM, "out of memory");
		goto fail;
	}
	/* Locators, relative ones first; remember every basename. */
	for (size_t o = 0; o < sizeof(order) / sizeof(order[0]); o++) {
		for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
			const struct vhd_locator *l = &s->header.locators[i];
			bool usable;

			if (l->platform_code != order[o])
				continue;
			ret = vhd_locator_read(img, s, l, path, sizeof(path),
					       &usable);
			if (ret)
				goto fail;
			if (usable)
				vhd_candidate_add(c, path);
			if (path[0])
				snprintf(names + (size_t)nnames++ * PATH_MAX,
					 PATH_MAX, "%s", vhd_basename(path));
			if (!s->backing_name[0] && usable)
				snprintf(s->backing_name,
					 sizeof(s->backing_name), "%s", path);
		}
	}
	/* The parent's unicode name: a bare name, or a full Windows path. */
	if (!vhd_utf16_to_utf8(s->header.parent_name,
			       sizeof(s->header.parent_name), true, path,
			       sizeof(path)) &&
	    path[0]) {
		char host[PATH_MAX];
		bool usable =
			vhd_windows_path_to_host(path, host, sizeof(host));

		if (usable)
			vhd_candidate_add(c, host);
		if (host[0])
			snprintf(names + (size_t)nnames++ * PATH_MAX, PATH_MAX,
				 "%s", vhd_basename(host));
		if (!s->backing_name[0])
			snprintf(s->backing_name, sizeof(s->backing_name), "%s",
				 usable ? host : path);
	}
	/* Then the bare names, next to the child. */
	for (int i = 0; i < nnames; i++)
		vhd_candidate_add(c, names + (size_t)i * PATH_MAX);

	for (int i = 0; i < c->n; i++) {
		ret = img_add_backing_candidate(img, c->path[i], NULL);
		if (ret)
			goto fail;
	}
	/* Last resort: a VHD with the recorded UUID next to the child or in
	 * the search directories. */
	if (memcmp(s->header.parent_uuid, (uint8_t[16]){ 0 }, 16))
		img_set_backing_by_identity(img, "vhd");
fail:
	free(names);
	free(c);
	return ret;
}

/* ---- open ----------------------------------------------------------------*/

static void vhd_free(struct vhd_state *s)
{
	while (s->ndirty)
		free(s->dirty[--s->ndirty].bits);
	free(s->bat);
	free(s->full_bits);
	free(s->bitmap_ones);
	free(s->write_bitmap);
	free(s->gap_sink);
	s->bat = NULL;
	s->full_bits = NULL;
	s->bitmap_ones = s->write_bitmap = s->gap_sink = NULL;
	if (s->file_open)
		img_file_close(&s->file);
	s->file_open = false;
}

/* Locate and decode the footer: the trailing one, else (dynamic) the copy
 * at offset 0. */
static int vhd_open_footer(struct img *img, struct vhd_state *s, unsigned flags)
{
	uint8_t head[VHD_FOOTER_SIZE], tail[VHD_FOOTER_SIZE];
	struct vhd_footer head_footer, tail_footer;
	bool head_found, tail_found, head_ok = false, tail_ok = false;
	int ret;

	ret = img_file_pread(&s->file, head, sizeof(head), 0);
	if (ret)
		return ret;
	ret = img_file_pread(&s->file, tail, sizeof(tail),
			     s->file_size - VHD_FOOTER_SIZE);
	if (ret)
		return ret;
	head_found = vhd_footer_decode(head, &head_footer, &head_ok);
	tail_found = vhd_footer_decode(tail, &tail_footer, &tail_ok);
	if (!head_found && !tail_found)
		return img_error(
			img, -EINVAL,
			"not a VHD: no footer (cookie \"conectix\") at "
			"the start or the end of the file");
	if (tail_found && (tail_ok || !head_found || !head_ok)) {
		s->footer = tail_footer;
		s->footer_checksum_ok = tail_ok;
	} else {
		s->footer = head_footer;
		s->footer_checksum_ok = head_ok;
	}
	s->tail_footer_ok = tail_found && tail_ok &&
			    tail_footer.disk_type == s->footer.disk_type;
	s->head_footer_ok = head_found && head_ok;
	s->head_footer_stale = s->head_footer_ok && s->tail_footer_ok &&
			       memcmp(head, tail, sizeof(head));

	if (!s->footer_checksum_ok) {
		uint32_t want = vhd_checksum(
			tail_found ? tail : head, VHD_FOOTER_SIZE,
			offsetof(struct vhd_footer_disk, checksum));

		if (!(flags & (IMG_OPEN_FORCE | IMG_OPEN_CHECK)))
			return img_error(
				img, -EINVAL,
				"footer checksum is 0x%08x but the footer "
				"sums to 0x%08x (damaged image; open with "
				"force to read it anyway)",
				s->footer.checksum, want);
		if (!(flags & IMG_OPEN_CHECK))
			s->read_only = true;
	}
	if ((s->footer.version >> 16) != 1)
		return img_error(img, -ENOTSUP, "unsupported VHD version %u.%u",
				 s->footer.version >> 16,
				 s->footer.version & 0xffff);
	if (s->footer.disk_type != VHD_TYPE_FIXED &&
	    s->footer.disk_type != VHD_TYPE_DYNAMIC &&
	    s->footer.disk_type != VHD_TYPE_DIFFERENCING)
		return img_error(img, -EINVAL, "unknown VHD disk type %u",
				 s->footer.disk_type);
	if (s->footer.disk_type == VHD_TYPE_FIXED && !tail_found)
		return img_error(img, -EINVAL,
				 "fixed VHD without a footer at the end of "
				 "the file (truncated?)");
	return 0;
}

static int vhd_u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Two BAT entries sharing space would let a write to one block change
 * another: writable opens refuse that (check repairs it). */
static int vhd_open_overlaps(struct img *img, struct vhd_state *s)
{
	uint64_t span_sectors = vhd_block_span(s) / VHD_SECTOR;
	uint32_t *sorted, n = 0;
	int ret = 0;

	sorted = malloc(MAX((size_t)s->entries, 1) * 4);
	if (!sorted)
		return img_error(img, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < s->entries; i++)
		if (s->bat[i] != VHD_BAT_UNUSED)
			sorted[n++] = s->bat[i];
	qsort(sorted, n, 4, vhd_u32_cmp);
	for (uint32_t i = 1; i < n && !ret; i++)
		if (sorted[i] < sorted[i - 1] + span_sectors)
			ret = img_error(img, -EINVAL,
					"two BAT entries share the block at "
					"%llu (run imgtool check)",
					(unsigned long long)sorted[i] *
						VHD_SECTOR);
	free(sorted);
	return ret;
}

static int vhd_open_bat(struct img *img, struct vhd_state *s, unsigned flags)
{
	uint64_t bat_bytes = (uint64_t)s->entries * 4;
	uint64_t meta_end, span = vhd_block_span(s);
	uint32_t *raw;
	int ret;

	if (s->header.table_offset > s->file_size ||
	    bat_bytes > s->file_size - s->header.table_offset)
		return img_error(img, -EINVAL,
				 "block allocation table (%llu bytes at %llu) "
				 "lies past the end of the file (%llu bytes)",
				 (unsigned long long)bat_bytes,
				 (unsigned long long)s->header.table_offset,
				 (unsigned long long)s->file_size);
	s->bat = malloc(MAX(bat_bytes, 4));
	s->full_bits = calloc((s->entries + 63) / 64 + 1, 8);
	if (!s->bat || !s->full_bits)
		return img_error(img, -ENOMEM, "out of memory for the BAT");
	raw = s->bat;
	ret = img_file_pread(&s->file, raw, bat_bytes, s->header.table_offset);
	if (ret)
		return ret;
	meta_end = MAX(s->footer.data_offset + VHD_HEADER_SIZE,
		       s->header.table_offset + bat_bytes);
	s->alloc_offset = round_up(meta_end, VHD_SECTOR);
	for (uint32_t i = 0; i < s->entries; i++) {
		uint64_t host;

		s->bat[i] = IMG_BE32(raw[i]);
		if (s->bat[i] == VHD_BAT_UNUSED)
			continue;
		host = (uint64_t)s->bat[i] * VHD_SECTOR;
		/* A block over the header or the BAT would be written over
		 * them: refuse such images outside check. */
		if (!(flags & IMG_OPEN_CHECK) &&
		    (host < VHD_FOOTER_SIZE ||
		     (host < s->footer.data_offset + VHD_HEADER_SIZE &&
		      s->footer.data_offset < host + span) ||
		     (host < s->header.table_offset + bat_bytes &&
		      s->header.table_offset < host + span)))
			return img_error(img, -EINVAL,
					 "BAT entry %u points into the image's "
					 "metadata (block at %llu)",
					 i, (unsigned long long)host);
		if (host + span > s->file_size) {
			if (flags & IMG_OPEN_CHECK)
				continue;
			return img_error(img, -EINVAL,
					 "BAT entry %u points past the end of "
					 "the file (block at %llu, file is "
					 "%llu bytes)",
					 i, (unsigned long long)host,
					 (unsigned long long)s->file_size);
		}
		s->alloc_offset = MAX(s->alloc_offset, host + span);
	}
	if ((flags & IMG_OPEN_RDWR) && !(flags & IMG_OPEN_CHECK)) {
		ret = vhd_open_overlaps(img, s);
		if (ret)
			return ret;
	}
	for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
		const struct vhd_locator *l = &s->header.locators[i];

		if (l->platform_code && l->data_length &&
		    l->data_offset < s->file_size)
			s->alloc_offset = MAX(
				s->alloc_offset,
				round_up(MIN(l->data_offset + l->data_length,
					     s->file_size),
					 VHD_SECTOR));
	}
	/* The next block replaces the trailing footer; without one (a crash
	 * tore it), it goes after whatever the file holds. */
	if (s->tail_footer_ok &&
	    s->file_size - VHD_FOOTER_SIZE >= s->alloc_offset)
		s->alloc_offset = s->file_size - VHD_FOOTER_SIZE;
	else
		s->alloc_offset = round_up(MAX(s->alloc_offset, s->file_size),
					   VHD_SECTOR);
	return 0;
}

static int vhd_open_sparse(struct img *img, struct vhd_state *s, unsigned flags)
{
	uint8_t raw[VHD_HEADER_SIZE];
	uint64_t needed;
	int ret;

	if (s->footer.data_offset > s->file_size ||
	    s->file_size - s->footer.data_offset < VHD_HEADER_SIZE)
		return img_error(img, -EINVAL,
				 "dynamic disk header offset %llu lies past "
				 "the end of the file",
				 (unsigned long long)s->footer.data_offset);
	ret = img_file_pread(&s->file, raw, sizeof(raw), s->footer.data_offset);
	if (ret)
		return ret;
	if (!vhd_header_decode(raw, &s->header, &s->header_checksum_ok))
		return img_error(img, -EINVAL,
				 "no dynamic disk header (cookie \"cxsparse\") "
				 "at offset %llu",
				 (unsigned long long)s->footer.data_offset);
	if (!s->header_checksum_ok) {
		if (!(flags & (IMG_OPEN_FORCE | IMG_OPEN_CHECK)))
			return img_error(
				img, -EINVAL,
				"dynamic disk header checksum is wrong "
				"(damaged image; open with force to read it "
				"anyway)");
		if (!(flags & IMG_OPEN_CHECK))
			s->read_only = true;
	}
	if ((s->header.header_version >> 16) != 1)
		return img_error(img, -ENOTSUP,
				 "unsupported dynamic header version 0x%08x",
				 s->header.header_version);
	s->block_size = s->header.block_size;
	if (s->block_size < VHD_SECTOR || s->block_size % VHD_SECTOR ||
	    s->block_size > VHD_MAX_BLOCK_SIZE)
		return img_error(img, -EINVAL, "invalid block size %u",
				 s->block_size);
	s->block_sectors = s->block_size / VHD_SECTOR;
	s->bitmap_size = vhd_bitmap_size_for(s->block_size);
	needed = (s->size + s->block_size - 1) / s->block_size;
	if (needed > s->header.max_table_entries)
		return img_error(img, -EINVAL,
				 "the disk needs %llu blocks but the BAT has "
				 "only %u entries",
				 (unsigned long long)needed,
				 s->header.max_table_entries);
	s->entries = (uint32_t)needed;
	/* page-aligned: they go out with the data (direct I/O) */
	if (posix_memalign((void **)&s->bitmap_ones, 4096, s->bitmap_size))
		s->bitmap_ones = NULL;
	if (posix_memalign((void **)&s->write_bitmap, 4096, s->bitmap_size))
		s->write_bitmap = NULL;
	s->gap_sink = malloc(s->bitmap_size);
	if (!s->bitmap_ones || !s->write_bitmap || !s->gap_sink)
		return img_error(img, -ENOMEM, "out of memory");
	memset(s->bitmap_ones, 0xff, s->bitmap_size);
	return vhd_open_bat(img, s, flags);
}

static int vhd_open(struct img *img)
{
	struct vhd_state *s = img_state(img);
	unsigned flags = img_open_flags(img);
	bool writable = flags & IMG_OPEN_RDWR;
	int ret;

	ret = img_file_open(img, &s->file, img_filename(img), writable);
	if (ret)
		return ret;
	s->file_open = true;
	s->read_only = !writable;
	ret = img_file_size(&s->file, &s->file_size);
	if (ret)
		goto fail;
	if (s->file_size < VHD_FOOTER_SIZE) {
		ret = img_error(img, -EINVAL,
				"file too small for a VHD (%llu bytes)",
				(unsigned long long)s->file_size);
		goto fail;
	}
	ret = vhd_open_footer(img, s, flags);
	if (ret)
		goto fail;

	s->size = s->footer.current_size;
	if (!s->size && s->footer.cylinders)
		s->size = vhd_geometry_sectors((struct vhd_geometry){
				  s->footer.cylinders, s->footer.heads,
				  s->footer.sectors_per_track }) *
			  VHD_SECTOR;
	s->size -= s->size % VHD_SECTOR;

	if (s->footer.disk_type == VHD_TYPE_FIXED) {
		if (s->size > s->file_size - VHD_FOOTER_SIZE) {
			ret = img_error(img, -EINVAL,
					"fixed VHD of %llu bytes but the file "
					"holds only %llu bytes of data "
					"(truncated?)",
					(unsigned long long)s->size,
					(unsigned long long)(s->file_size -
							     VHD_FOOTER_SIZE));
			goto fail;
		}
		/* data at fixed places, no metadata on the write path */
		img_set_parallel_rw(img, true);
	} else {
		ret = vhd_open_sparse(img, s, flags);
		if (ret)
			goto fail;
		if (s->footer.disk_type == VHD_TYPE_DIFFERENCING) {
			ret = vhd_declare_parent(img, s);
			if (ret)
				goto fail;
		}
	}
	img_set_size(img, s->size);
	return 0;
fail:
	vhd_free(s);
	return ret;
}

static int vhd_flush(struct img *img);

static void vhd_close(struct img *img)
{
	vhd_free(img_state(img));
}

/* ---- reads ---------------------------------------------------------------*/

/* Host reads gathered into one preadv: consecutive pieces of the file,
 * with the bitmaps between adjacent blocks read into a sink. */
struct vhd_run {
	uint64_t start, end;
	int n;
	struct iovec iov[VHD_RUN_IOV];
};

static int vhd_run_flush(struct vhd_state *s, struct vhd_run *r)
{
	int ret = 0;

	if (r->n)
		ret = img_file_preadv(&s->file, r->iov, r->n, r->start);
	r->n = 0;
	return ret;
}

static int vhd_run_add(struct vhd_state *s, struct vhd_run *r, uint64_t host,
		       const struct iovec *iov, int iovcnt, size_t iov_off,
		       size_t len)
{
	int ret, cnt;

	while (len) {
		if (r->n && host != r->end) {
			if (host > r->end && host - r->end <= s->bitmap_size &&
			    r->n < VHD_RUN_IOV - 1) {
				r->iov[r->n].iov_base = s->gap_sink;
				r->iov[r->n++].iov_len = host - r->end;
				r->end = host;
			} else {
				ret = vhd_run_flush(s, r);
				if (ret)
					return ret;
			}
		}
		if (!r->n)
			r->start = r->end = host;
		cnt = img_iov_slice(iov, iovcnt, iov_off, len, r->iov + r->n,
				    VHD_RUN_IOV - r->n);
		if (cnt >= 0) {
			r->n += cnt;
			r->end += len;
			return 0;
		}
		if (r->n) {
			ret = vhd_run_flush(s, r);
			if (ret)
				return ret;
			continue;
		}
		/* Too fragmented for one call: halve it. */
		size_t part = len / 2 / VHD_SECTOR * VHD_SECTOR;

		if (!part)
			part = len / 2;
		ret = vhd_run_add(s, r, host, iov, iovcnt, iov_off, part);
		if (ret)
			return ret;
		host += part;
		iov_off += part;
		len -= part;
	}
	return 0;
}

static int vhd_read_backing(struct img *img, uint64_t off,
			    const struct iovec *iov, int iovcnt, size_t iov_off,
			    size_t len)
{
	struct img_iov_view v;
	int ret = img_iov_view(&v, iov, iovcnt, iov_off, len);

	if (ret < 0)
		return ret;
	ret = img_read_backing(img, off, v.iov, v.cnt, len);
	img_iov_view_release(&v);
	return ret;
}

/* Read block blk's bitmap; remembers when it is all ones. */
/* Block blk's bitmap as it stands (a dirty one is newer than the disk's);
 * remembers when it is all ones.  Readers may run this in parallel: the
 * dirty list only changes under the core's write lock. */
static int vhd_bitmap_load(struct vhd_state *s, uint32_t blk, uint8_t *bitmap)
{
	struct vhd_dirty_bitmap *d = vhd_dirty_find(s, blk);
	int ret = 0;

	if (d)
		memcpy(bitmap, d->bits, s->bitmap_size);
	else
		ret = img_file_pread(&s->file, bitmap, s->bitmap_size,
				     vhd_block_host(s, blk));
	if (!ret && vhd_bitmap_all_set(bitmap, 0, s->block_sectors))
		vhd_block_set_full(s, blk, true);
	return ret;
}

static int vhd_preadv(struct img *img, uint64_t off, const struct iovec *iov,
		      int iovcnt, size_t len)
{
	struct vhd_state *s = img_state(img);
	struct vhd_run *run;
	uint8_t *bitmap = NULL;
	size_t done = 0;
	int ret = 0;

	if (!vhd_is_sparse(s))
		return img_file_preadv(&s->file, iov, iovcnt, off);
	run = malloc(sizeof(*run));
	if (!run)
		return -ENOMEM;
	run->n = 0;
	while (done < len) {
		uint64_t pos = off + done;
		uint32_t blk = (uint32_t)(pos / s->block_size);
		uint32_t in_blk = (uint32_t)(pos % s->block_size);
		size_t n = MIN(len - done, (size_t)(s->block_size - in_blk));
		uint64_t data;

		if (s->bat[blk] == VHD_BAT_UNUSED) {
			ret = vhd_read_backing(img, pos, iov, iovcnt, done, n);
			if (ret)
				goto fail;
			done += n;
			continue;
		}
		data = vhd_block_host(s, blk) + s->bitmap_size;
		if (!vhd_block_full(s, blk)) {
			if (!bitmap && !(bitmap = malloc(s->bitmap_size))) {
				ret = -ENOMEM;
				goto fail;
			}
			ret = vhd_bitmap_load(s, blk, bitmap);
			if (ret)
				goto fail;
		}
		if (vhd_block_full(s, blk)) {
			ret = vhd_run_add(s, run, data + in_blk, iov, iovcnt,
					  done, n);
			if (ret)
				goto fail;
			done += n;
			continue;
		}
		/* Per sector: set bits are here, clear ones fall through. */
		for (uint32_t sec = in_blk / VHD_SECTOR,
			      end = (uint32_t)((in_blk + n) / VHD_SECTOR);
		     sec < end;) {
			bool set;
			uint32_t cnt =
				vhd_bitmap_run(bitmap, sec, end - sec, &set);
			size_t bytes = (size_t)cnt * VHD_SECTOR;
			uint64_t at = (uint64_t)blk * s->block_size +
				      (uint64_t)sec * VHD_SECTOR;

			if (set)
				ret = vhd_run_add(s, run,
						  data + (uint64_t)sec *
								  VHD_SECTOR,
						  iov, iovcnt, done, bytes);
			else
				ret = vhd_read_backing(img, at, iov, iovcnt,
						       done, bytes);
			if (ret)
				goto fail;
			done += bytes;
			sec += cnt;
		}
	}
	ret = vhd_run_flush(s, run);
fail:
	free(bitmap);
	free(run);
	return ret;
}

/* ---- writes --------------------------------------------------------------*/

static int vhd_check_writable(struct img *img, struct vhd_state *s)
{
	if (s->read_only)
		return img_error(img, -EROFS, "image is open read-only");
	return 0;
}

/* Append a block for blk at the trailing footer's place.  The data (if
 * any) covers sectors [first, first + count) of the block; the rest of the
 * block reads as zero (new file space).  The footer moves behind it. */
static int vhd_write_slice(struct vhd_state *s, uint64_t host, const void *head,
			   size_t head_len, const struct iovec *iov, int iovcnt,
			   size_t iov_off, size_t len);

static int vhd_block_allocate(struct img *img, struct vhd_state *s,
			      uint32_t blk, uint32_t first, uint32_t count,
			      const struct iovec *iov, int iovcnt,
			      size_t iov_off)
{
	uint64_t host = s->alloc_offset;
	uint64_t end = host + vhd_block_span(s);
	const uint8_t *bitmap = s->bitmap_ones;
	bool differencing = s->footer.disk_type == VHD_TYPE_DIFFERENCING;
	int ret;

	if (host / VHD_SECTOR >= VHD_BAT_UNUSED)
		return img_error(img, -EFBIG,
				 "the image file would grow past the 2 TiB "
				 "a VHD can address");
	if (differencing) {
		memset(s->write_bitmap, 0, s->bitmap_size);
		vhd_bitmap_set(s->write_bitmap, first, count);
		bitmap = s->write_bitmap;
	}
	if (iov && first == 0) {
		/* Data from the block's first sector on goes out in one write
		 * with the bitmap before it: one direct write, where the
		 * image is open so, instead of a cached bitmap that the
		 * direct data write would first have to flush. */
		ret = vhd_write_slice(s, host, bitmap, s->bitmap_size, iov,
				      iovcnt, iov_off,
				      (size_t)count * VHD_SECTOR);
	} else {
		ret = img_file_pwrite(&s->file, bitmap, s->bitmap_size, host);
		if (!ret && iov)
			ret = vhd_write_slice(s,
					      host + s->bitmap_size +
						      (uint64_t)first *
							      VHD_SECTOR,
					      NULL, 0, iov, iovcnt, iov_off,
					      (size_t)count * VHD_SECTOR);
	}
	if (ret)
		goto fail;
	ret = vhd_write_footer_at(s, end);
	if (ret)
		goto fail;
	s->tail_footer_ok = true;
	s->alloc_offset = end;
	s->bat[blk] = (uint32_t)(host / VHD_SECTOR);
	vhd_block_set_full(s, blk,
			   !differencing ||
				   vhd_bitmap_all_set(bitmap, 0,
						      s->block_sectors));
	s->pending[s->npending++] = blk;
	if (s->npending == VHD_MAX_PENDING)
		return vhd_commit_pending(s);
	return 0;
fail:
	/* Out of space or an I/O error: put the footer back where it was
	 * (that space is already allocated), so the image stays whole. */
	if (!vhd_write_footer_at(s, host))
		img_file_truncate(&s->file, host + VHD_FOOTER_SIZE);
	return ret;
}

/* Mark sectors [first, first + count) of an allocated block as present.
 * Blocks not yet referenced on disk get their bitmap written at once;
 * committed blocks keep the new bitmap in memory until the next flush,
 * which writes it after an fdatasync of the data. */
static int vhd_bitmap_mark(struct vhd_state *s, uint32_t blk, uint32_t first,
			   uint32_t count)
{
	struct vhd_dirty_bitmap *d;
	int ret;

	if (vhd_block_full(s, blk))
		return 0;
	if (vhd_is_pending(s, blk)) {
		ret = vhd_bitmap_load(s, blk, s->write_bitmap);
		if (ret || vhd_bitmap_all_set(s->write_bitmap, first, count))
			return ret;
		vhd_bitmap_set(s->write_bitmap, first, count);
		ret = img_file_pwrite(&s->file, s->write_bitmap, s->bitmap_size,
				      vhd_block_host(s, blk));
		if (!ret &&
		    vhd_bitmap_all_set(s->write_bitmap, 0, s->block_sectors))
			vhd_block_set_full(s, blk, true);
		return ret;
	}
	d = vhd_dirty_find(s, blk);
	if (!d) {
		uint8_t *bits = malloc(s->bitmap_size);

		if (!bits)
			return -ENOMEM;
		ret = vhd_bitmap_load(s, blk, bits);
		if (ret || vhd_bitmap_all_set(bits, first, count)) {
			free(bits);
			return ret;
		}
		if (s->ndirty == VHD_MAX_PENDING) {
			ret = vhd_commit_pending(s);
			if (ret) {
				free(bits);
				return ret;
			}
		}
		d = &s->dirty[s->ndirty++];
		d->blk = blk;
		d->bits = bits;
	}
	vhd_bitmap_set(d->bits, first, count);
	if (vhd_bitmap_all_set(d->bits, 0, s->block_sectors))
		vhd_block_set_full(s, blk, true);
	return 0;
}

/* Write len bytes of iov from iov_off at host, after head_len bytes of
 * head when head is not NULL (in the same write). */
static int vhd_write_slice(struct vhd_state *s, uint64_t host, const void *head,
			   size_t head_len, const struct iovec *iov, int iovcnt,
			   size_t iov_off, size_t len)
{
	struct img_iov_view v;
	int ret = img_iov_view_init(&v, iovcnt);

	if (ret == 0)
		ret = img_iov_view_set(&v, head, head_len, iov, iovcnt, iov_off,
				       len);
	if (ret == 0)
		ret = img_file_pwritev(&s->file, v.iov, v.cnt, host);
	img_iov_view_release(&v);
	return ret;
}

static int vhd_pwritev(struct img *img, uint64_t off, const struct iovec *iov,
		       int iovcnt, size_t len)
{
	struct vhd_state *s = img_state(img);
	size_t done = 0;
	int ret;

	ret = vhd_check_writable(img, s);
	if (ret)
		return ret;
	if (!vhd_is_sparse(s))
		return img_file_pwritev(&s->file, iov, iovcnt, off);
	while (done < len) {
		uint64_t pos = off + done;
		uint32_t blk = (uint32_t)(pos / s->block_size);
		uint32_t in_blk = (uint32_t)(pos % s->block_size);
		size_t n = MIN(len - done, (size_t)(s->block_size - in_blk));
		uint32_t first = in_blk / VHD_SECTOR;
		uint32_t count = (uint32_t)(n / VHD_SECTOR);

		if (s->bat[blk] == VHD_BAT_UNUSED) {
			/* Zeros over an unallocated block of a disk without
			 * a parent are already there. */
			if (s->footer.disk_type == VHD_TYPE_DIFFERENCING ||
			    !img_iov_range_is_zero(iov, iovcnt, done, n))
				ret = vhd_block_allocate(img, s, blk, first,
							 count, iov, iovcnt,
							 done);
		} else {
			ret = vhd_write_slice(s,
					      vhd_block_host(s, blk) +
						      s->bitmap_size + in_blk,
					      NULL, 0, iov, iovcnt, done, n);
			if (!ret)
				ret = vhd_bitmap_mark(s, blk, first, count);
		}
		if (ret)
			return ret;
		done += n;
	}
	return 0;
}

static int vhd_flush(struct img *img)
{
	struct vhd_state *s = img_state(img);
	int ret;

	if (s->read_only)
		return 0;
	ret = vhd_commit_pending(s);
	if (ret)
		return ret;
	return img_file_sync(&s->file);
}

/* Drop block blk from the image (its contents then fall through). */
static int vhd_block_deallocate(struct vhd_state *s, uint32_t blk)
{
	uint64_t host = vhd_block_host(s, blk), span = vhd_block_span(s);
	bool pending = vhd_is_pending(s, blk);
	int ret;

	s->bat[blk] = VHD_BAT_UNUSED;
	vhd_block_set_full(s, blk, false);
	vhd_dirty_drop(s, blk);
	if (pending) {
		vhd_drop_pending(s, blk);
		/* Never referenced on disk: if it is the last block, the
		 * file simply gets shorter. */
		if (host + span == s->alloc_offset) {
			s->alloc_offset = host;
			ret = vhd_write_footer_at(s, host);
			if (!ret)
				ret = img_file_truncate(&s->file,
							host + VHD_FOOTER_SIZE);
			return ret;
		}
	} else {
		uint32_t unused = IMG_BE32(VHD_BAT_UNUSED);

		ret = img_file_pwrite(&s->file, &unused, 4,
				      s->header.table_offset +
					      (uint64_t)blk * 4);
		if (ret)
			return ret;
	}
	ret = img_file_punch_hole(&s->file, host, span);
	return ret == -EOPNOTSUPP ? 0 : ret;
}

static int vhd_write_zeroes(struct img *img, uint64_t off, uint64_t len,
			    unsigned flags)
{
	struct vhd_state *s = img_state(img);
	bool differencing;
	int ret;

	ret = vhd_check_writable(img, s);
	if (ret)
		return ret;
	if (!vhd_is_sparse(s))
		return img_file_zero_range(&s->file, off, len);
	differencing = s->footer.disk_type == VHD_TYPE_DIFFERENCING;
	while (len) {
		uint32_t blk = (uint32_t)(off / s->block_size);
		uint32_t in_blk = (uint32_t)(off % s->block_size);
		uint64_t n = MIN(len, (uint64_t)(s->block_size - in_blk));
		uint32_t first = in_blk / VHD_SECTOR;
		uint32_t count = (uint32_t)(n / VHD_SECTOR);

		if (s->bat[blk] == VHD_BAT_UNUSED) {
			if (differencing)
				ret = vhd_block_allocate(img, s, blk, first,
							 count, NULL, 0, 0);
		} else if (!differencing && n == s->block_size &&
			   (flags & IMG_ZERO_MAY_UNMAP)) {
			ret = vhd_block_deallocate(s, blk);
		} else {
			ret = img_file_zero_range(&s->file,
						  vhd_block_host(s, blk) +
							  s->bitmap_size +
							  in_blk,
						  n);
			if (!ret && differencing)
				ret = vhd_bitmap_mark(s, blk, first, count);
		}
		if (ret)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

static int vhd_discard(struct img *img, uint64_t off, uint64_t len)
{
	struct vhd_state *s = img_state(img);
	int ret;

	ret = vhd_check_writable(img, s);
	if (ret)
		return ret;
	if (!vhd_is_sparse(s)) {
		ret = img_file_punch_hole(&s->file, off, len);
		return ret == -EOPNOTSUPP ? 0 : ret;
	}
	while (len) {
		uint32_t blk = (uint32_t)(off / s->block_size);
		uint32_t in_blk = (uint32_t)(off % s->block_size);
		uint64_t n = MIN(len, (uint64_t)(s->block_size - in_blk));

		if (n == s->block_size && s->bat[blk] != VHD_BAT_UNUSED) {
			ret = vhd_block_deallocate(s, blk);
			if (ret)
				return ret;
		}
		off += n;
		len -= n;
	}
	return 0;
}

/* ---- block status --------------------------------------------------------*/

static int vhd_block_status(struct img *img, uint64_t off, uint64_t len,
			    struct img_extent *ext)
{
	struct vhd_state *s = img_state(img);
	uint8_t *bitmap;
	int ret;

	ext->start = off;
	if (!vhd_is_sparse(s)) {
		bool is_data;
		uint64_t run;

		ext->flags = IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED;
		ext->depth = 0;
		ext->file_offset = (int64_t)off;
		ext->length = len;
		if (!img_file_extent(&s->file, off, len, &is_data, &run)) {
			ext->length = run;
			if (!is_data)
				ext->flags |= IMG_EXTENT_ZERO;
		}
		return 0;
	}
	uint32_t blk = (uint32_t)(off / s->block_size);
	uint32_t in_blk = (uint32_t)(off % s->block_size);
	uint64_t n = MIN(len, (uint64_t)(s->block_size - in_blk));

	if (s->bat[blk] == VHD_BAT_UNUSED) {
		/* Merge the following unallocated blocks. */
		while (n < len && ++blk < s->entries &&
		       s->bat[blk] == VHD_BAT_UNUSED)
			n = MIN(len, n + s->block_size);
		ext->length = n;
		ext->flags = 0;
		ext->depth = -1;
		ext->file_offset = -1;
		return 0;
	}
	uint64_t data = vhd_block_host(s, blk) + s->bitmap_size;

	ext->length = n;
	ext->flags = IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED;
	ext->depth = 0;
	ext->file_offset = (int64_t)(data + in_blk);
	if (vhd_block_full(s, blk))
		return 0;
	bitmap = malloc(s->bitmap_size);
	if (!bitmap)
		return -ENOMEM;
	ret = vhd_bitmap_load(s, blk, bitmap);
	if (!ret) {
		bool set;
		uint32_t cnt = vhd_bitmap_run(bitmap, in_blk / VHD_SECTOR,
					      (uint32_t)(n / VHD_SECTOR), &set);

		ext->length = (uint64_t)cnt * VHD_SECTOR;
		if (!set) {
			ext->flags = 0;
			ext->depth = -1;
			ext->file_offset = -1;
		}
	}
	free(bitmap);
	return ret;
}

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
static void vhd_dirname(const char *path, char *out, size_t out_max)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		snprintf(out, out_max, ".");
	else if (slash == path)
		snprintf(out, out_max, "/");
	else
		snprintf(out, out_max, "%.*s", (int)(slash - path), path);
}

/* Path of target relative to directory dir (both absolute, normalised). */
static void vhd_relative_path(const char *dir, const char *target, char *out,
			      size_t out_max)
{
	size_t common = 0, i, pos = 0;

	/* Longest common prefix ending at a directory boundary. */
	for (i = 0; dir[i] && dir[i] == target[i]; i++)
		if (dir[i] == '/')
			common = i;
	if (!dir[i] && (target[i] == '/' || (i == 1 && dir[0] == '/')))
		common = i;
	out[0] = '\0';
	for (const char *p = dir + common; *p; p++)
		if (*p == '/' && p[1]) {
			pos += snprintf(out + pos, out_max - MIN(pos, out_max),
					"../");
			if (pos >= out_max)
				return;
		}
	if (target[common] == '/')
		common++;
	snprintf(out + pos, out_max - MIN(pos, out_max), "%s", target + common);
}

struct vhd_locator_data {
	uint32_t code;
	uint32_t length;
	uint8_t data[2 * PATH_MAX + 16];
};

/* Build the locators for backing_file (as recorded: relative to the
 * child's directory, or absolute): W2ku (absolute), W2ru (relative), MacX
 * (URL).  Also fills the UTF-16BE parent name.  Returns the count. */
static int vhd_build_locators(const char *child_path, const char *backing_file,
			      struct vhd_locator_data *loc,
			      uint8_t parent_name[512])
{
	char dir[PATH_MAX], real_dir[PATH_MAX], joined[PATH_MAX];
	char absolute[PATH_MAX], relative[PATH_MAX], text[3 * PATH_MAX];
	int len, n = 0;

	vhd_dirname(child_path, dir, sizeof(dir));
	if (!realpath(dir, real_dir))
		snprintf(real_dir, sizeof(real_dir), "%s", dir);
	if (backing_file[0] == '/')
		len = snprintf(joined, sizeof(joined), "%s", backing_file);
	else
		len = snprintf(joined, sizeof(joined), "%s/%s", real_dir,
			       backing_file);
	if (len < 0 || (size_t)len >= sizeof(joined))
		return -ENAMETOOLONG;
	if (!realpath(joined, absolute))
		memcpy(absolute, joined, sizeof(absolute));
	if (backing_file[0] == '/')
		vhd_relative_path(real_dir, absolute, relative,
				  sizeof(relative));
	else
		snprintf(relative, sizeof(relative), "%s", backing_file);

	/* The name field holds 255 UTF-16 units: long paths keep their
	 * file name only (the locators have the full paths). */
	memset(parent_name, 0, 512);
	len = vhd_utf8_to_utf16(backing_file, parent_name, 510, true);
	if (len == -ENAMETOOLONG) {
		memset(parent_name, 0, 512);
		len = vhd_utf8_to_utf16(vhd_basename(backing_file), parent_name,
					510, true);
	}
	if (len < 0)
		return len;

	vhd_host_path_to_windows(absolute, text, sizeof(text));
	len = vhd_utf8_to_utf16(text, loc[n].data, sizeof(loc[n].data), false);
	if (len < 0)
		return len;
	loc[n].code = VHD_PLATFORM_W2KU;
	loc[n++].length = (uint32_t)len;

	if (relative[0] == '.' && relative[1] == '.')
		vhd_host_path_to_windows(relative, text, sizeof(text));
	else {
		char prefixed[PATH_MAX + 2];

		snprintf(prefixed, sizeof(prefixed), "./%s", relative);
		vhd_host_path_to_windows(prefixed, text, sizeof(text));
	}
	len = vhd_utf8_to_utf16(text, loc[n].data, sizeof(loc[n].data), false);
	if (len < 0)
		return len;
	loc[n].code = VHD_PLATFORM_W2RU;
	loc[n++].length = (uint32_t)len;

	len = vhd_path_to_url(absolute, (char *)loc[n].data,
			      sizeof(loc[n].data));
	if (len < 0)
		return len;
	loc[n].code = VHD_PLATFORM_MACX;
	loc[n].length = (uint32_t)strlen((char *)loc[n].data);
	n++;
	return n;
}

/* The parent's identity as a VHD child records it. */
static void vhd_parent_identity(struct img *parent, uint8_t uuid[16],
				uint32_t *timestamp)
{
	struct stat st;

	memset(uuid, 0, 16);
	*timestamp = 0;
	if (!parent)
		return;
	if (!strcmp(img_format(parent), "vhd")) {
		const struct vhd_state *ps = img_state(parent);

		memcpy(uuid, ps->footer.uuid, 16);
	}
	/* The spec: "the modification time stamp of the parent". */
	if (!stat(img_filename(parent), &st))
		*timestamp = vhd_timestamp_from_unix(st.st_mtime);
}

static int vhd_create(const struct img_create_args *args, char *errbuf,
		      size_t errlen)
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

/* ---- info ----------------------------------------------------------------*/

static void vhd_format_time(uint32_t vhd_time, char *out, size_t out_max)
{
	time_t t = (time_t)vhd_time + VHD_EPOCH_OFFSET;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, out_max, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static const char *vhd_locator_name(uint32_t code, char out[5])
{
	out[0] = (char)(code >> 24);
	out[1] = (char)(code >> 16);
	out[2] = (char)(code >> 8);
	out[3] = (char)code;
	out[4] = '\0';
	for (int i = 0; i < 4; i++)
		if (out[i] < 0x20 || out[i] > 0x7e)
			out[i] = '?';
	return out;
}

static int vhd_get_info(struct img *img, struct img_info *info)
{
	struct vhd_state *s = img_state(img);
	static const char *const types[] = {
		[VHD_TYPE_FIXED] = "fixed",
		[VHD_TYPE_DYNAMIC] = "dynamic",
		[VHD_TYPE_DIFFERENCING] = "differencing",
	};
	struct vhd_geometry g = { s->footer.cylinders, s->footer.heads,
				  s->footer.sectors_per_track };
	char text[256], app[5];

	snprintf(info->subformat, sizeof(info->subformat), "%s",
		 types[s->footer.disk_type]);
	info->cluster_size = vhd_is_sparse(s) ? s->block_size : 0;
	info->read_only = s->read_only;
	info->geometry.cylinders = g.cylinders;
	info->geometry.heads = g.heads;
	info->geometry.sectors = g.sectors_per_track;
	img_uuid_format(s->footer.uuid, info->uuid);
	img_info_add_file(info, img_filename(img));

	memcpy(app, s->footer.creator_app, 4);
	app[4] = '\0';
	for (int i = 0; i < 4; i++)
		if (app[i] && (app[i] < 0x20 || app[i] > 0x7e))
			app[i] = '?';
	img_info_add_str(info, "creator-app", app);
	snprintf(text, sizeof(text), "%u.%u", s->footer.creator_version >> 16,
		 s->footer.creator_version & 0xffff);
	img_info_add_str(info, "creator-version", text);
	img_info_add_str(info, "creator-host-os",
			 vhd_locator_name(s->footer.creator_host_os, app));
	vhd_format_time(s->footer.timestamp, text, sizeof(text));
	img_info_add_str(info, "timestamp", text);
	img_info_add_int(info, "current-size", (int64_t)s->footer.current_size);
	img_info_add_int(info, "original-size",
			 (int64_t)s->footer.original_size);
	snprintf(text, sizeof(text), "%u/%u/%u", g.cylinders, g.heads,
		 g.sectors_per_track);
	img_info_add_str(info, "geometry", text);
	img_info_add_int(info, "chs-size",
			 (int64_t)(vhd_geometry_sectors(g) * VHD_SECTOR));
	img_info_add_str(info, "footer-checksum",
			 s->footer_checksum_ok ? "valid" : "INVALID");
	if (s->footer.saved_state)
		img_info_add_int(info, "saved-state", s->footer.saved_state);
	if (!vhd_is_sparse(s))
		return 0;

	img_info_add_int(info, "block-size", s->block_size);
	img_info_add_int(info, "max-table-entries",
			 s->header.max_table_entries);
	img_info_add_str(info, "header-checksum",
			 s->header_checksum_ok ? "valid" : "INVALID");
	if (s->footer.disk_type != VHD_TYPE_DIFFERENCING)
		return 0;
	img_uuid_format(s->header.parent_uuid, info->parent_uuid);
	snprintf(info->backing_filename, sizeof(info->backing_filename), "%s",
		 s->backing_name);
	if (!vhd_utf16_to_utf8(s->header.parent_name,
			       sizeof(s->header.parent_name), true, text,
			       sizeof(text)))
		img_info_add_str(info, "parent-name", text);
	if (s->header.parent_timestamp) {
		vhd_format_time(s->header.parent_timestamp, text, sizeof(text));
		img_info_add_str(info, "parent-timestamp", text);
	}
	for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
		const struct vhd_locator *l = &s->header.locators[i];
		char key[48], path[PATH_MAX];
		bool usable;

		if (!l->platform_code)
			continue;
		if (vhd_locator_read(img, s, l, path, sizeof(path), &usable))
			path[0] = '\0';
		snprintf(key, sizeof(key), "parent-locator-%s",
			 vhd_locator_name(l->platform_code, app));
		img_info_add_str(info, key, path);
	}
	return 0;
}

/* ---- chains --------------------------------------------------------------*/

static int vhd_backing_matches(struct img *img, struct img *parent)
{
	struct vhd_state *s = img_state(img);
	static const uint8_t zero[16];
	char want[40], have[40];
	const struct vhd_state *ps;

	if (s->footer.disk_type != VHD_TYPE_DIFFERENCING ||
	    strcmp(img_format(parent), "vhd") ||
	    !memcmp(s->header.parent_uuid, zero, 16))
		return 0;
	ps = img_state(parent);
	if (!memcmp(ps->footer.uuid, s->header.parent_uuid, 16))
		return 0;
	img_uuid_format(s->header.parent_uuid, want);
	img_uuid_format(ps->footer.uuid, have);
	return img_error(img, -ESTALE,
			 "parent %s has UUID %s but this differencing disk "
			 "was made for %s",
			 img_filename(parent), have, want);
}

/* Space for locator data: reuse the old slot when it is big enough, else
 * append at the end of the file (the trailing footer moves). */
static int vhd_locator_store(struct vhd_state *s, struct vhd_locator *l,
			     const struct vhd_locator_data *d)
{
	uint32_t space = (uint32_t)round_up(MAX(d->length, 1), VHD_SECTOR);
	uint8_t *buf;
	uint64_t at;
	bool append;
	int ret;

	/* Old tools count data_space in sectors, newer ones in bytes. */
	uint64_t old_space = l->data_space >= l->data_length
				     ? l->data_space
				     : (uint64_t)l->data_space * VHD_SECTOR;

	append = !l->platform_code || !l->data_offset || old_space < space ||
		 l->data_offset + old_space > s->alloc_offset;
	at = append ? s->alloc_offset : l->data_offset;
	buf = calloc(1, space);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, d->data, d->length);
	ret = img_file_pwrite(&s->file, buf, space, at);
	free(buf);
	if (ret)
		return ret;
	if (append) {
		s->alloc_offset += space;
		ret = vhd_write_footer_at(s, s->alloc_offset);
		if (ret)
			return ret;
		/* The old slot belongs to nothing now: clear it so that
		 * check does not count it as a leak. */
		if (l->platform_code && l->data_offset &&
		    l->data_offset + old_space <= at) {
			ret = img_file_zero_range(&s->file, l->data_offset,
						  old_space);
			if (ret)
				return ret;
		}
		l->data_space = space;
	}
	l->platform_code = d->code;
	l->data_length = d->length;
	l->data_offset = at;
	return 0;
}

static int vhd_set_backing(struct img *img, const char *backing_file,
			   const char *backing_format, struct img *parent)
{
	struct vhd_state *s = img_state(img);
	struct vhd_locator_data *loc = NULL;
	struct vhd_header h = s->header;
	int ret, nloc = 0;

	(void)backing_format;
	ret = vhd_check_writable(img, s);
	if (ret)
		return ret;
	if (!vhd_is_sparse(s))
		return img_error(img, -ENOTSUP,
				 "a fixed VHD cannot have a backing file");
	ret = vhd_commit_pending(s);
	if (ret)
		return ret;
	memset(h.parent_uuid, 0, sizeof(h.parent_uuid));
	memset(h.parent_name, 0, sizeof(h.parent_name));
	h.parent_timestamp = 0;
	if (backing_file) {
		loc = calloc(VHD_MAX_LOCATORS, sizeof(*loc));
		if (!loc)
			return img_error(img, -ENOMEM, "out of memory");
		nloc = vhd_build_locators(img_filename(img), backing_file, loc,
					  h.parent_name);
		if (nloc < 0) {
			ret = img_error(img, nloc,
					"backing file name '%s' cannot be "
					"recorded",
					backing_file);
			goto fail;
		}
		vhd_parent_identity(parent, h.parent_uuid, &h.parent_timestamp);
	}
	/* Reuse slots in order; unused ones are cleared. */
	for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
		struct vhd_locator *l = &h.locators[i];

		if (i < nloc) {
			ret = vhd_locator_store(s, l, &loc[i]);
			if (ret)
				goto fail;
		} else {
			if (l->platform_code && l->data_length &&
			    l->data_offset + l->data_length <= s->alloc_offset)
				img_file_punch_hole(&s->file, l->data_offset,
						    round_up(l->data_length,
							     VHD_SECTOR));
			memset(l, 0, sizeof(*l));
		}
	}
	/* Locator data before the header that points at it. */
	ret = img_file_sync(&s->file);
	if (ret)
		goto fail;
	s->header = h;
	ret = vhd_write_header(s);
	if (ret)
		goto fail;
	s->footer.disk_type = backing_file ? VHD_TYPE_DIFFERENCING
					   : VHD_TYPE_DYNAMIC;
	ret = vhd_write_footers(s);
	if (ret)
		goto fail;
	s->header_checksum_ok = true;
	snprintf(s->backing_name, sizeof(s->backing_name), "%s",
		 backing_file ? backing_file : "");
	ret = img_file_sync(&s->file);
fail:
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

static int vhd_resize(struct img *img, uint64_t new_size, unsigned flags)
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

static int vhd_check(struct img *img, struct img_check_result *res,
		     unsigned fix)
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

static const char *const vhd_aliases[] = { "vpc", NULL };
static const char *const vhd_create_options[] = { "force_size", NULL };

const struct img_driver img_driver_vhd = {
	.name = "vhd",
	.aliases = vhd_aliases,
	.description = "Microsoft VHD (Virtual PC, Hyper-V, Azure)",
	.flags = IMG_DRV_CONCURRENT_READS,
	.state_size = sizeof(struct vhd_state),
	.create_options = vhd_create_options,
	.probe = vhd_probe,
	.create = vhd_create,
	.open = vhd_open,
	.close = vhd_close,
	.preadv = vhd_preadv,
	.pwritev = vhd_pwritev,
	.flush = vhd_flush,
	.write_zeroes = vhd_write_zeroes,
	.discard = vhd_discard,
	.block_status = vhd_block_status,
	.resize = vhd_resize,
	.check = vhd_check,
	.get_info = vhd_get_info,
	.backing_matches = vhd_backing_matches,
	.set_backing = vhd_set_backing,
};
