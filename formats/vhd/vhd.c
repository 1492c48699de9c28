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
 *
 * Parallel requests (img_set_parallel_rw, every subformat): reads, and
 * writes into allocated blocks, go to the file at once.  Allocating a
 * block (looked up again under the lock, so two writers never both
 * allocate it), the trailing footer, the pending BAT entries and every
 * read-modify-write of a sector bitmap hold meta_lock; a new BAT entry is
 * stored only after the block's bitmap and data are written, so a
 * parallel reader sees the old contents or the new.  A flush commits the
 * pending metadata under meta_lock and runs its last fdatasync without it.
 */
#include "vhd_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
	if (s->meta_lock_init)
		pthread_mutex_destroy(&s->meta_lock);
	s->meta_lock_init = false;
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

	pthread_mutex_init(&s->meta_lock, NULL);
	s->meta_lock_init = true;
	ret = img_file_open_image(img, &s->file, "VHD", VHD_FOOTER_SIZE,
				  &s->file_size);
	if (ret)
		goto fail;
	s->file_open = true;
	s->read_only = !writable;
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
	img_set_parallel_rw(img, true);
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

/* Block blk's bitmap as it stands (a dirty one is newer than the disk's);
 * remembers when it is all ones.  locked: the caller holds meta_lock.
 * A reader that finds no dirty copy reads the disk's: a commit writes a
 * dirty bitmap there before it drops it, and bits that a parallel write
 * sets meanwhile belong to a write still in flight. */
static int vhd_bitmap_load(struct vhd_state *s, uint32_t blk, uint8_t *bitmap,
			   bool locked)
{
	struct vhd_dirty_bitmap *d;
	bool copied = false;
	int ret = 0;

	if (!locked)
		pthread_mutex_lock(&s->meta_lock);
	d = vhd_dirty_find(s, blk);
	if (d) {
		memcpy(bitmap, d->bits, s->bitmap_size);
		copied = true;
	}
	if (!locked)
		pthread_mutex_unlock(&s->meta_lock);
	if (!copied)
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

		if (vhd_bat_get(s, blk) == VHD_BAT_UNUSED) {
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
			ret = vhd_bitmap_load(s, blk, bitmap, false);
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

int vhd_check_writable(struct img *img, struct vhd_state *s)
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
	vhd_block_set_full(s, blk,
			   !differencing ||
				   vhd_bitmap_all_set(bitmap, 0,
						      s->block_sectors));
	vhd_bat_publish(s, blk, (uint32_t)(host / VHD_SECTOR));
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

/* Mark sectors [first, first + count) of an allocated block as present
 * (meta_lock held).  Blocks not yet referenced on disk get their bitmap
 * written at once; committed blocks keep the new bitmap in memory until
 * the next flush, which writes it after an fdatasync of the data. */
static int vhd_bitmap_mark(struct vhd_state *s, uint32_t blk, uint32_t first,
			   uint32_t count)
{
	struct vhd_dirty_bitmap *d;
	int ret;

	if (vhd_block_full(s, blk))
		return 0;
	if (vhd_is_pending(s, blk)) {
		ret = vhd_bitmap_load(s, blk, s->write_bitmap, true);
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
		ret = vhd_bitmap_load(s, blk, bits, true);
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

		if (vhd_bat_get(s, blk) == VHD_BAT_UNUSED) {
			bool allocated;

			/* Zeros over an unallocated block of a disk without
			 * a parent are already there. */
			if (s->footer.disk_type != VHD_TYPE_DIFFERENCING &&
			    img_iov_range_is_zero(iov, iovcnt, done, n)) {
				done += n;
				continue;
			}
			pthread_mutex_lock(&s->meta_lock);
			allocated = vhd_bat_get(s, blk) != VHD_BAT_UNUSED;
			if (!allocated)
				ret = vhd_block_allocate(img, s, blk, first,
							 count, iov, iovcnt,
							 done);
			pthread_mutex_unlock(&s->meta_lock);
			/* allocated by a parallel write meanwhile: write it
			 * in place */
			if (allocated)
				continue;
		} else {
			ret = vhd_write_slice(s,
					      vhd_block_host(s, blk) +
						      s->bitmap_size + in_blk,
					      NULL, 0, iov, iovcnt, done, n);
			if (!ret && !vhd_block_full(s, blk)) {
				pthread_mutex_lock(&s->meta_lock);
				ret = vhd_bitmap_mark(s, blk, first, count);
				pthread_mutex_unlock(&s->meta_lock);
			}
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
	pthread_mutex_lock(&s->meta_lock);
	ret = vhd_commit_pending(s);
	pthread_mutex_unlock(&s->meta_lock);
	if (ret)
		return ret;
	return img_file_sync(&s->file);
}

/* Drop block blk from the image (its contents then fall through). */
int vhd_block_deallocate(struct vhd_state *s, uint32_t blk)
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

	if (vhd_bat_get(s, blk) == VHD_BAT_UNUSED) {
		/* Merge the following unallocated blocks. */
		while (n < len && ++blk < s->entries &&
		       vhd_bat_get(s, blk) == VHD_BAT_UNUSED)
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
	ret = vhd_bitmap_load(s, blk, bitmap, false);
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
