/* SPDX-License-Identifier: MIT */
/*
 * VDI (VirtualBox Disk Image 1.1): normal (dynamic), fixed and
 * differencing images.
 *
 * Layout: header at 0, block map at offset_bmap (one 32-bit entry per
 * block: a slot number, VDI_BLOCK_FREE or VDI_BLOCK_ZERO), data slots from
 * offset_data on.  A block's data lives at offset_data + slot * stride.
 *
 * Write ordering (crash safety):
 *  - A new block is appended in a fresh slot past every used one.  Its
 *    map entry is changed in memory only; on flush (or before anything
 *    that frees slots) the data is fdatasync'ed first, then the map
 *    entries and the header (blocks_allocated) are written and synced.
 *    A crash before the flush loses only unflushed writes and leaves the
 *    appended slots as leaks, which `check -r` truncates away; the map
 *    on disk never points at a slot whose data is not on disk.
 *  - Freeing blocks (discard, write_zeroes with MAY_UNMAP, shrink): the
 *    new map entries are written and synced before a freed slot is
 *    reused.  File space is reclaimed at the next flush (once for a run
 *    of discards) by moving the last slots into the holes: copy, sync,
 *    repoint the entries, sync, and only then truncate.
 *  - A partial write to a fresh slot past the end of file writes only
 *    its data and extends the file; the rest of the slot reads as zeros.
 *    A slot that may hold old bytes (a reused hole) is written whole.
 *  - After a failed fdatasync no more metadata is written (the kernel
 *    may have dropped the data it was meant to cover).
 *  - Growing the block map past its room: the blocks in the way are
 *    copied to the end and repointed (old layout, synced), the new map is
 *    written into the freed space, then one header write switches to the
 *    new layout.  At every point the header describes a consistent image.
 *
 * Parallel requests (IMG_DRV_PARALLEL_RW): reads, and writes to allocated
 * blocks, run at once with no lock but layout_lock held shared (only a
 * compaction, which moves slots, takes it exclusively).  Allocation, the
 * dirty ranges and the header change under meta_lock; a new entry is
 * stored (atomically) only after its block's data is written, so a
 * parallel reader sees either the old contents or the new.  A flush
 * writes the metadata under meta_lock, after syncing what the new entries
 * point at, and runs its final fdatasync without it.
 */
#include "vdi_ondisk.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct vdi_state {
	struct img_file file;
	struct vdi_header header;
	uint32_t *bmap;	    /* host order, header.blocks_in_image entries */
	uint32_t next_slot; /* first slot past every used one */
	uint64_t file_end;  /* size of the host file */
	bool is_diff;
	/* Metadata changed in memory but not yet on disk. */
	uint32_t dirty_lo, dirty_hi; /* map entries [lo, hi), empty if lo>=hi */
	bool header_dirty;
	bool unsynced_alloc; /* appended data not yet fdatasync'ed */
	bool modify_uuid_fresh;
	bool holes; /* freed slots to reclaim at the next flush */
	/* A failed fdatasync may have dropped data we cannot tell apart;
	 * metadata is never written after one (reopen and check). */
	bool sync_failed;
	uint8_t *block_buf; /* one stride, for partial-block writes and moves */
	pthread_mutex_t meta_lock;
	pthread_rwlock_t layout_lock;
	bool locks_init;
};

