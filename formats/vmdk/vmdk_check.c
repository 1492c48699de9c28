/* SPDX-License-Identifier: MIT */
/*
 * VMDK check and repair.  Per sparse extent: grain directory entries and
 * grain-table entries inside the file and outside the header/metadata
 * area, the redundant directory and tables equal to the primary ones,
 * no two grains sharing host sectors, every compressed grain inflating,
 * and no leaked space (sectors after the metadata that nothing points
 * to).  Per image: each extent as long as the descriptor says, and the
 * unclean-shutdown flag.
 *
 * Repairs (IMG_CHECK_FIX_ERRORS): bad entries are cleared (the redundant
 * copy is used when it is good), the redundant copies are rewritten from
 * the primary, a grain shared by two entries is copied so each has its
 * own, short flat extents are extended, a sparse header smaller than its
 * descriptor extent is grown.  IMG_CHECK_FIX_LEAKS: leaked space at the
 * end is truncated, leaked space inside is punched out of the host file.
 */
#include "vmdk_priv.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct interval {
	uint64_t start; /* sector */
	uint64_t len;	/* sectors */
	uint64_t owner; /* grain index, OWNER_RGT(t) or OWNER_META */
};

#define OWNER_META UINT64_MAX
#define OWNER_RGT(t) ((UINT64_C(1) << 62) | (t))
#define IS_RGT(o) ((o) >> 62 == 1)

struct intervals {
	struct interval *v;
	size_t n, cap;
};

static int iv_add(struct intervals *l, uint64_t start, uint64_t len,
		  uint64_t owner)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 1024;
		struct interval *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (struct interval){ start, len, owner };
	return 0;
}

static int iv_cmp(const void *a, const void *b)
{
	const struct interval *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->owner < y->owner ? -1 : x->owner > y->owner;
}

static bool gt_in_file(const struct vmdk_extent *e, uint32_t sector)
{
	uint64_t gt_bytes = (uint64_t)e->gtes_per_gt * 4;

	return sector &&
	       (uint64_t)sector * VMDK_SECTOR + gt_bytes <= e->file_size;
}

static bool grain_ok(const struct vmdk_extent *e, uint64_t g, uint32_t gte,
		     uint64_t meta_end, uint64_t total)
{
	return gte > VMDK_GTE_ZERO && g < total && gte >= meta_end &&
	       ((uint64_t)gte + e->grain_sectors) * VMDK_SECTOR <=
		       ((e->file_size + VMDK_SECTOR - 1) & ~(uint64_t)511);
}

/* Space nothing points to that is a hole or reads as zeros (a repair
 * punched it out and zeroed the edges the file system kept) is not a
 * leak any more. */
static bool is_free(struct vmdk_extent *e, uint64_t sector, uint64_t count)
{
	uint64_t off = sector * VMDK_SECTOR, end = off + count * VMDK_SECTOR;
	uint8_t *buf = NULL;
	bool free_space = true;

	while (off < end && free_space) {
		bool data;
		uint64_t run;

		if (img_file_extent(e->file, off, end - off, &data, &run) ||
		    !run) {
			free_space = false;
			break;
		}
		if (data) {
			uint64_t n = run < (1u << 20) ? run : (1u << 20);

			if (!buf)
				buf = malloc(1u << 20);
			if (!buf ||
			    img_file_pread_zero_eof(e->file, buf, n, off) ||
			    !img_buf_is_zero(buf, n))
				free_space = false;
			run = n;
		}
		off += run;
	}
	free(buf);
	return free_space;
}

/* Gives the space back: a hole where the file system can, zeros around. */
static int release(struct vmdk_extent *e, uint64_t sector, uint64_t count)
{
	int ret = img_file_punch_hole(e->file, sector * VMDK_SECTOR,
				      count * VMDK_SECTOR);

	if (ret && ret != -EOPNOTSUPP)
		return ret;
	if (!is_free(e, sector, count))
		ret = img_file_zero_range(e->file, sector * VMDK_SECTOR,
					  count * VMDK_SECTOR);
	else
		ret = 0;
	vmdk_note_data_written(e);
	return ret;
}

