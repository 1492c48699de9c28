/* SPDX-License-Identifier: MIT */
/*
 * qcow2 refcounts and cluster allocation.
 *
 * When the image is writable (or being checked) every refcount is loaded
 * into refs[], one 64-bit count per host cluster; the refcount blocks on
 * disk are rewritten from it on commit.  New refcount blocks are placed
 * and the refcount table grown there, in a loop until every cluster with
 * a non-zero count (the new blocks included) is covered.
 *
 * Releases are deferred (qcow2_free_later): a cluster that the on-disk
 * L1/L2 tables may still reference keeps its count until the commit has
 * written the tables that no longer do, so it is never reused early and a
 * crash leaves at worst a leak.
 */
#include "qcow2_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int refs_reserve(struct img *img, struct qcow2_state *s, uint64_t n)
{
	uint64_t *r;
	uint64_t cap;

	if (n <= s->refs_cap) {
		if (n > s->nrefs)
			s->nrefs = n;
		return 0;
	}
	cap = s->refs_cap ? s->refs_cap : 1024;
	while (cap < n)
		cap *= 2;
	r = realloc(s->refs, cap * sizeof(*r));
	if (!r)
		return img_error(img, -ENOMEM,
				 "out of memory for %llu refcounts",
				 (unsigned long long)cap);
	memset(r + s->refs_cap, 0, (cap - s->refs_cap) * sizeof(*r));
	s->refs = r;
	s->refs_cap = cap;
	s->nrefs = n;
	return 0;
}

uint64_t qcow2_ref_get(const struct qcow2_state *s, uint64_t cluster)
{
	return cluster < s->nrefs ? s->refs[cluster] : 0;
}

int qcow2_ref_set(struct img *img, struct qcow2_state *s, uint64_t cluster,
		  uint64_t value)
{
	uint64_t block = cluster / s->refblock_entries;
	int ret;

	if (value > s->refcount_max)
		return img_error(img, -ERANGE,
				 "refcount of cluster %llu would exceed %llu",
				 (unsigned long long)cluster,
				 (unsigned long long)s->refcount_max);
	if (cluster >= s->nrefs) {
		if (!value)
			return 0;
		ret = refs_reserve(img, s, cluster + 1);
		if (ret < 0)
			return ret;
	}
	s->refs[cluster] = value;
	if (block < s->reftable_cap)
		s->refblock_dirty[block] = 1;
	if (!value && cluster < s->free_hint)
		s->free_hint = cluster;
	return 0;
}

int qcow2_alloc_clusters(struct img *img, struct qcow2_state *s, uint64_t n,
			 uint64_t *first)
{
	/* The header cluster always has a reference; start past it.  Runs
	 * of several clusters start where the last run ended, so that a
	 * field of one-cluster holes is not rescanned for each of them. */
	uint64_t c = s->free_hint < 1 ? 1 : s->free_hint, run = 0;
	bool skipped_free = false;
	int ret;

	if (n > 1 && s->free_hint_run > c) {
		c = s->free_hint_run;
		skipped_free = true;
	}
	while (run < n) {
		if (qcow2_ref_get(s, c + run)) {
			if (run)
				skipped_free = true;
			c += run + 1;
			run = 0;
			continue;
		}
		run++;
	}
	if (c + n > (UINT64_C(1) << (56 - s->cluster_bits)))
		return img_error(img, -ENOSPC,
				 "the image would grow past the largest "
				 "offset qcow2 can address");
	for (uint64_t i = 0; i < n; i++) {
		ret = qcow2_ref_set(img, s, c + i, 1);
		if (ret < 0)
			return ret;
	}
	if (!skipped_free)
		s->free_hint = c + n;
	if (n > 1)
		s->free_hint_run = c + n;
	if ((c + n) << s->cluster_bits > s->file_size)
		__atomic_store_n(&s->file_size, (c + n) << s->cluster_bits,
				 __ATOMIC_RELEASE);
	*first = c;
	return 0;
}