static const char *const vdi_create_options[] = {
	"subformat",
	"static",
	"block_size",
	NULL,
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t vdi_min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static void vdi_mark_dirty(struct vdi_state *s, uint32_t block)
{
	if (s->dirty_lo >= s->dirty_hi) {
		s->dirty_lo = block;
		s->dirty_hi = block + 1;
		return;
	}
	if (block < s->dirty_lo)
		s->dirty_lo = block;
	if (block + 1 > s->dirty_hi)
		s->dirty_hi = block + 1;
}

/* Map entries are read by parallel requests while allocations change
 * them (see the top). */
static uint32_t vdi_entry(const struct vdi_state *s, uint32_t block)
{
	return __atomic_load_n(&s->bmap[block], __ATOMIC_ACQUIRE);
}

static void vdi_set_entry(struct vdi_state *s, uint32_t block, uint32_t entry)
{
	__atomic_store_n(&s->bmap[block], entry, __ATOMIC_RELEASE);
	vdi_mark_dirty(s, block);
}

static int vdi_block_buf(struct img *img, struct vdi_state *s)
{
	if (s->block_buf)
		return 0;
	s->block_buf = aligned_alloc(
		4096, (vdi_block_stride(&s->header) + 4095) & ~(uint64_t)4095);
	if (!s->block_buf)
		return img_error(img, -ENOMEM,
				 "out of memory for a %u-byte "
				 "block buffer",
				 s->header.block_size);
	return 0;
}

/* Write map entries [lo, hi) of map (host order) at map_off. */
static int vdi_bmap_write(struct vdi_state *s, const uint32_t *map,
			  uint64_t map_off, uint32_t lo, uint32_t hi)
{
	uint32_t chunk[1024];

	while (lo < hi) {
		uint32_t n = (uint32_t)vdi_min(hi - lo, 1024);
		int ret;

		for (uint32_t i = 0; i < n; i++)
			chunk[i] = IMG_LE32(map[lo + i]);
		ret = img_file_pwrite(&s->file, chunk, n * 4,
				      map_off + (uint64_t)lo * 4);
		if (ret < 0)
			return ret;
		lo += n;
	}
	return 0;
}

static int vdi_header_write(struct vdi_state *s, const struct vdi_header *h)
{
	struct vdi_header_disk d;

	vdi_header_encode(&d, h);
	return img_file_pwrite(&s->file, &d,
			       VDI_PRE_HEADER_SIZE + h->header_size, 0);
}

static int vdi_sync(struct img *img, struct vdi_state *s)
{
	int ret = img_file_sync(&s->file);

	if (ret < 0) {
		__atomic_store_n(&s->sync_failed, true, __ATOMIC_RELEASE);
		return img_error(img, ret, "cannot flush: %s", strerror(-ret));
	}
	return 0;
}

/* Put in-memory metadata on disk, appended data first (see the top). */
static int vdi_commit(struct img *img, bool sync)
{
	struct vdi_state *s = img_state(img);
	int ret;

	if (__atomic_load_n(&s->sync_failed, __ATOMIC_ACQUIRE))
		return img_error(img, -EIO,
				 "an earlier flush failed; the image must be "
				 "reopened (and checked) before more writes");
	if (s->unsynced_alloc && s->dirty_lo < s->dirty_hi) {
		ret = vdi_sync(img, s);
		if (ret < 0)
			return ret;
	}
	s->unsynced_alloc = false;
	if (s->dirty_lo < s->dirty_hi) {
		ret = vdi_bmap_write(s, s->bmap, s->header.offset_bmap,
				     s->dirty_lo, s->dirty_hi);
		if (ret < 0)
			return ret;
		s->dirty_lo = s->dirty_hi = 0;
	}
	if (s->header_dirty) {
		ret = vdi_header_write(s, &s->header);
		if (ret < 0)
			return ret;
		s->header_dirty = false;
	}
	return sync ? vdi_sync(img, s) : 0;
}

/* The slots the file holds room for (a partial last slot counts). */
static uint64_t vdi_file_slots(const struct vdi_header *h, uint64_t file_size)
{
	if (file_size <= h->offset_data)
		return 0;
	return (file_size - h->offset_data + vdi_block_stride(h) - 1) /
	       vdi_block_stride(h);
}

/* owner[slot] = block for slots < nslots, VDI_BLOCK_FREE for holes.
 * Entries at or past nslots are ignored. */
static uint32_t *vdi_slot_owners(struct img *img, struct vdi_state *s,
				 uint32_t nslots)
{
	uint32_t *owner = malloc(((size_t)nslots + 1) * sizeof(*owner));

	if (!owner) {
		img_error(img, -ENOMEM, "out of memory for %u slots", nslots);
		return NULL;
	}
	memset(owner, 0xff, ((size_t)nslots + 1) * sizeof(*owner));
	for (uint32_t b = 0; b < s->header.blocks_in_image; b++) {
		uint32_t e = s->bmap[b];

		if (VDI_BLOCK_IS_ALLOCATED(e) && e < nslots)
			owner[e] = b;
	}
	return owner;
}

/* Pick the slot for a new block: past every used one, unless that would
 * number it beyond the block count (qemu-img check calls that corrupt),
 * then the lowest hole.  Holes are never referenced by the map on disk:
 * whatever frees a slot commits the map before returning. */
static int vdi_slot_alloc(struct img *img, struct vdi_state *s, uint32_t *slot)
{
	uint32_t *owner;

	if (s->next_slot < s->header.blocks_in_image) {
		*slot = s->next_slot;
		return 0;
	}
	owner = vdi_slot_owners(img, s, s->next_slot);
	if (!owner)
		return -ENOMEM;
	for (uint32_t i = 0; i < s->next_slot; i++) {
		if (owner[i] == VDI_BLOCK_FREE) {
			free(owner);
			/* the map on disk may still point at a freshly freed
			 * slot: put the freeing on disk before reusing it */
			*slot = i;
			return vdi_commit(img, true);
		}
	}
	free(owner);
	if (s->next_slot >= VDI_BLOCK_ZERO)
		return img_error(img, -ENOSPC, "no free block slot");
	*slot = s->next_slot;
	return 0;
}

/* ---- probe, create ---------------------------------------------------- */

static int vdi_probe(const uint8_t *head, size_t head_len, uint64_t file_size,
		     struct img_file *f)
{
	uint32_t sig, version;

	(void)file_size;
	(void)f;
	if (head_len < VDI_PRE_HEADER_SIZE)
		return 0;
	memcpy(&sig, head + 64, 4);
	memcpy(&version, head + 68, 4);
	if (IMG_LE32(sig) != VDI_SIGNATURE)
		return 0;
	return IMG_LE32(version) >> 16 == 1 ? 100 : 50;
}

static bool vdi_option_true(const char *v)
{
	return v && (!strcmp(v, "on") || !strcmp(v, "true") ||
		     !strcmp(v, "yes") || !strcmp(v, "1"));
}

static int vdi_create_type(const struct img_create_args *a,
			   enum vdi_image_type *type, char *errbuf,
			   size_t errlen)
{
	const char *sub = a->subformat ? a->subformat
				       : img_create_arg(a, "subformat");
	const char *stat = img_create_arg(a, "static");

	*type = VDI_TYPE_NORMAL;
	if (sub) {
		if (!strcmp(sub, "fixed") || !strcmp(sub, "static"))
			*type = VDI_TYPE_FIXED;
		else if (strcmp(sub, "dynamic") && strcmp(sub, "normal"))
			return img_error_buf(errbuf, errlen, -EINVAL,
					     "unknown VDI subformat '%s' "
					     "(dynamic or fixed)",
					     sub);
	}
	if (stat && vdi_option_true(stat))
		*type = VDI_TYPE_FIXED;
	else if (stat && strcmp(stat, "off") && strcmp(stat, "false") &&
		 strcmp(stat, "no") && strcmp(stat, "0"))
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "static=%s: expected on or off", stat);
	if (a->preallocate)
		*type = VDI_TYPE_FIXED;
	if (a->backing && *type == VDI_TYPE_FIXED)
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "a fixed VDI cannot have a parent");
	if (a->backing)
		*type = VDI_TYPE_DIFF;
	return 0;
}

static int vdi_create_block_size(const struct img_create_args *a, uint32_t *bs,
				 char *errbuf, size_t errlen)
{
	const char *text = img_create_arg(a, "block_size");
	uint64_t v;

	*bs = a->cluster_size ? a->cluster_size : VDI_DEFAULT_BLOCK_SIZE;
	if (!text)
		return 0;
	if (img_parse_size(text, &v) < 0 || v > UINT32_MAX)
		return img_error_buf(errbuf, errlen, -EINVAL,
				     "block_size=%s is not a size", text);
	*bs = (uint32_t)v;
	return 0;
}

static const struct vdi_state *vdi_parent_state(struct img *parent)
{
	if (!parent || strcmp(img_format(parent), "vdi"))
		return NULL;
	return img_state(parent);
}

static int vdi_create(const struct img_create_args *a, char *errbuf,
		      size_t errlen)
{
	struct img_file f = { 0 };
	const struct vdi_state *parent = NULL;
	struct vdi_header h;
	struct vdi_header_disk d;
	enum vdi_image_type type;
	uint64_t size = a->size, file_end;
	uint32_t bs, *map = NULL;
	char msg[256];
	int ret;

	ret = vdi_create_type(a, &type, errbuf, errlen);
	if (ret < 0)
		return ret;
	ret = vdi_create_block_size(a, &bs, errbuf, errlen);
	if (ret < 0)
		return ret;
	if (a->backing) {
		parent = vdi_parent_state(a->backing);
		if (!parent)
			return img_error_buf(errbuf, errlen, -ENOTSUP,
					     "a VDI parent must be a VDI image "
					     "(VDI finds its parent by UUID)");
		if (!size)
			size = img_size(a->backing);
	}
	ret = vdi_header_init(&h, size, bs, type, msg, sizeof(msg));
	if (ret < 0)
		return img_error_buf(errbuf, errlen, ret, "%s", msg);
	if (parent) {
		memcpy(h.uuid_link, parent->header.uuid_create, 16);
		memcpy(h.uuid_parent_modify, parent->header.uuid_modify, 16);
	}

	map = malloc(((size_t)h.blocks_in_image + 1) * sizeof(*map));
	if (!map)
		return img_error_buf(errbuf, errlen, -ENOMEM,
				     "out of memory for the block map");
	for (uint32_t i = 0; i < h.blocks_in_image; i++)
		map[i] = type == VDI_TYPE_FIXED ? i : VDI_BLOCK_FREE;
	file_end = h.offset_data;
	if (type == VDI_TYPE_FIXED)
		file_end += (uint64_t)h.blocks_in_image * vdi_block_stride(&h);

	ret = img_file_create(&f, a->path, a->excl, errbuf, errlen);
	if (ret < 0)
		goto out;
	{
		/* vdi_bmap_write wants a state only for its file */
		struct vdi_state tmp = { .file = f };

		vdi_header_encode(&d, &h);
		ret = img_file_pwrite(&f, &d, sizeof(d), 0);
		if (ret >= 0)
			ret = vdi_bmap_write(&tmp, map, h.offset_bmap, 0,
					     h.blocks_in_image);
	}
	if (ret >= 0)
		ret = img_file_truncate(&f, file_end);
	if (ret >= 0)
		ret = img_file_sync(&f);
	if (ret < 0) {
		img_error_buf(errbuf, errlen, ret, "%s: cannot write: %s",
			      a->path, strerror(-ret));
		unlink(a->path);
	}
	img_file_close(&f);
out:
	free(map);
	return ret < 0 ? ret : 0;
}