/* Gives the grain of entry g a fresh copy at the end of the file. */
static int copy_grain(struct img *img, struct vmdk_extent *e, uint64_t g,
		      uint32_t from)
{
	uint64_t bytes = (uint64_t)e->grain_sectors * VMDK_SECTOR;
	uint8_t *buf = malloc(bytes);
	uint32_t *gt;
	int ret;

	if (!buf)
		return -ENOMEM;
	ret = img_file_pread_zero_eof(e->file, buf, bytes,
				      (uint64_t)from * VMDK_SECTOR);
	if (!ret)
		ret = img_file_pwrite(e->file, buf, bytes,
				      e->next_sector * VMDK_SECTOR);
	free(buf);
	if (ret)
		return vmdk_io_error(img, ret, "%s: cannot copy grain %" PRIu64,
				     e->path, g);
	ret = vmdk_gt_load(img, e, (uint32_t)(g / e->gtes_per_gt), &gt);
	if (ret)
		return ret;
	gt[g % e->gtes_per_gt] = (uint32_t)e->next_sector;
	e->gt_dirty[g / e->gtes_per_gt] = 1;
	e->next_sector += e->grain_sectors;
	e->file_size = e->next_sector * VMDK_SECTOR;
	vmdk_note_data_written(e);
	return 0;
}

/* The directories.  The driver writes the primary copy of any table
 * first, so a crash can leave the redundant copy behind (an entry still 0):
 * that is leak-class, repaired with the leaks.  Anything else is a
 * corruption. */
static int check_directories(struct vmdk_extent *e, int idx,
			     struct img_check_result *res, bool fix_err,
			     bool fix_leaks)
{
	uint32_t t;

	for (t = 0; t < e->gd_entries; t++) {
		bool good = !e->gd[t] || gt_in_file(e, e->gd[t]);
		bool rgood = !e->rgd || !e->rgd[t] || gt_in_file(e, e->rgd[t]);

		if (!good) {
			res->corruptions++;
			img_check_note(res,
				       "extent %d: grain directory entry %u "
				       "(sector %u) points past the end of the "
				       "file",
				       idx, t, e->gd[t]);
			if (fix_err) {
				e->gd[t] = e->rgd && rgood ? e->rgd[t] : 0;
				if (e->rgd)
					e->rgd[t] = 0;
				e->gd_dirty = true;
				res->corruptions_fixed++;
			}
			continue;
		}
		if (!e->rgd)
			continue;
		if (!rgood) {
			res->corruptions++;
			img_check_note(res,
				       "extent %d: redundant grain directory "
				       "entry %u (sector %u) points past the "
				       "end of the file",
				       idx, t, e->rgd[t]);
			if (fix_err) {
				e->rgd[t] = 0;
				e->gd_dirty = true;
				res->corruptions_fixed++;
			}
		} else if (e->gd[t] && !e->rgd[t]) {
			res->leaks++;
			img_check_note(res,
				       "extent %d: redundant grain directory "
				       "entry %u lags the primary (interrupted "
				       "update)",
				       idx, t);
			if (fix_leaks)
				res->leaks_fixed++; /* add_missing_redundant */
		} else if (!e->gd[t] && e->rgd[t]) {
			res->corruptions++;
			img_check_note(res,
				       "extent %d: grain directory entry %u is "
				       "0 but the redundant one is %u",
				       idx, t, e->rgd[t]);
			if (fix_err) {
				/* The redundant table knows grains: adopt
				 * it; a new redundant copy is appended. */
				e->gd[t] = e->rgd[t];
				e->rgd[t] = 0;
				e->gd_dirty = true;
				res->corruptions_fixed++;
			}
		}
	}
	return 0;
}

/* Appends a redundant table for every primary one that lacks it. */
static int add_missing_redundant(struct vmdk_extent *e)
{
	uint64_t gt_sectors = vmdk_gt_sectors(e->gtes_per_gt);
	uint32_t t;

	if (!e->rgd)
		return 0;
	for (t = 0; t < e->gd_entries; t++) {
		if (!e->gd[t] || e->rgd[t])
			continue;
		e->rgd[t] = (uint32_t)e->next_sector;
		e->next_sector += gt_sectors;
		e->file_size = e->next_sector * VMDK_SECTOR;
		e->gt_dirty[t] = 1; /* write_gt fills both copies */
		e->gd_dirty = true;
	}
	return 0;
}