int qcow2_free_later(struct img *img, struct qcow2_state *s, uint64_t off,
		     uint64_t len)
{
	uint64_t first = off >> s->cluster_bits;
	uint64_t last = (off + len - 1) >> s->cluster_bits;

	if (!len)
		return 0;
	if (s->npending &&
	    s->pending[s->npending - 1].first +
			    s->pending[s->npending - 1].count ==
		    first &&
	    off % s->cluster_size == 0) {
		s->pending[s->npending - 1].count += last - first + 1;
		return 0;
	}
	if (s->npending == s->pending_cap) {
		size_t cap = s->pending_cap ? s->pending_cap * 2 : 64;
		struct qcow2_free_run *p =
			realloc(s->pending, cap * sizeof(*p));

		if (!p)
			return img_error(img, -ENOMEM, "out of memory");
		s->pending = p;
		s->pending_cap = cap;
	}
	s->pending[s->npending].first = first;
	s->pending[s->npending].count = last - first + 1;
	s->npending++;
	return 0;
}

int qcow2_refs_load(struct img *img, struct qcow2_state *s)
{
	bool checking = img_open_flags(img) & IMG_OPEN_CHECK;
	uint64_t bytes = (uint64_t)s->h.refcount_table_clusters
			 << s->cluster_bits;
	uint8_t *block = NULL;
	int ret;

	s->refcount_max =
		s->h.refcount_order == 6
			? UINT64_MAX
			: (UINT64_C(1) << (1u << s->h.refcount_order)) - 1;
	s->refblock_entries = ((uint64_t)s->cluster_size * 8) >>
			      s->h.refcount_order;
	s->reftable_cap = bytes / 8;
	s->reftable = malloc(bytes);
	s->refblock_dirty = calloc(s->reftable_cap, 1);
	block = malloc(s->cluster_size);
	if (!s->reftable || !s->refblock_dirty || !block) {
		ret = img_error(img, -ENOMEM,
				"out of memory for the refcount table");
		goto out;
	}
	ret = img_file_pread(&s->file, s->reftable, bytes,
			     s->h.refcount_table_offset);
	if (ret < 0) {
		img_error(img, ret, "cannot read the refcount table: %s",
			  strerror(-ret));
		goto out;
	}
	ret = refs_reserve(img, s,
			   (s->file_size + s->cluster_size - 1) >>
				   s->cluster_bits);
	if (ret < 0)
		goto out;
	for (uint64_t i = 0; i < s->reftable_cap; i++) {
		uint64_t e = IMG_BE64(s->reftable[i]);
		uint64_t off = e & QCOW2_REFT_OFFSET_MASK;

		s->reftable[i] = e;
		if (!e)
			continue;
		if ((e & QCOW2_REFT_RESERVED) || off % s->cluster_size ||
		    off + s->cluster_size > s->file_size) {
			if (checking)
				continue; /* reported by check */
			ret = img_error(img, -EINVAL,
					"refcount table entry %llu points %s",
					(unsigned long long)i,
					off + s->cluster_size > s->file_size
						? "past the end of the file"
						: "at an unaligned offset");
			goto out;
		}
		ret = img_file_pread(&s->file, block, s->cluster_size, off);
		if (ret < 0) {
			img_error(img, ret,
				  "cannot read refcount block %llu: %s",
				  (unsigned long long)i, strerror(-ret));
			goto out;
		}
		for (uint64_t j = 0; j < s->refblock_entries; j++) {
			uint64_t v = qcow2_refblock_get(block,
							s->h.refcount_order, j);
			uint64_t c = i * s->refblock_entries + j;

			if (!v)
				continue;
			/* Counts for clusters past the end of the file are
			 * leaks (check reports them); not kept, so that a
			 * hostile block cannot make us allocate for them. */
			if (c >= s->nrefs) {
				s->refs_past_eof++;
				s->refblock_dirty[i] = 1;
				continue;
			}
			s->refs[c] = v;
		}
	}
	s->free_hint = 1;
	s->refs_loaded = true;
	ret = 0;
out:
	free(block);
	return ret;
}

void qcow2_refs_free(struct qcow2_state *s)
{
	free(s->refs);
	free(s->reftable);
	free(s->refblock_dirty);
	free(s->pending);
	s->refs = s->reftable = NULL;
	s->refblock_dirty = NULL;
	s->pending = NULL;
	s->refs_loaded = false;
}

static uint64_t refs_used(const struct qcow2_state *s)
{
	uint64_t n = s->nrefs;

	while (n && !s->refs[n - 1])
		n--;
	return n;
}