/* ---- open, close ------------------------------------------------------ */

static int vdi_bmap_load(struct img *img, struct vdi_state *s,
			 uint64_t file_size, bool checking, bool writable)
{
	const struct vdi_header *h = &s->header;
	uint64_t nslots = vdi_file_slots(h, file_size);
	uint64_t max_slots =
		file_size > h->offset_data
			? (file_size - h->offset_data) / vdi_block_stride(h)
			: 0;
	uint8_t *seen = NULL;
	int ret;

	s->bmap = malloc(((size_t)h->blocks_in_image + 1) * sizeof(*s->bmap));
	if (!s->bmap)
		return img_error(img, -ENOMEM,
				 "out of memory for a block map of %u entries",
				 h->blocks_in_image);
	ret = img_file_pread(&s->file, s->bmap, (size_t)h->blocks_in_image * 4,
			     h->offset_bmap);
	if (ret < 0)
		return img_error(img, ret, "cannot read the block map: %s",
				 strerror(-ret));
	/* Two entries sharing a slot would let a write to one block change
	 * the other: refuse to write such an image outside check. */
	if (writable && !checking) {
		seen = calloc(nslots / 8 + 1, 1);
		if (!seen)
			return img_error(img, -ENOMEM, "out of memory");
	}
	s->next_slot = 0;
	for (uint32_t b = 0; b < h->blocks_in_image; b++) {
		uint32_t e = IMG_LE32(s->bmap[b]);

		s->bmap[b] = e;
		if (!VDI_BLOCK_IS_ALLOCATED(e))
			continue;
		if (e >= max_slots) {
			if (checking)
				continue;
			ret = img_error(img, -EINVAL,
					"block map entry %u (slot %u) points "
					"past the end of file",
					b, e);
			goto out;
		}
		if (seen) {
			if (seen[e / 8] & (1u << (e % 8))) {
				ret = img_error(img, -EINVAL,
						"block map entry %u shares "
						"data slot %u with another "
						"block; run check",
						b, e);
				goto out;
			}
			seen[e / 8] |= 1u << (e % 8);
		}
		if (e + 1 > s->next_slot)
			s->next_slot = e + 1;
	}
	ret = 0;
out:
	free(seen);
	return ret;
}

static void vdi_close(struct img *img)
{
	struct vdi_state *s = img_state(img);

	free(s->bmap);
	s->bmap = NULL;
	free(s->block_buf);
	s->block_buf = NULL;
	img_file_close(&s->file);
	if (s->locks_init) {
		pthread_mutex_destroy(&s->meta_lock);
		pthread_rwlock_destroy(&s->layout_lock);
		s->locks_init = false;
	}
}

static int vdi_open(struct img *img)
{
	struct vdi_state *s = img_state(img);
	unsigned flags = img_open_flags(img);
	bool writable = flags & IMG_OPEN_RDWR;
	bool checking = flags & IMG_OPEN_CHECK;
	struct vdi_header_disk d;
	uint64_t file_size;
	char msg[256];
	int ret;

	pthread_mutex_init(&s->meta_lock, NULL);
	pthread_rwlock_init(&s->layout_lock, NULL);
	s->locks_init = true;
	ret = img_file_open(img, &s->file, img_filename(img), writable);
	if (ret < 0)
		return ret;
	ret = img_file_size(&s->file, &file_size);
	if (ret < 0)
		goto fail;
	ret = img_file_pread_zero_eof(&s->file, &d, sizeof(d), 0);
	if (ret < 0) {
		img_error(img, ret, "cannot read the header: %s",
			  strerror(-ret));
		goto fail;
	}
	vdi_header_decode(&s->header, &d);
	ret = vdi_header_validate(&s->header, file_size, msg, sizeof(msg));
	if (ret < 0) {
		img_error(img, ret, "%s", msg);
		goto fail;
	}
	s->file_end = file_size;
	ret = vdi_bmap_load(img, s, file_size, checking, writable);
	if (ret < 0)
		goto fail;
	s->is_diff = s->header.image_type == VDI_TYPE_DIFF;
	img_set_size(img, s->header.disk_size);
	if (s->is_diff)
		img_set_backing_by_identity(img, "vdi");
	return 0;
fail:
	vdi_close(img);
	return ret;
}

/* ---- reads ------------------------------------------------------------ */

enum vdi_kind { VDI_KIND_DATA, VDI_KIND_FREE, VDI_KIND_ZERO };

static enum vdi_kind vdi_entry_kind(uint32_t e)
{
	if (VDI_BLOCK_IS_ALLOCATED(e))
		return VDI_KIND_DATA;
	return e == VDI_BLOCK_ZERO ? VDI_KIND_ZERO : VDI_KIND_FREE;
}

/* Length of the run from virtual pos (at most len) whose blocks are of
 * the same kind and, for data, stored in consecutive slots. */
static uint64_t vdi_run_length(const struct vdi_state *s, uint64_t pos,
			       uint64_t len)
{
	const struct vdi_header *h = &s->header;
	uint32_t bs = h->block_size;
	uint32_t block = (uint32_t)(pos / bs);
	uint32_t first = vdi_entry(s, block);
	enum vdi_kind kind = vdi_entry_kind(first);
	uint64_t run = vdi_min(bs - pos % bs, len);

	while (run < len) {
		uint32_t next = block + 1;
		uint32_t e = vdi_entry(s, next);

		if (vdi_entry_kind(e) != kind)
			break;
		if (kind == VDI_KIND_DATA &&
		    (h->block_extra || e != first + (next - (pos / bs))))
			break;
		block = next;
		run += vdi_min(bs, len - run);
	}
	return run;
}

static int vdi_preadv(struct img *img, uint64_t off, const struct iovec *iov,
		      int iovcnt, size_t len)
{
	struct vdi_state *s = img_state(img);
	const struct vdi_header *h = &s->header;
	struct img_iov_view part;
	size_t done = 0;
	int ret;

	if (img_iov_view_init(&part, iovcnt))
		return img_error(img, -ENOMEM, "out of memory");
	pthread_rwlock_rdlock(&s->layout_lock);
	while (done < len) {
		uint64_t pos = off + done;
		uint32_t e = vdi_entry(s, (uint32_t)(pos / h->block_size));
		uint64_t run = vdi_run_length(s, pos, len - done);

		ret = 0;
		switch (vdi_entry_kind(e)) {
		case VDI_KIND_DATA:
			ret = img_iov_view_set(&part, NULL, 0, iov, iovcnt,
					       done, run);
			if (ret < 0)
				goto out;
			ret = img_file_preadv(&s->file, part.iov, part.cnt,
					      vdi_slot_offset(h, e) +
						      pos % h->block_size);
			break;
		case VDI_KIND_FREE:
			if (s->is_diff) {
				ret = img_iov_view_set(&part, NULL, 0, iov,
						       iovcnt, done, run);
				if (ret < 0)
					goto out;
				ret = img_read_backing(img, pos, part.iov,
						       part.cnt, run);
				break;
			}
			/* no parent: reads as zeros */
			__attribute__((fallthrough));
		case VDI_KIND_ZERO:
			img_iov_memset(iov, iovcnt, done, 0, run);
			break;
		}
		if (ret < 0)
			goto out;
		done += run;
	}
	ret = 0;
out:
	pthread_rwlock_unlock(&s->layout_lock);
	img_iov_view_release(&part);
	return ret;
}