static bool entry_ok(const struct vmdk_extent *e, uint64_t g, uint32_t gte,
		     uint64_t meta_end, uint64_t total)
{
	return !gte || (gte == VMDK_GTE_ZERO && e->zero_grain) ||
	       grain_ok(e, g, gte, meta_end, total);
}

/* The redundant table differs where it lags the primary (a crash between
 * the two writes): leak-class, the redundant copy is rewritten.  Entries
 * whose primary is bad are corruptions, handled with the entries. */
static int compare_redundant(struct vmdk_extent *e, int idx, uint32_t t,
			     const uint32_t *gt, const uint32_t *rgt,
			     uint64_t meta_end, uint64_t total,
			     struct img_check_result *res, unsigned fix)
{
	uint32_t j, lag = 0, first = 0;

	for (j = 0; j < e->gtes_per_gt; j++) {
		uint64_t g = (uint64_t)t * e->gtes_per_gt + j;

		if (rgt[j] == gt[j] || !entry_ok(e, g, gt[j], meta_end, total))
			continue;
		if (!lag++)
			first = j;
	}
	if (!lag)
		return 0;
	res->leaks++;
	img_check_note(res,
		       "extent %d: redundant grain table %u lags the primary "
		       "in %u entries (first %u)",
		       idx, t, lag, first);
	if (fix) {
		e->gt_dirty[t] = 1;
		res->leaks_fixed++;
	}
	return 0;
}

/* a overlaps p (sorted by start).  A redundant table in the way gets a
 * new place, a grain gets its own copy; other metadata is reported. */
static int fix_overlap(struct img *img, struct vmdk_extent *e, int idx,
		       const struct interval *a, const struct interval *p,
		       struct img_check_result *res, bool fix_err)
{
	int ret;

	res->corruptions++;
	img_check_note(res,
		       "extent %d: data at sector %" PRIu64 " is used twice "
		       "(%s %" PRIu64 ")",
		       idx, a->start,
		       a->owner >= OWNER_RGT(0) ? "metadata" : "grain",
		       a->owner >= OWNER_RGT(0) ? p->start : a->owner);
	if (!fix_err)
		return 0;
	if (IS_RGT(a->owner)) {
		e->rgd[a->owner & 0xffffffffu] = 0; /* re-added at the end */
		e->gd_dirty = true;
		res->corruptions_fixed++;
	} else if (a->owner < OWNER_RGT(0) && !e->compressed) {
		ret = copy_grain(img, e, a->owner, (uint32_t)a->start);
		if (ret)
			return ret;
		res->corruptions_fixed++;
	}
	return 0;
}

static int check_sparse(struct img *img, struct vmdk_extent *e, int idx,
			struct img_check_result *res, unsigned fix)
{
	bool fix_err = fix & IMG_CHECK_FIX_ERRORS;
	uint64_t gt_sectors = vmdk_gt_sectors(e->gtes_per_gt);
	uint64_t file_sectors = (e->file_size + VMDK_SECTOR - 1) / VMDK_SECTOR;
	uint64_t meta_end = e->header.overhead;
	uint64_t gbytes = (uint64_t)e->grain_sectors * VMDK_SECTOR;
	uint64_t total =
		(e->header.capacity + e->grain_sectors - 1) / e->grain_sectors;
	struct intervals l = { 0 };
	uint32_t *rgt = NULL, t, j;
	bool have_rgt;
	uint8_t *grain = NULL;
	uint64_t prev_host = 0, i;
	int ret;