static bool block_has_refs(const struct qcow2_state *s, uint64_t block)
{
	uint64_t a = block * s->refblock_entries;
	uint64_t b = a + s->refblock_entries;

	if (b > s->nrefs)
		b = s->nrefs;
	for (uint64_t c = a; c < b; c++)
		if (s->refs[c])
			return true;
	return false;
}

/* Grow the table to hold at least need entries: a new, larger table in
 * fresh clusters, switched to by the header on commit. */
static int reftable_grow(struct img *img, struct qcow2_state *s, uint64_t need)
{
	uint64_t entries = need + need / 2 + 1;
	uint64_t clusters = (entries * 8 + s->cluster_size - 1) >>
			    s->cluster_bits;
	uint64_t first, *table;
	uint8_t *dirty;
	int ret;

	if (clusters << s->cluster_bits > QCOW2_MAX_REFTABLE_BYTES * 4)
		return img_error(img, -EFBIG,
				 "the refcount table would "
				 "grow too large");
	ret = qcow2_alloc_clusters(img, s, clusters, &first);
	if (ret < 0)
		return ret;
	entries = (clusters << s->cluster_bits) / 8;
	table = calloc(entries, 8);
	dirty = calloc(entries, 1);
	if (!table || !dirty) {
		free(table);
		free(dirty);
		return img_error(img, -ENOMEM, "out of memory");
	}
	memcpy(table, s->reftable, s->reftable_cap * 8);
	memcpy(dirty, s->refblock_dirty, s->reftable_cap);
	if (s->reftable_moved) {
		/* An earlier new table of this commit was never written. */
		for (uint32_t i = 0; i < s->h.refcount_table_clusters; i++) {
			ret = qcow2_ref_set(img, s,
					    (s->h.refcount_table_offset >>
					     s->cluster_bits) +
						    i,
					    0);
			if (ret < 0) {
				free(table);
				free(dirty);
				return ret;
			}
		}
	} else {
		s->old_reftable_offset = s->h.refcount_table_offset;
		s->old_reftable_clusters = s->h.refcount_table_clusters;
	}
	free(s->reftable);
	free(s->refblock_dirty);
	s->reftable = table;
	s->refblock_dirty = dirty;
	s->reftable_cap = entries;
	s->h.refcount_table_offset = first << s->cluster_bits;
	s->h.refcount_table_clusters = (uint32_t)clusters;
	s->reftable_moved = true;
	s->reftable_dirty = true;
	/* Blocks past the old table were not flagged: flag them now. */
	for (uint64_t b = 0; b < entries; b++)
		if (!s->reftable[b] && block_has_refs(s, b))
			s->refblock_dirty[b] = 1;
	return 0;
}

static int refblock_write(struct img *img, struct qcow2_state *s,
			  uint64_t block, uint8_t *buf)
{
	uint64_t a = block * s->refblock_entries;
	int ret;

	memset(buf, 0, s->cluster_size);
	for (uint64_t j = 0; j < s->refblock_entries && a + j < s->nrefs; j++)
		if (s->refs[a + j])
			qcow2_refblock_set(buf, s->h.refcount_order, j,
					   s->refs[a + j]);
	ret = img_file_pwrite(&s->file, buf, s->cluster_size,
			      s->reftable[block] & QCOW2_REFT_OFFSET_MASK);
	if (ret < 0)
		return img_error(img, ret, "cannot write refcount block: %s",
				 strerror(-ret));
	return 0;
}

/* The refcount blocks changed since they were last written (buf: one
 * cluster of room). */
static int refblocks_write_dirty(struct img *img, struct qcow2_state *s,
				 uint8_t *buf)
{
	for (uint64_t b = 0; b < s->reftable_cap; b++) {
		if (!s->refblock_dirty[b])
			continue;
		if (s->reftable[b]) {
			int ret = refblock_write(img, s, b, buf);

			if (ret < 0)
				return ret;
		}
		s->refblock_dirty[b] = 0;
	}
	return 0;
}

static int reftable_write(struct img *img, struct qcow2_state *s)
{
	uint64_t bytes = s->reftable_cap * 8;
	uint64_t *buf = malloc(bytes);
	int ret;

	if (!buf)
		return img_error(img, -ENOMEM, "out of memory");
	for (uint64_t i = 0; i < s->reftable_cap; i++)
		buf[i] = IMG_BE64(s->reftable[i]);
	ret = img_file_pwrite(&s->file, buf, bytes, s->h.refcount_table_offset);
	free(buf);
	if (ret < 0)
		return img_error(img, ret,
				 "cannot write the refcount table: %s",
				 strerror(-ret));
	return 0;
}