/* ---- writes ----------------------------------------------------------- */

static void vdi_note_modified(struct vdi_state *s)
{
	/* VirtualBox gives an image a new modification UUID on its first
	 * write after opening; children record the parent's. */
	if (__atomic_load_n(&s->modify_uuid_fresh, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&s->meta_lock);
	if (!s->modify_uuid_fresh) {
		vdi_uuid_generate(s->header.uuid_modify);
		s->header_dirty = true;
		__atomic_store_n(&s->modify_uuid_fresh, true, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&s->meta_lock);
}

/* Store a new block for virtual block `block`: part (chunk bytes at
 * in_block) over what the block read as before (parent data or zeros). */
static int vdi_block_allocate(struct img *img, struct vdi_state *s,
			      uint32_t block, uint32_t in_block,
			      const struct iovec *part, int n, size_t chunk)
{
	const struct vdi_header *h = &s->header;
	uint32_t bs = h->block_size, slot = 0, old = vdi_entry(s, block);
	uint64_t block_start = (uint64_t)block * bs, slot_start, slot_end;
	bool over_parent = old == VDI_BLOCK_FREE && s->is_diff;
	int ret;

	ret = vdi_slot_alloc(img, s, &slot);
	if (ret < 0)
		return ret;
	slot_start = h->offset_data + (uint64_t)slot * vdi_block_stride(h);
	slot_end = slot_start + vdi_block_stride(h);
	if (chunk == bs) {
		ret = img_file_pwritev(&s->file, part, n,
				       vdi_slot_offset(h, slot));
	} else if (!over_parent && slot_start >= s->file_end) {
		/* A fresh slot past the end of file reads as zeros once the
		 * file covers it: write only the data, not a zeroed block. */
		ret = img_file_pwritev(&s->file, part, n,
				       vdi_slot_offset(h, slot) + in_block);
		if (ret >= 0 &&
		    h->block_extra + in_block + chunk < vdi_block_stride(h))
			ret = img_file_truncate(&s->file, slot_end);
	} else {
		ret = vdi_block_buf(img, s);
		if (ret < 0)
			return ret;
		memset(s->block_buf, 0, bs);
		if (over_parent) {
			struct iovec base = {
				.iov_base = s->block_buf,
				.iov_len =
					vdi_min(bs, h->disk_size - block_start),
			};

			ret = img_read_backing(img, block_start, &base, 1,
					       base.iov_len);
			if (ret < 0)
				return ret;
		}
		img_iov_to_buf(part, n, 0, s->block_buf + in_block, chunk);
		ret = img_file_pwrite(&s->file, s->block_buf, bs,
				      vdi_slot_offset(h, slot));
	}
	if (ret < 0) {
		/* a failed write may still have extended the file */
		if (img_file_size(&s->file, &s->file_end) < 0)
			s->file_end = UINT64_MAX;
		return ret;
	}
	if (slot_end > s->file_end)
		s->file_end = slot_end;
	vdi_set_entry(s, block, slot);
	if (slot + 1 > s->next_slot)
		s->next_slot = slot + 1;
	s->header.blocks_allocated++;
	s->header_dirty = true;
	s->unsynced_alloc = true;
	return 0;
}

/* How many whole unallocated blocks from `block` on (the first known to
 * hold data) can take consecutive fresh slots: each covered by the write
 * and not all zeros. */
static uint32_t vdi_fresh_run(const struct vdi_state *s, uint32_t block,
			      const struct iovec *iov, int iovcnt, size_t done,
			      size_t len)
{
	const struct vdi_header *h = &s->header;
	uint32_t bs = h->block_size, count = 1;

	if (h->block_extra || s->next_slot >= h->blocks_in_image)
		return 1;
	while (done + (uint64_t)(count + 1) * bs <= len &&
	       block + count < h->blocks_in_image &&
	       s->next_slot + count < h->blocks_in_image &&
	       !VDI_BLOCK_IS_ALLOCATED(vdi_entry(s, block + count)) &&
	       !img_iov_range_is_zero(iov, iovcnt, done + (size_t)count * bs,
				      bs))
		count++;
	return count;
}

/* Store count whole blocks from `block` on in fresh consecutive slots. */
static int vdi_blocks_append(struct vdi_state *s, uint32_t block,
			     uint32_t count, const struct iovec *part, int n)
{
	const struct vdi_header *h = &s->header;
	uint32_t slot = s->next_slot;
	uint64_t end =
		h->offset_data + (uint64_t)(slot + count) * vdi_block_stride(h);
	int ret;

	ret = img_file_pwritev(&s->file, part, n, vdi_slot_offset(h, slot));
	if (ret < 0) {
		if (img_file_size(&s->file, &s->file_end) < 0)
			s->file_end = UINT64_MAX;
		return ret;
	}
	if (end > s->file_end)
		s->file_end = end;
	for (uint32_t i = 0; i < count; i++)
		vdi_set_entry(s, block + i, slot + i);
	s->next_slot = slot + count;
	s->header.blocks_allocated += count;
	s->header_dirty = true;
	s->unsynced_alloc = true;
	return 0;
}

/* Write the request's bytes from done on at pos into the block there,
 * which was not allocated when looked at; meta_lock held; part is room
 * for slices of iov.  Returns the bytes consumed
 * from the request (more than chunk when whole fresh blocks follow), 0
 * when the block turned out allocated meanwhile, or -errno. */
static int64_t vdi_write_unallocated(struct img *img, struct vdi_state *s,
				     uint64_t pos, const struct iovec *iov,
				     int iovcnt, size_t done, size_t len,
				     struct img_iov_view *part)
{
	const struct vdi_header *h = &s->header;
	uint32_t bs = h->block_size;
	uint32_t block = (uint32_t)(pos / bs);
	uint32_t in_block = (uint32_t)(pos % bs);
	uint32_t e = vdi_entry(s, block);
	uint64_t chunk = vdi_min(bs - in_block, len - done);
	int ret;

	if (VDI_BLOCK_IS_ALLOCATED(e))
		return 0;
	ret = img_iov_view_set(part, NULL, 0, iov, iovcnt, done, chunk);
	if (ret < 0)
		return ret;
	if (img_iov_is_zero(part->iov, part->cnt, chunk)) {
		bool whole = chunk == bs ||
			     (in_block == 0 && pos + chunk == h->disk_size);

		/* Zeros over a block that reads as zero: nothing to store.
		 * A whole zero block over a parent's data becomes a zero
		 * entry. */
		if (e == VDI_BLOCK_ZERO || !s->is_diff)
			return (int64_t)chunk;
		if (whole) {
			vdi_set_entry(s, block, VDI_BLOCK_ZERO);
			return (int64_t)chunk;
		}
	} else if (chunk == bs) {
		/* whole new blocks in a row: one write */
		uint32_t count =
			vdi_fresh_run(s, block, iov, iovcnt, done, len);

		if (count > 1) {
			ret = img_iov_view_set(part, NULL, 0, iov, iovcnt, done,
					       (size_t)count * bs);
			if (ret == 0)
				ret = vdi_blocks_append(s, block, count,
							part->iov, part->cnt);
			return ret < 0 ? ret : (int64_t)count * bs;
		}
	}
	ret = vdi_block_allocate(img, s, block, in_block, part->iov, part->cnt,
				 chunk);
	return ret < 0 ? ret : (int64_t)chunk;
}

static int vdi_pwritev(struct img *img, uint64_t off, const struct iovec *iov,
		       int iovcnt, size_t len)
{
	struct vdi_state *s = img_state(img);
	const struct vdi_header *h = &s->header;
	uint32_t bs = h->block_size;
	struct img_iov_view part;
	size_t done = 0;
	int ret = 0;

	if (img_iov_view_init(&part, iovcnt))
		return img_error(img, -ENOMEM, "out of memory");
	vdi_note_modified(s);
	pthread_rwlock_rdlock(&s->layout_lock);
	while (done < len) {
		uint64_t pos = off + done;
		uint32_t block = (uint32_t)(pos / bs);
		uint32_t in_block = (uint32_t)(pos % bs);
		uint32_t e = vdi_entry(s, block);
		uint64_t chunk;
		int64_t written;

		if (VDI_BLOCK_IS_ALLOCATED(e)) {
			/* overwrite in place, whole slot-contiguous runs */
			chunk = vdi_run_length(s, pos, len - done);
			ret = img_iov_view_set(&part, NULL, 0, iov, iovcnt,
					       done, chunk);
			if (ret < 0)
				goto out;
			ret = img_file_pwritev(&s->file, part.iov, part.cnt,
					       vdi_slot_offset(h, e) +
						       in_block);
			if (ret < 0)
				goto out;
			done += chunk;
			continue;
		}
		pthread_mutex_lock(&s->meta_lock);
		written = vdi_write_unallocated(img, s, pos, iov, iovcnt, done,
						len, &part);
		pthread_mutex_unlock(&s->meta_lock);
		if (written < 0) {
			ret = (int)written;
			goto out;
		}
		/* 0: allocated by a parallel write meanwhile; look again */
		done += (size_t)written;
	}
out:
	pthread_rwlock_unlock(&s->layout_lock);
	img_iov_view_release(&part);
	return ret;
}

static int vdi_compact(struct img *img, struct vdi_state *s);

/* Freed slots are reclaimed here, once per flush, so that a run of
 * discards costs one compaction. */
static int vdi_flush(struct img *img)
{
	struct vdi_state *s = img_state(img);
	int ret;

	if (!s->file.writable)
		return 0;
	if (__atomic_load_n(&s->holes, __ATOMIC_ACQUIRE)) {
		/* moves slots: no parallel request may use one meanwhile */
		pthread_rwlock_wrlock(&s->layout_lock);
		pthread_mutex_lock(&s->meta_lock);
		ret = s->holes ? vdi_compact(img, s) : vdi_commit(img, true);
		pthread_mutex_unlock(&s->meta_lock);
		pthread_rwlock_unlock(&s->layout_lock);
		return ret;
	}
	pthread_mutex_lock(&s->meta_lock);
	ret = vdi_commit(img, false);
	pthread_mutex_unlock(&s->meta_lock);
	return ret < 0 ? ret : vdi_sync(img, s);
}

/* ---- freeing blocks, reclaiming space --------------------------------- */

/* Fill holes in the data area with the last slots and truncate the file
 * (the order is described at the top). */
#define VDI_MOVE_BATCH 32

static int vdi_compact(struct img *img, struct vdi_state *s)
{
	const struct vdi_header *h = &s->header;
	uint64_t stride = vdi_block_stride(h);
	uint32_t *owner = NULL, top = s->next_slot, hole = 0;
	uint32_t batch_block[VDI_MOVE_BATCH], batch_slot[VDI_MOVE_BATCH];
	uint64_t file_size;
	int ret;

	ret = vdi_commit(img, true);
	if (ret < 0)
		return ret;
	__atomic_store_n(&s->holes, false, __ATOMIC_RELEASE);
	if (h->image_type == VDI_TYPE_FIXED &&
	    s->header.blocks_allocated == s->header.blocks_in_image &&
	    top == s->header.blocks_in_image)
		return 0;
	owner = vdi_slot_owners(img, s, top);
	if (!owner)
		return -ENOMEM;
	ret = vdi_block_buf(img, s);
	if (ret < 0)
		goto out;
	for (;;) {
		int nbatch = 0;

		while (nbatch < VDI_MOVE_BATCH) {
			uint32_t src;

			while (top > 0 && owner[top - 1] == VDI_BLOCK_FREE)
				top--;
			while (hole < top && owner[hole] != VDI_BLOCK_FREE)
				hole++;
			if (hole >= top)
				break;
			src = top - 1;
			ret = img_file_pread(&s->file, s->block_buf, stride,
					     h->offset_data + src * stride);
			if (ret >= 0)
				ret = img_file_pwrite(
					&s->file, s->block_buf, stride,
					h->offset_data + hole * stride);
			if (ret < 0)
				goto out;
			batch_block[nbatch] = owner[src];
			batch_slot[nbatch] = hole;
			nbatch++;
			owner[hole] = owner[src];
			owner[src] = VDI_BLOCK_FREE;
		}
		if (!nbatch)
			break;
		ret = vdi_sync(img, s);
		if (ret < 0)
			goto out;
		for (int i = 0; i < nbatch; i++)
			vdi_set_entry(s, batch_block[i], batch_slot[i]);
		ret = vdi_commit(img, true);
		if (ret < 0)
			goto out;
	}
	s->next_slot = top;
	ret = img_file_size(&s->file, &file_size);
	if (ret < 0)
		goto out;
	s->file_end = file_size;
	if (file_size > h->offset_data + (uint64_t)top * stride) {
		ret = img_file_truncate(
			&s->file, h->offset_data + (uint64_t)top * stride);
		if (ret >= 0)
			s->file_end = h->offset_data + (uint64_t)top * stride;
	}
out:
	free(owner);
	return ret;
}

static bool vdi_block_whole(const struct vdi_header *h, uint64_t pos,
			    uint64_t len)
{
	uint64_t block_start = pos - pos % h->block_size;
	uint64_t block_end = vdi_min(block_start + h->block_size, h->disk_size);

	return pos == block_start && pos + len >= block_end;
}

/* Drop the data of a block: entry becomes `entry` (FREE or ZERO). */
static void vdi_block_release(struct vdi_state *s, uint32_t block,
			      uint32_t entry)
{
	if (VDI_BLOCK_IS_ALLOCATED(s->bmap[block]))
		s->header.blocks_allocated--;
	vdi_set_entry(s, block, entry);
	s->header_dirty = true;
}

static int vdi_discard(struct img *img, uint64_t off, uint64_t len)
{
	struct vdi_state *s = img_state(img);
	const struct vdi_header *h = &s->header;
	uint32_t bs = h->block_size;
	bool freed = false;
	uint64_t done = 0;

	/* A fixed image keeps every block; discard is advisory. */
	if (h->image_type == VDI_TYPE_FIXED)
		return 0;
	while (done < len) {
		uint64_t pos = off + done;
		uint32_t block = (uint32_t)(pos / bs);
		uint64_t chunk = vdi_min(bs - pos % bs, len - done);

		if (vdi_block_whole(h, pos, chunk) &&
		    s->bmap[block] != VDI_BLOCK_FREE) {
			vdi_note_modified(s);
			vdi_block_release(s, block, VDI_BLOCK_FREE);
			freed = true;
		}
		done += chunk;
	}
	if (freed)
		__atomic_store_n(&s->holes, true, __ATOMIC_RELEASE);
	return 0;
}

static int vdi_write_zeroes(struct img *img, uint64_t off, uint64_t len,
			    unsigned flags)
{
	struct vdi_state *s = img_state(img);
	const struct vdi_header *h = &s->header;
	uint32_t bs = h->block_size;
	bool fixed = h->image_type == VDI_TYPE_FIXED, freed = false;
	uint64_t done = 0;
	int ret = 0;

	vdi_note_modified(s);
	while (done < len) {
		uint64_t pos = off + done;
		uint32_t block = (uint32_t)(pos / bs);
		uint32_t in_block = (uint32_t)(pos % bs);
		uint64_t chunk = vdi_min(bs - in_block, len - done);
		uint32_t e = s->bmap[block];
		bool whole = vdi_block_whole(h, pos, chunk);

		if (VDI_BLOCK_IS_ALLOCATED(e)) {
			if (whole && !fixed && (flags & IMG_ZERO_MAY_UNMAP)) {
				vdi_block_release(s, block,
						  s->is_diff ? VDI_BLOCK_ZERO
							     : VDI_BLOCK_FREE);
				freed = true;
			} else {
				ret = img_file_zero_range(
					&s->file,
					vdi_slot_offset(h, e) + in_block,
					chunk);
			}
		} else if (e == VDI_BLOCK_FREE && s->is_diff) {
			if (whole) {
				vdi_set_entry(s, block, VDI_BLOCK_ZERO);
			} else {
				/* part of a block over the parent: store it */
				ret = vdi_block_buf(img, s);
				if (ret >= 0) {
					struct iovec zero_part;

					/* block_allocate copies part into
					 * block_buf; zeros come from a
					 * separate calloc to not alias */
					void *zeros = calloc(1, chunk);

					if (!zeros)
						return img_error(
							img, -ENOMEM,
							"out of memory");
					zero_part.iov_base = zeros;
					zero_part.iov_len = chunk;
					ret = vdi_block_allocate(img, s, block,
								 in_block,
								 &zero_part, 1,
								 chunk);
					free(zeros);
				}
			}
		}
		if (ret < 0)
			return ret;
		done += chunk;
	}
	if (freed)
		__atomic_store_n(&s->holes, true, __ATOMIC_RELEASE);
	return 0;
}

/* ---- block status ----------------------------------------------------- */

static int vdi_block_status(struct img *img, uint64_t off, uint64_t len,
			    struct img_extent *ext)
{
	struct vdi_state *s = img_state(img);
	const struct vdi_header *h = &s->header;
	uint32_t e = vdi_entry(s, (uint32_t)(off / h->block_size));

	ext->start = off;
	ext->length = vdi_run_length(s, off, len);
	ext->file_offset = -1;
	switch (vdi_entry_kind(e)) {
	case VDI_KIND_DATA:
		ext->flags = IMG_EXTENT_DATA | IMG_EXTENT_ALLOCATED;
		ext->depth = 0;
		ext->file_offset =
			(int64_t)(vdi_slot_offset(h, e) + off % h->block_size);
		break;
	case VDI_KIND_ZERO:
		ext->flags = IMG_EXTENT_ZERO | IMG_EXTENT_ALLOCATED;
		ext->depth = 0;
		break;
	case VDI_KIND_FREE:
		ext->flags = s->is_diff ? 0 : IMG_EXTENT_ZERO;
		ext->depth = -1;
		break;
	}
	return 0;
}

/* ---- resize ----------------------------------------------------------- */

/* Move the data in slots [0, k) elsewhere so that the block map can take
 * their room (old layout, synced, before the header changes). */
static int vdi_clear_first_slots(struct img *img, struct vdi_state *s,
				 uint32_t k)
{
	const struct vdi_header *h = &s->header;
	uint64_t stride = vdi_block_stride(h);
	uint32_t *owner, dest, limit = k < s->next_slot ? k : s->next_slot;
	bool moved = false;
	int ret;

	owner = vdi_slot_owners(img, s, s->next_slot);
	if (!owner)
		return -ENOMEM;
	ret = vdi_block_buf(img, s);
	if (ret < 0)
		goto out;
	dest = s->next_slot > k ? s->next_slot : k;
	for (uint32_t j = 0; j < limit; j++) {
		if (owner[j] == VDI_BLOCK_FREE)
			continue;
		ret = img_file_pread(&s->file, s->block_buf, stride,
				     h->offset_data + j * stride);
		if (ret >= 0)
			ret = img_file_pwrite(&s->file, s->block_buf, stride,
					      h->offset_data + dest * stride);
		if (ret < 0)
			goto out;
		s->bmap[owner[j]] = dest;
		vdi_mark_dirty(s, owner[j]);
		dest++;
		if (h->offset_data + dest * stride > s->file_end)
			s->file_end = h->offset_data + dest * stride;
		moved = true;
	}
	if (moved) {
		s->next_slot = dest;
		s->unsynced_alloc = true;
		ret = vdi_commit(img, true);
	}
out:
	free(owner);
	return ret;
}

static int vdi_grow(struct img *img, struct vdi_state *s, uint64_t new_size)
{
	struct vdi_header nh = s->header;
	const struct vdi_header *h = &s->header;
	uint64_t stride = vdi_block_stride(h);
	uint64_t nblocks = (new_size + h->block_size - 1) / h->block_size;
	uint32_t old_blocks = h->blocks_in_image, shift = 0, *map;
	bool fixed = h->image_type == VDI_TYPE_FIXED;
	bool moved_map = false;
	int ret;

	if (nblocks > VDI_MAX_BLOCKS)
		return img_error(img, -EFBIG, "size %llu needs too many blocks",
				 (unsigned long long)new_size);
	/* Data past the old end in the old last block must read as zero. */
	if (h->disk_size % h->block_size && old_blocks &&
	    VDI_BLOCK_IS_ALLOCATED(s->bmap[old_blocks - 1])) {
		uint32_t tail = (uint32_t)(h->disk_size % h->block_size);

		ret = img_file_zero_range(
			&s->file,
			vdi_slot_offset(h, s->bmap[old_blocks - 1]) + tail,
			h->block_size - tail);
		if (ret < 0)
			return ret;
	}
	if (nblocks * 4 > (uint64_t)h->offset_data - h->offset_bmap) {
		/* The new map goes where the first data slots were. */
		uint64_t k = (nblocks * 4 + stride - 1) / stride;

		if (h->offset_data + k * stride > UINT32_MAX)
			return img_error(img, -EFBIG,
					 "the block map for %llu blocks does "
					 "not fit a VDI header",
					 (unsigned long long)nblocks);
		ret = vdi_clear_first_slots(img, s, (uint32_t)k);
		if (ret < 0)
			return ret;
		shift = (uint32_t)k;
		nh.offset_bmap = h->offset_data;
		nh.offset_data = (uint32_t)(h->offset_data + k * stride);
		moved_map = true;
	}
	map = malloc((size_t)(nblocks + 1) * sizeof(*map));
	if (!map)
		return img_error(img, -ENOMEM, "out of memory for the map");
	for (uint32_t b = 0; b < nblocks; b++) {
		uint32_t e = b < old_blocks ? s->bmap[b] : VDI_BLOCK_FREE;

		map[b] = VDI_BLOCK_IS_ALLOCATED(e) ? e - shift : e;
	}
	if (s->next_slot < shift)
		s->next_slot = shift;
	s->next_slot -= shift;
	if (fixed) {
		uint32_t slot = s->next_slot;

		for (uint32_t b = old_blocks; b < nblocks; b++)
			map[b] = slot++;
		ret = img_file_truncate(
			&s->file, nh.offset_data + (uint64_t)slot * stride);
		if (ret < 0)
			goto fail;
		nh.blocks_allocated += (uint32_t)(nblocks - old_blocks);
	}
	ret = vdi_bmap_write(s, map, nh.offset_bmap, moved_map ? 0 : old_blocks,
			     (uint32_t)nblocks);
	if (ret >= 0)
		ret = vdi_sync(img, s);
	if (ret < 0)
		goto fail;
	nh.disk_size = new_size;
	nh.blocks_in_image = (uint32_t)nblocks;
	ret = vdi_header_write(s, &nh);
	if (ret >= 0)
		ret = vdi_sync(img, s);
	if (ret < 0)
		goto fail;
	if (fixed)
		s->next_slot += (uint32_t)(nblocks - old_blocks);
	/* size unknown: treat every slot as possibly holding old bytes,
	 * which only costs full-block writes */
	if (img_file_size(&s->file, &s->file_end) < 0)
		s->file_end = UINT64_MAX;
	free(s->bmap);
	s->bmap = map;
	s->header = nh;
	img_set_size(img, new_size);
	return 0;
fail:
	/* The on-disk header still describes the old layout. */
	s->next_slot += shift;
	free(map);
	return ret;
}

static int vdi_resize(struct img *img, uint64_t new_size, unsigned flags)
{
	struct vdi_state *s = img_state(img);
	struct vdi_header *h = &s->header;
	uint64_t nblocks;
	int ret;

	if (new_size % VDI_SECTOR_SIZE)
		new_size += VDI_SECTOR_SIZE - new_size % VDI_SECTOR_SIZE;
	if (new_size < h->disk_size && !(flags & IMG_RESIZE_SHRINK))
		return img_error(img, -EINVAL,
				 "shrinking from %llu to %llu bytes would drop "
				 "data; ask for a shrink explicitly",
				 (unsigned long long)h->disk_size,
				 (unsigned long long)new_size);
	vdi_note_modified(s);
	ret = vdi_commit(img, true);
	if (ret < 0)
		return ret;
	if (new_size >= h->disk_size)
		return vdi_grow(img, s, new_size);

	nblocks = (new_size + h->block_size - 1) / h->block_size;
	for (uint32_t b = (uint32_t)nblocks; b < h->blocks_in_image; b++)
		if (s->bmap[b] != VDI_BLOCK_FREE)
			vdi_block_release(s, b, VDI_BLOCK_FREE);
	h->disk_size = new_size;
	h->blocks_in_image = (uint32_t)nblocks;
	s->header_dirty = true;
	img_set_size(img, new_size);
	/* entries first, then the header that drops them, then the space */
	return vdi_compact(img, s);
}

/* ---- check ------------------------------------------------------------ */

static int vdi_check(struct img *img, struct img_check_result *res,
		     unsigned fix)
{
	struct vdi_state *s = img_state(img);
	struct vdi_header *h = &s->header;
	uint64_t file_size, nslots, max_slots, used_top = 0;
	uint32_t *owner = NULL, allocated = 0, past_eof = 0, shared = 0;
	uint32_t prev_slot = VDI_BLOCK_FREE;
	uint64_t leaks = 0;
	int ret;

	if (s->file.writable) {
		ret = vdi_commit(img, true);
		if (ret < 0)
			return ret;
	}
	ret = img_file_size(&s->file, &file_size);
	if (ret < 0)
		return ret;
	nslots = vdi_file_slots(h, file_size);
	max_slots = file_size > h->offset_data
			    ? (file_size - h->offset_data) / vdi_block_stride(h)
			    : 0;
	if (nslots > VDI_BLOCK_ZERO) {
		res->check_errors++;
		img_check_note(res, "data area too large to check");
		return 0;
	}
	owner = malloc((nslots + 1) * sizeof(*owner));
	if (!owner)
		return img_error(img, -ENOMEM, "out of memory");
	memset(owner, 0xff, (nslots + 1) * sizeof(*owner));

	for (uint32_t b = 0; b < h->blocks_in_image; b++) {
		uint32_t e = s->bmap[b];

		if (!VDI_BLOCK_IS_ALLOCATED(e))
			continue;
		if (e >= max_slots) {
			res->corruptions++;
			past_eof++;
			img_check_note(res,
				       "ERROR block %u: data slot %u lies past "
				       "the end of file",
				       b, e);
			if (fix & IMG_CHECK_FIX_ERRORS) {
				/* its data never reached the file */
				vdi_set_entry(s, b, VDI_BLOCK_FREE);
				res->corruptions_fixed++;
			}
			continue;
		}
		if (owner[e] != VDI_BLOCK_FREE) {
			res->corruptions++;
			shared++;
			img_check_note(res,
				       "ERROR blocks %u and %u share data slot "
				       "%u (cannot repair safely)",
				       owner[e], b, e);
			continue;
		}
		owner[e] = b;
		allocated++;
		if (e >= h->blocks_in_image)
			img_check_note(
				res,
				"block %u is stored in slot %u, past the "
				"block count (readable; qemu-img check "
				"calls it corrupt)",
				b, e);
		if (e + 1 > used_top)
			used_top = e + 1;
		if (prev_slot != VDI_BLOCK_FREE && e != prev_slot + 1)
			res->fragmented_clusters++;
		prev_slot = e;
	}
	for (uint64_t i = 0; i < nslots; i++) {
		if (owner[i] == VDI_BLOCK_FREE) {
			leaks++;
			if (leaks <= 8)
				img_check_note(
					res,
					"Leaked data slot %llu (file "
					"offset %llu)",
					(unsigned long long)i,
					(unsigned long long)(h->offset_data +
							     i * vdi_block_stride(
									 h)));
		}
	}
	if (h->image_type == VDI_TYPE_FIXED && allocated != h->blocks_in_image)
		img_check_note(res, "fixed image has %u of %u blocks allocated",
			       allocated, h->blocks_in_image);
	/* A crash between the map and the header leaves the count stale;
	 * nothing reads it, so it is leak-class, repaired with the leaks. */
	if (h->blocks_allocated != allocated) {
		res->leaks++;
		img_check_note(res,
			       "Leak: header counts %u allocated blocks, the "
			       "block map %u",
			       h->blocks_allocated, allocated);
		if (fix & IMG_CHECK_FIX_LEAKS) {
			h->blocks_allocated = allocated;
			s->header_dirty = true;
			res->leaks_fixed++;
		}
	}
	res->leaks += leaks;
	res->allocated_clusters = allocated;
	res->total_clusters = h->blocks_in_image;
	res->image_end_offset = h->offset_data + used_top * vdi_block_stride(h);

	if (!fix)
		goto out;
	s->next_slot = (uint32_t)used_top;
	if ((fix & IMG_CHECK_FIX_LEAKS) && leaks) {
		if (shared) {
			img_check_note(res, "leaks not repaired: blocks share "
					    "slots");
		} else {
			ret = vdi_compact(img, s);
			if (ret < 0)
				goto out;
			res->leaks_fixed += leaks;
			res->image_end_offset =
				h->offset_data +
				(uint64_t)s->next_slot * vdi_block_stride(h);
		}
	}
	ret = vdi_commit(img, true);
out:
	free(owner);
	(void)past_eof;
	return ret < 0 ? ret : 0;
}

/* ---- description, chains ---------------------------------------------- */

static int vdi_get_info(struct img *img, struct img_info *info)
{
	struct vdi_state *s = img_state(img);
	const struct vdi_header *h = &s->header;
	char uuid[37];

	/* blocks_allocated and the modification UUID change under it */
	pthread_mutex_lock(&s->meta_lock);
	snprintf(info->subformat, sizeof(info->subformat), "%s",
		 vdi_type_name(h->image_type));
	info->cluster_size = h->block_size;
	if (h->lchs_cylinders && h->lchs_heads && h->lchs_sectors) {
		info->geometry.cylinders = h->lchs_cylinders;
		info->geometry.heads = h->lchs_heads;
		info->geometry.sectors = h->lchs_sectors;
	} else if (h->legacy_cylinders && h->legacy_heads &&
		   h->legacy_sectors) {
		info->geometry.cylinders = h->legacy_cylinders;
		info->geometry.heads = h->legacy_heads;
		info->geometry.sectors = h->legacy_sectors;
	}
	vdi_uuid_to_text(h->uuid_create, info->uuid);
	if (s->is_diff)
		vdi_uuid_to_text(h->uuid_link, info->parent_uuid);
	img_info_add_file(info, img_filename(img));

	img_info_add_str(info, "image-type", vdi_type_name(h->image_type));
	img_info_add_int(info, "block-size", h->block_size);
	img_info_add_int(info, "blocks-total", h->blocks_in_image);
	img_info_add_int(info, "blocks-allocated", h->blocks_allocated);
	img_info_add_int(info, "header-size", h->header_size);
	img_info_add_int(info, "block-map-offset", h->offset_bmap);
	img_info_add_int(info, "data-offset", h->offset_data);
	if (h->block_extra)
		img_info_add_int(info, "block-extra", h->block_extra);
	vdi_uuid_to_text(h->uuid_modify, uuid);
	img_info_add_str(info, "modification-uuid", uuid);
	if (s->is_diff) {
		img_info_add_str(info, "parent-uuid", info->parent_uuid);
		vdi_uuid_to_text(h->uuid_parent_modify, uuid);
		img_info_add_str(info, "parent-modification-uuid", uuid);
	}
	if (h->description[0])
		img_info_add_str(info, "description", h->description);
	pthread_mutex_unlock(&s->meta_lock);
	return 0;
}

/* VirtualBox links a child to its parent by the parent's creation UUID;
 * the parent-modification UUID goes stale whenever the parent is written
 * and VirtualBox does not hold it against the chain, nor do we. */
static int vdi_backing_matches(struct img *img, struct img *parent)
{
	struct vdi_state *s = img_state(img);
	const struct vdi_state *p = vdi_parent_state(parent);
	char want[37], got[37];

	vdi_uuid_to_text(s->header.uuid_link, want);
	if (!p)
		return img_error(img, -ESTALE,
				 "parent %s is not a VDI image (want UUID %s)",
				 img_filename(parent), want);
	if (memcmp(p->header.uuid_create, s->header.uuid_link, 16)) {
		vdi_uuid_to_text(p->header.uuid_create, got);
		return img_error(img, -ESTALE,
				 "parent %s has UUID %s, the image wants %s",
				 img_filename(parent), got, want);
	}
	return 0;
}

static int vdi_set_backing(struct img *img, const char *backing_file,
			   const char *backing_format, struct img *parent)
{
	struct vdi_state *s = img_state(img);
	struct vdi_header nh = s->header;
	const struct vdi_state *p;
	int ret;

	(void)backing_file;
	if (backing_format && strcmp(backing_format, "vdi"))
		return img_error(img, -ENOTSUP,
				 "a VDI parent must be a VDI image, not %s",
				 backing_format);
	if (!parent && backing_file)
		return img_error(img, -EINVAL,
				 "VDI records its parent by UUID: the parent "
				 "must be opened");
	if (parent) {
		p = vdi_parent_state(parent);
		if (!p)
			return img_error(img, -ENOTSUP,
					 "a VDI parent must be a VDI image "
					 "(%s is not)",
					 img_filename(parent));
		if (nh.image_type == VDI_TYPE_FIXED)
			return img_error(img, -ENOTSUP,
					 "a fixed VDI cannot have a parent");
		nh.image_type = VDI_TYPE_DIFF;
		memcpy(nh.uuid_link, p->header.uuid_create, 16);
		memcpy(nh.uuid_parent_modify, p->header.uuid_modify, 16);
	} else {
		if (nh.image_type == VDI_TYPE_DIFF)
			nh.image_type = VDI_TYPE_NORMAL;
		memset(nh.uuid_link, 0, 16);
		memset(nh.uuid_parent_modify, 0, 16);
	}
	ret = vdi_commit(img, true);
	if (ret < 0)
		return ret;
	ret = vdi_header_write(s, &nh);
	if (ret >= 0)
		ret = vdi_sync(img, s);
	if (ret < 0)
		return ret;
	s->header = nh;
	s->is_diff = nh.image_type == VDI_TYPE_DIFF;
	return 0;
}

const struct img_driver img_driver_vdi = {
	.name = "vdi",
	.description = "VirtualBox Disk Image 1.1 (dynamic, fixed, diff)",
	.flags = IMG_DRV_CONCURRENT_READS | IMG_DRV_PARALLEL_RW,
	.state_size = sizeof(struct vdi_state),
	.create_options = vdi_create_options,
	.probe = vdi_probe,
	.create = vdi_create,
	.open = vdi_open,
	.close = vdi_close,
	.preadv = vdi_preadv,
	.pwritev = vdi_pwritev,
	.flush = vdi_flush,
	.write_zeroes = vdi_write_zeroes,
	.discard = vdi_discard,
	.block_status = vdi_block_status,
	.resize = vdi_resize,
	.check = vdi_check,
	.get_info = vdi_get_info,
	.backing_matches = vdi_backing_matches,
	.set_backing = vdi_set_backing,
};