	if (!meta_end)
		meta_end = 1;
	res->total_clusters += total;
	ret = check_directories(e, idx, res, fix_err,
				fix & IMG_CHECK_FIX_LEAKS);
	if (ret)
		return ret;
	rgt = malloc((size_t)e->gtes_per_gt * 4);
	grain = malloc(gbytes);
	if (!rgt || !grain) {
		ret = -ENOMEM;
		goto out;
	}
	/* Everything with a place in the file, metadata too, so that a table
	 * pointing into the header, the descriptor or another table shows
	 * up as an overlap. */
	{
		uint64_t head = 1, gds = vmdk_gd_sectors(e->gd_entries);
		uint64_t mk = e->markers ? 1 : 0;

		if (e->header.desc_offset)
			head = e->header.desc_offset + e->header.desc_size;
		ret = iv_add(&l, 0, head, OWNER_META);
		if (!ret && e->gd_offset > mk)
			ret = iv_add(&l, e->gd_offset - mk, gds + mk,
				     OWNER_META);
		if (!ret && e->rgd)
			ret = iv_add(&l, e->rgd_offset, gds, OWNER_META);
		if (ret)
			goto out;
	}
	for (t = 0; t < e->gd_entries; t++) {
		uint32_t *gt;

		if (!e->gd[t] || !gt_in_file(e, e->gd[t]))
			continue;
		ret = vmdk_gt_load(img, e, t, &gt);
		if (ret)
			goto out;
		ret = iv_add(&l, e->gd[t] - (e->markers ? 1 : 0),
			     gt_sectors + (e->markers ? 1 : 0), OWNER_META);
		if (!ret && e->rgd && e->rgd[t])
			ret = iv_add(&l, e->rgd[t], gt_sectors, OWNER_RGT(t));
		if (ret)
			goto out;
		have_rgt = false;
		if (e->rgd && e->rgd[t] && gt_in_file(e, e->rgd[t])) {
			ret = img_file_pread(e->file, rgt,
					     (size_t)e->gtes_per_gt * 4,
					     (uint64_t)e->rgd[t] * VMDK_SECTOR);
			if (ret) {
				res->check_errors++;
				ret = 0;
			} else {
				have_rgt = true;
				for (j = 0; j < e->gtes_per_gt; j++)
					rgt[j] = IMG_LE32(rgt[j]);
				ret = compare_redundant(e, idx, t, gt, rgt,
							meta_end, total, res,
							fix);
				if (ret)
					goto out;
			}
		}
		for (j = 0; j < e->gtes_per_gt; j++) {
			uint64_t g = (uint64_t)t * e->gtes_per_gt + j;
			uint32_t gte = gt[j];
			bool bad = false;

			if (!gte || (gte == VMDK_GTE_ZERO && e->zero_grain))
				continue;
			if (g >= total) {
				bad = true;
				img_check_note(
					res,
					"extent %d: grain table %u entry "
					"%u lies beyond the capacity",
					idx, t, j);
			} else if (e->compressed) {
				struct vmdk_grain_marker m;

				if (vmdk_read_compressed_grain(img, e, gte, g,
							       grain)) {
					res->corruptions++;
					img_check_note(res, "%s",
						       img_errmsg(img));
					continue;
				}
				ret = img_file_pread(e->file, &m, sizeof(m),
						     (uint64_t)gte *
							     VMDK_SECTOR);
				if (ret)
					goto out;
				ret = iv_add(&l, gte,
					     (sizeof(m) + IMG_LE32(m.size) +
					      VMDK_SECTOR - 1) /
						     VMDK_SECTOR,
					     g);
				if (ret)
					goto out;
				res->allocated_clusters++;
				continue;
			} else if (gte < meta_end ||
				   (uint64_t)gte + e->grain_sectors >
					   file_sectors) {
				bad = true;
				img_check_note(
					res,
					"extent %d: grain table %u entry "
					"%u points to sector %u, outside "
					"the data area",
					idx, t, j, gte);
			}
			if (bad) {
				res->corruptions++;
				if (!fix_err)
					continue;
				e->gt_dirty[t] = 1;
				res->corruptions_fixed++;
				if (!have_rgt ||
				    !grain_ok(e, g, rgt[j], meta_end, total)) {
					gt[j] = 0;
					continue;
				}
				/* The redundant table still knows the grain. */
				gt[j] = rgt[j];
				gte = gt[j];
			}
			res->allocated_clusters++;
			if (prev_host && gte != prev_host + e->grain_sectors)
				res->fragmented_clusters++;
			prev_host = gte;
			ret = iv_add(&l, gte, e->grain_sectors, g);
			if (ret)
				goto out;
		}
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), iv_cmp);

	/* Overlaps, then leaks: the gaps after the overhead. */
	{
		uint64_t covered = 0, from, gap, n;

		for (i = 0; i < l.n; i++) {
			struct interval *a = &l.v[i];

			if (a->start < covered) {
				ret = fix_overlap(img, e, idx, a, &l.v[i - 1],
						  res, fix_err);
				if (ret)
					goto out;
			} else {
				from = covered > meta_end ? covered : meta_end;
				if (a->start > from && !e->compressed &&
				    !is_free(e, from, a->start - from)) {
					gap = a->start - from;
					n = (gap + e->grain_sectors - 1) /
					    e->grain_sectors;
					res->leaks += n;
					img_check_note(res,
						       "extent %d: %" PRIu64
						       " sectors at %" PRIu64
						       " are leaked",
						       idx, gap, from);
					if ((fix & IMG_CHECK_FIX_LEAKS) &&
					    !release(e, from, gap))
						res->leaks_fixed += n;
				}
			}
			if (a->start + a->len > covered)
				covered = a->start + a->len;
		}
		from = covered > meta_end ? covered : meta_end;
		/* A tail nothing points to is a leak even when it is a
		 * hole: truncating it is always possible.  Repairs above may
		 * have appended after it: then it is punched instead. */
		if (file_sectors > from && !e->compressed &&
		    !(e->next_sector > file_sectors &&
		      is_free(e, from, file_sectors - from))) {
			bool appended = e->next_sector > file_sectors;

			gap = file_sectors - from;
			n = (gap + e->grain_sectors - 1) / e->grain_sectors;
			res->leaks += n;
			img_check_note(res,
				       "extent %d: %" PRIu64
				       " sectors at the end are leaked",
				       idx, gap);
			if ((fix & IMG_CHECK_FIX_LEAKS) && appended &&
			    !release(e, from, gap)) {
				res->leaks_fixed += n;
			} else if ((fix & IMG_CHECK_FIX_LEAKS) && !appended &&
				   !img_file_truncate(e->file,
						      from * VMDK_SECTOR)) {
				res->leaks_fixed += n;
				e->file_size = from * VMDK_SECTOR;
				e->next_sector = from;
			}
		}
	}
	if (fix) {
		add_missing_redundant(e);
		ret = vmdk_extent_flush(img, e);
		if (ret)
			goto out;
	}
	ret = 0;