int qcow2_refs_commit(struct img *img, struct qcow2_state *s)
{
	uint8_t *buf;
	bool changed;
	int ret;

	if (!s->refs_loaded)
		return 0;
	/* Place every missing block (each new block needs a count itself,
	 * which may need a block or a bigger table: repeat until stable). */
	do {
		uint64_t need = (refs_used(s) + s->refblock_entries - 1) /
				s->refblock_entries;

		changed = false;
		if (need > s->reftable_cap) {
			ret = reftable_grow(img, s, need);
			if (ret < 0)
				return ret;
			changed = true;
			continue;
		}
		for (uint64_t b = 0; b < need; b++) {
			uint64_t c;

			if (s->reftable[b] || !block_has_refs(s, b))
				continue;
			ret = qcow2_alloc_clusters(img, s, 1, &c);
			if (ret < 0)
				return ret;
			s->reftable[b] = c << s->cluster_bits;
			s->refblock_dirty[b] = 1;
			s->reftable_dirty = true;
			changed = true;
		}
	} while (changed);

	buf = malloc(s->cluster_size);
	if (!buf)
		return img_error(img, -ENOMEM, "out of memory");
	ret = refblocks_write_dirty(img, s, buf);
	if (ret < 0)
		goto out;
	if (s->reftable_moved) {
		ret = reftable_write(img, s);
		if (ret < 0)
			goto out;
		ret = qcow2_sync(img, s);
		if (ret < 0)
			goto out;
		/* The header switches to the new table, only then is the
		 * old one released. */
		ret = qcow2_header_write(img, s);
		if (ret < 0)
			goto out;
		ret = qcow2_sync(img, s);
		if (ret < 0)
			goto out;
		s->reftable_moved = false;
		s->reftable_dirty = false;
		for (uint32_t i = 0; i < s->old_reftable_clusters; i++) {
			ret = qcow2_ref_set(
				img, s,
				(s->old_reftable_offset >> s->cluster_bits) + i,
				0);
			if (ret < 0)
				goto out;
		}
		ret = refblocks_write_dirty(img, s, buf);
		if (ret < 0)
			goto out;
	} else if (s->reftable_dirty) {
		ret = reftable_write(img, s);
		if (ret < 0)
			goto out;
		s->reftable_dirty = false;
	}
	ret = 0;
out:
	free(buf);
	return ret;
}

int qcow2_refs_apply_pending(struct img *img, struct qcow2_state *s)
{
	int ret;

	for (size_t i = 0; i < s->npending; i++) {
		const struct qcow2_free_run *r = &s->pending[i];

		for (uint64_t c = r->first; c < r->first + r->count; c++) {
			uint64_t v = qcow2_ref_get(s, c);

			/* A count already at zero is an inconsistency check
			 * reports; never wrap it. */
			if (!v)
				continue;
			ret = qcow2_ref_set(img, s, c, v - 1);
			if (ret < 0)
				return ret;
		}
	}
	s->npending = 0;
	/* The room left in the compressed area lies in the host cluster of
	 * the last compressed cluster stored; once none of those is
	 * referenced, that cluster is free for any allocation, so the next
	 * compressed cluster starts a new area rather than write into it. */
	if (s->cpos < s->cend && (s->cpos & (s->cluster_size - 1)) &&
	    !qcow2_ref_get(s, s->cpos >> s->cluster_bits)) {
		s->cpos = s->cend = 0;
		s->clast = UINT64_MAX;
	}
	return qcow2_refs_commit(img, s);
}

bool qcow2_refs_dirty(const struct qcow2_state *s)
{
	if (!s->refs_loaded)
		return false;
	if (s->reftable_dirty || s->reftable_moved)
		return true;
	for (uint64_t b = 0; b < s->reftable_cap; b++)
		if (s->refblock_dirty[b])
			return true;
	/* Counts past the table's reach need a block (and table growth). */
	return (refs_used(s) + s->refblock_entries - 1) / s->refblock_entries >
	       s->reftable_cap;
}