out:
	free(l.v);
	free(rgt);
	free(grain);
	return ret;
}

int vmdk_check(struct img *img, struct img_check_result *res, unsigned fix)
{
	struct vmdk_state *s = img_state(img);
	bool clear_flag = false;
	int i, ret;

	for (i = 0; i < s->nextents; i++) {
		struct vmdk_extent *e = s->extents[i];

		if (e->type == VMDK_EXTENT_FLAT ||
		    e->type == VMDK_EXTENT_VMFS) {
			uint64_t need =
				(e->flat_offset + e->sectors) * VMDK_SECTOR;

			if (e->file_size < need && !e->file->is_block_device) {
				res->corruptions++;
				img_check_note(
					res,
					"extent %d (%s): file is %" PRIu64
					" bytes, the descriptor needs "
					"%" PRIu64,
					i, e->path, e->file_size, need);
				if ((fix & IMG_CHECK_FIX_ERRORS) &&
				    !img_file_truncate(e->file, need)) {
					e->file_size = need;
					res->corruptions_fixed++;
				}
			}
			res->image_end_offset += e->file_size;
			continue;
		}
		if (!e->sparse || e->cowd)
			continue;
		if (e->header.capacity < e->sectors) {
			res->corruptions++;
			img_check_note(
				res,
				"extent %d (%s): header capacity %" PRIu64
				" sectors, descriptor says %" PRIu64,
				i, e->path, e->header.capacity, e->sectors);
			if ((fix & IMG_CHECK_FIX_ERRORS) && !e->compressed) {
				ret = vmdk_sparse_grow(img, e, e->sectors);
				if (ret)
					return ret;
				res->corruptions_fixed++;
			}
		}
		ret = check_sparse(img, e, i, res, fix);
		if (ret)
			return ret;
		if (e->header.unclean_shutdown) {
			img_check_note(
				res,
				"extent %d: unclean-shutdown flag is set "
				"(not closed cleanly)",
				i);
			if (fix)
				clear_flag = true;
		}
		res->image_end_offset += e->file_size;
	}
	if (clear_flag) {
		for (i = 0; i < s->nextents; i++) {
			struct vmdk_extent *e = s->extents[i];

			if (!e->sparse || e->cowd || e->compressed ||
			    !e->header.unclean_shutdown)
				continue;
			e->header.unclean_shutdown = 0;
			ret = vmdk_sparse_write_header(img, e);
			if (!ret)
				ret = img_file_sync(e->file);
			if (ret)
				return ret;
		}
	}
	return 0;
}
